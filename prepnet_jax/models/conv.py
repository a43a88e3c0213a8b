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

Transposed convolutions (`ConvTranspose`: DCGAN's generator, the VAE decoder, the U-Net's
'transpose' mode; StyleGAN2's up-sampling convolutions) convolve a zero-inserted input, which the
library does slowly; `subpixel_conv` computes one small convolution per output phase on the
original input instead (s² fewer products, all of them zero ones): DCGAN's G + D step 147 -> 72 ms.

Elsewhere — stride-1 3x3 convolutions on 3x3 and larger outputs, strided convolutions with few
channels (DCGAN's discriminator) — the library convolution is as fast or faster and saves 9x less
for the backward pass, so it stays. The rewrites reorder exact arithmetic (the same non-zero
products summed in another order): values and gradients agree with flax's `nn.Conv` /
`nn.ConvTranspose` to float32 rounding (tests/test_conv.py). They apply on the CPU backend only;
GPUs and TPUs get the library convolution (cuDNN and the TPU compiler have no such cases), and
what they do not cover (kernel dilation, groups, other layouts) falls through to the library call.
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


def subpixel_conv(x, w, dilation: Sequence[int], pads: Sequence[tuple[int, int]], route,
                  preferred_element_type=None):
  """A stride-1 convolution of the zero-inserted input (`lhs_dilation`, i.e. a transposed
  convolution) as one small convolution per output phase, interleaved: output row o = m*s + r only
  meets the kernel taps k with (r + k - pad_lo) % s == 0, which see input row m + (r + k - pad_lo)/s.
  The same products without the zero ones (s² fewer); `route(x, w_r, pads_r)` convolves a phase."""
  n = x.shape[0]
  cout = w.shape[-1]
  out = [x.shape[1 + a] + (x.shape[1 + a] - 1) * (dilation[a] - 1) + sum(pads[a]) - w.shape[a] + 1 for a in (0, 1)]
  cells = [-(-out[a] // dilation[a]) for a in (0, 1)]  # rows per phase, rounded up
  def phase_plan(a, r):
    s, lo, k = dilation[a], pads[a][0], w.shape[a]
    taps = [t for t in range(k) if (r + t - lo) % s == 0]
    rows = max(0, -(-(out[a] - r) // s))
    if not taps or not rows:
      return None
    first = (r + taps[0] - lo) // s
    pad_lo = -first
    pad_hi = rows - 1 + len(taps) - x.shape[1 + a] - pad_lo
    return slice(taps[0], None, s), (pad_lo, pad_hi), rows
  phases = []
  for rh in range(dilation[0]):
    row = []
    for rw in range(dilation[1]):
      plan_h, plan_w = phase_plan(0, rh), phase_plan(1, rw)
      y = jnp.zeros((n, cells[0], cells[1], cout), preferred_element_type or x.dtype)
      if plan_h and plan_w:
        part = route(x, w[plan_h[0], plan_w[0]], (plan_h[1], plan_w[1]))
        y = y.astype(part.dtype).at[:, :plan_h[2], :plan_w[2]].set(part)
      row.append(y)
    phases.append(jnp.stack(row, axis=3))          # (n, H', W', s_w, c)
  y = jnp.stack(phases, axis=2)                     # (n, H', s_h, W', s_w, c)
  y = y.reshape(n, cells[0] * dilation[0], cells[1] * dilation[1], cout)
  return y[:, :out[0], :out[1]]


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
                         precision=None, preferred_element_type=None):
  """Drop-in for `lax.conv_general_dilated` (the signature `nn.Conv` calls) that routes XLA:CPU's
  slow shapes through `patches_conv`, input-dilated (transposed) convolutions through
  `subpixel_conv`, and everything else to the library."""
  library = lambda: lax.conv_general_dilated(  # noqa: E731
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type)
  input_dilation = tuple(lhs_dilation or (1, 1))
  if (lhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1 or jax.default_backend() != "cpu"
      or any(d != 1 for d in (rhs_dilation or (1, 1)))
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)):
    return library()
  strides = tuple(window_strides)
  if input_dilation != (1, 1):
    if strides != (1, 1) or isinstance(padding, str):  # what lax.conv_transpose never emits
      return library()
    route = lambda x, w, pads: conv_general_dilated(  # noqa: E731
        x, w, (1, 1), pads, dimension_numbers=_NHWC, precision=precision,
        preferred_element_type=preferred_element_type)
    return subpixel_conv(lhs, rhs, input_dilation, [tuple(p) for p in padding], route, preferred_element_type)
  if isinstance(padding, str):
    pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  else:
    pads = [tuple(p) for p in padding]
  if any(p < 0 for pair in pads for p in pair):
    # Negative padding crops. XLA:CPU's convolution returns garbage for some negative paddings
    # (jaxlib 0.10.2: 3x3 input, 2x2 kernel, padding ((0, 0), (-1, 1))), so crop explicitly
    # (`library` reads lhs and padding when it is called: it gets the cropped ones too).
    start = [max(0, -lo) for lo, _ in pads]
    stop = [lhs.shape[1 + a] - max(0, -pads[a][1]) for a in (0, 1)]
    lhs = lax.slice(lhs, (0, start[0], start[1], 0), (lhs.shape[0], stop[0], stop[1], lhs.shape[3]))
    pads = [(max(0, lo), max(0, hi)) for lo, hi in pads]
    padding = pads
  out_hw = [(lhs.shape[1 + a] + sum(pads[a]) - rhs.shape[a]) // strides[a] + 1 for a in (0, 1)]
  if not uses_patches(rhs.shape[:2], rhs.shape[2], strides, out_hw):
    return library()
  return patches_conv(lhs, rhs, strides, pads, precision, preferred_element_type)


def conv_transpose(x, kernel, strides, padding, precision=None, preferred_element_type=None):
  """`lax.conv_transpose` (no kernel flip, NHWC/HWIO) computed by `conv_general_dilated`."""
  if isinstance(padding, str):  # lax.conv_transpose's padding of the zero-inserted input
    pads = []
    for k, s in zip(kernel.shape[:2], strides):
      if padding == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else -(-total // 2)
      else:
        total, lo = k + s - 2 + max(k - s, 0), k - 1
      pads.append((lo, total - lo))
  else:
    pads = [tuple(p) for p in padding]
  return conv_general_dilated(x, kernel, (1, 1), pads, lhs_dilation=tuple(strides), dimension_numbers=_NHWC,
                              precision=precision, preferred_element_type=preferred_element_type)


class Conv(nn.Conv):
  """`nn.Conv` (same parameters, same names, same results) computed by `conv_general_dilated`."""
  conv_general_dilated: Callable[..., Any] | None = conv_general_dilated


class ConvTranspose(nn.ConvTranspose):
  """`nn.ConvTranspose` (same parameters and results) computed by `conv_transpose` for the 2-D
  case the models use (one batch axis, SAME/VALID/explicit padding, no mask, dilation or kernel
  transposition); anything else is flax's own call."""

  @nn.compact
  def __call__(self, inputs):
    kernel_size = (self.kernel_size,) * 2 if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
    strides = (1, 1) if self.strides is None else (
        (self.strides,) * 2 if isinstance(self.strides, int) else tuple(self.strides))
    dilation = self.kernel_dilation
    if (inputs.ndim != 4 or len(kernel_size) != 2 or self.mask is not None or self.transpose_kernel
        or self.padding == "CIRCULAR" or dilation not in (None, 1, (1, 1))):
      return super().__call__(inputs)
    kernel = self.param("kernel", self.kernel_init, kernel_size + (inputs.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
    inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
    padding = self.padding if isinstance(self.padding, str) else nn.linear.canonicalize_padding(self.padding, 2)
    y = conv_transpose(inputs, kernel, strides, padding, self.precision, self.preferred_element_type)
    return y if bias is None else y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
