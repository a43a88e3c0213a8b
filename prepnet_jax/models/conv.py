"""The convolution every model uses: `nn.Conv` with XLA:CPU's slow cases computed as patches x matrix.

XLA's CPU convolution (Eigen's spatial convolution) has shapes where it is far slower than the
same arithmetic written as im2col + one matrix product. Measured on 2 cores, forward + both
gradients (`benchmarks/bench_conv.py`; library vs patches, ms):

- outputs of 2x2 or smaller with many channels: 3x3, 512 -> 512 at 2x2, batch 32 (ResNet18's last
  stage at 64 px): 262 vs 5 — the pathology that made ResNet18 at 64 px 10x slower than PyTorch;
  256 channels 97 vs 7; 128 channels 24 vs 1. At 3x3 and 4x4 outputs both are about equal;
- 1x1 convolutions (ResNet50's bottlenecks, projection shortcuts, COVID-Net's PEPX): a 1x1 conv is a
  matrix product of the (strided) input: 56², 64 -> 256, batch 16: 467 vs 103;
- first layers (3 input channels, so the patch matrix is small): 224², 3 -> 64: 534 vs 276;
- strided convolutions with 64+ input channels (the first conv of a ResNet stage): the library's
  kernel gradient is the slow part: 56², 64 -> 128, stride 2: 69 vs 45.

Elsewhere — stride-1 3x3 convolutions on 3x3 and larger outputs, strided convolutions with few
channels (DCGAN's discriminator) — the library convolution is as fast or faster and saves 9x less
for the backward pass, so it stays. The rewrite reorders exact arithmetic (the same products summed
in another order): values and gradients agree with `lax.conv_general_dilated` to float32 rounding
(tests/test_conv.py). It applies on the CPU backend only; GPUs and TPUs get the library
convolution (cuDNN and the TPU compiler have no such cases), and what it does not cover
(dilation, groups, transposed convolutions, other layouts) falls through to the library call.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Output positions (H_out * W_out) at or below which patches x matrix wins for any channel count.
TINY_OUTPUT_POSITIONS = 4
# Input channels at or below which the patch matrix is small enough to win (RGB / grey inputs).
FEW_INPUT_CHANNELS = 4
# Input channels from which a strided convolution's library kernel gradient loses.
STRIDED_MIN_CHANNELS = 64
_NHWC = ("NHWC", "HWIO", "NHWC")


def uses_patches(kernel_hw, in_channels: int, strides, out_hw) -> bool:
  """The routing rule (measured by benchmarks/bench_conv.py): True where patches x matrix wins."""
  if jax.default_backend() != "cpu":
    return False
  if tuple(kernel_hw) == (1, 1) or in_channels <= FEW_INPUT_CHANNELS:
    return True
  if out_hw[0] * out_hw[1] <= TINY_OUTPUT_POSITIONS:
    return True
  return any(s > 1 for s in strides) and in_channels >= STRIDED_MIN_CHANNELS


def patches_conv(x, w, strides: Sequence[int], pads: Sequence[tuple[int, int]], precision=None,
                 preferred_element_type=None):
  """NHWC x HWIO convolution as (N*Ho*Wo, kh*kw*Cin) patches times the (kh*kw*Cin, Cout) kernel."""
  kh, kw, cin, cout = w.shape
  sh, sw = strides
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  n, h, wd, _ = x.shape
  ho, wo = (h - kh) // sh + 1, (wd - kw) // sw + 1
  # Channels innermost, then kernel column, then kernel row: the order of w.reshape(-1, Cout) (HWIO).
  cols = [lax.slice(x, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, cin), (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  y = jnp.dot(patches.reshape(n * ho * wo, kh * kw * cin), w.reshape(kh * kw * cin, cout),
              precision=precision, preferred_element_type=preferred_element_type)
  return y.reshape(n, ho, wo, cout)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
  """Drop-in for `lax.conv_general_dilated` (the signature `nn.Conv` calls) that routes XLA:CPU's
  slow shapes through `patches_conv` and everything else to the library."""
  library = lambda: lax.conv_general_dilated(  # noqa: E731
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type)
  if (lhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1
      or any(d != 1 for d in (lhs_dilation or (1, 1))) or any(d != 1 for d in (rhs_dilation or (1, 1)))
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)):
    return library()
  strides = tuple(window_strides)
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  else:
    pads = [tuple(p) for p in padding]
  out_hw = [(lhs.shape[1 + a] + sum(pads[a]) - rhs.shape[a]) // strides[a] + 1 for a in (0, 1)]
  if not uses_patches(rhs.shape[:2], rhs.shape[2], strides, out_hw):
    return library()
  return patches_conv(lhs, rhs, strides, pads, precision, preferred_element_type)


class Conv(nn.Conv):
  """`nn.Conv` (same parameters, same names, same results) computed by `conv_general_dilated`."""
  conv_general_dilated: Callable[..., Any] | None = conv_general_dilated
