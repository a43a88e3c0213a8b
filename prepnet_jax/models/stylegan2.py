"""StyleGAN2 (config F) in pure JAX/Flax: mapping, skip generator, residual discriminator.

Follows NVlabs/stylegan2-ada-pytorch `training/networks.py` layer for layer, in NHWC and
float32 or bfloat16 (never float16, so no fp16 pre-normalisation or conv clamping), with no
custom kernels: the [1, 3, 3, 1] resampling filter (`upfirdn2d`) is a depthwise convolution.
Every layer uses the equalised learning rate (weights drawn N(0, 1) and scaled by 1/sqrt(fan_in)
at run time), so one Adam learning rate suits every layer and the mapping network's 0.01
multiplier is a parameter scaling, not a second optimizer.

Variables: 'params' (trained) and 'buffers' (the tracked average w and the fixed per-layer noise
used by `noise_mode='const'`); the EMA generator copies buffers instead of averaging them.

Precision (`dtype`, bfloat16 under `config.half_precision`): parameters and buffers are float32.
float32 always: the mapping network (z → w, w_avg, truncation), every style affine, the
modulation and demodulation arithmetic — styles s, the coefficients d = rsqrt(Σ (w·s)² + 1e-8)
from the float32 weights at HIGHEST matmul precision, and the products x·s and y·d, cast to
bfloat16 only after (the non-fused form of convolving with the modulated weights w·s·d) — the
noise draws, the skip image accumulated from the ToRGB outputs (so G's output is float32),
minibatch-stddev's statistics and D's output layer (its logits are float32). `dtype`: the
synthesis and discriminator convolutions, their activations, biases and the resampling filter.
bfloat16 has float32's exponent range, so large styles cannot overflow as in float16.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prepnet_jax.models import conv

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
RESAMPLE_FILTER = (1.0, 3.0, 3.0, 1.0)
NOISE_MODES = ("random", "const", "none")
_CONV_DIMS = ("NHWC", "HWIO", "NHWC")


def check_resolution(resolution: int) -> int:
  """log2(resolution); StyleGAN2 builds one block per power of two from 4 up."""
  log2 = int(round(math.log2(resolution))) if resolution > 0 else 0
  if resolution < 8 or 2**log2 != resolution:
    raise ValueError(f"StyleGAN2 resolution must be a power of two >= 8 (32..1024 intended), "
                     f"got {resolution}")
  return log2


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
  """Feature maps at one resolution: min(channel_base // res, channel_max), as in the paper."""
  return max(1, min(channel_base // resolution, channel_max))


def bias_act(x, bias, activation: str, gain: float = 1.0):
  """Bias then activation; 'lrelu' carries the sqrt(2) gain that keeps unit variance."""
  if bias is not None:
    x = x + bias.astype(x.dtype)
  if activation == "lrelu":
    return nn.leaky_relu(x, LRELU_SLOPE) * (LRELU_GAIN * gain)
  if activation == "linear":
    return x * gain if gain != 1.0 else x
  raise ValueError(f"unknown activation {activation!r}; expected 'lrelu' or 'linear'")


def upfirdn2d(x, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0), gain: float = 1.0):
  """Zero-insertion upsampling, padding, [1,3,3,1] FIR filter, then decimation (NHWC).

  Same semantics as stylegan2-ada's `upfirdn2d` (the upsampled signal has H*up samples, then
  `pad` zeros are added on each side). Written as one `lax.pad` (interior padding inserts the
  zeros) and separable shifted sums: XLA's depthwise convolution is slow on CPU.
  """
  taps = np.asarray(RESAMPLE_FILTER, np.float64)
  taps = taps / taps.sum() * math.sqrt(gain)
  before, after = pad
  edge = (before, after + up - 1, up - 1)
  x = jax.lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), edge, edge, (0, 0, 0)))
  for axis in (1, 2):
    length = x.shape[axis] - len(taps) + 1
    x = sum(float(t) * jax.lax.slice_in_dim(x, k, k + length, axis=axis) for k, t in enumerate(taps))
    if down > 1:
      x = jax.lax.slice_in_dim(x, 0, length, down, axis=axis)
  return x


def upsample2d(x):
  """2x upsampling with the resampling filter (gain 4 keeps the mean)."""
  return upfirdn2d(x, up=2, pad=(2, 1), gain=4.0)


def _conv(x, weight, stride: int = 1, padding=((0, 0), (0, 0)), lhs_dilation=(1, 1)):
  return conv.conv_general_dilated(x, weight, (stride, stride), padding, lhs_dilation=lhs_dilation,
                                   dimension_numbers=_CONV_DIMS)


def conv2d_resample(x, weight, up: int = 1, down: int = 1):
  """Convolution with an odd k×k kernel at 'same' padding, optionally 2x up or down.

  Equal to the reference's generic definition (up: filtered zero-insertion, then a valid
  convolution; down: filter, convolution, decimation) computed like its fast paths: up as a
  stride-2 transposed convolution followed by the filter, down as filter then strided
  convolution (1×1 kernels decimate first).
  """
  k = weight.shape[0]
  p = k // 2
  if up == 2:
    x = _conv(x, weight, padding=((k - 1, k - 1),) * 2, lhs_dilation=(2, 2))
    return upfirdn2d(x, pad=(p + 3 - k, p + 3 - k), gain=4.0)
  if down == 2:
    if k == 1:
      return _conv(upfirdn2d(x, down=2, pad=(1, 1)), weight)
    return _conv(upfirdn2d(x, pad=(p + 1, p + 1)), weight, stride=2)
  if up != 1 or down != 1:
    raise ValueError(f"conv2d_resample supports up=2 or down=2 only, got up={up}, down={down}")
  return _conv(x, weight, padding=((p, p), (p, p)))


def demodulation_coefficients(weight, styles, eps: float = 1e-8):
  """d (N, O) = rsqrt(Σ_{kh,kw,i} (w·s)² + eps) in float32 whatever the compute dtype.

  HIGHEST precision keeps the sum a true float32 one on TPUs and TF32 GPUs (their default rounds
  matmul inputs to bfloat16/TF32); it is a tiny (N, I) x (I, O) product.
  """
  weight_sq = jnp.sum(jnp.square(weight.astype(jnp.float32)), axis=(0, 1))  # (I, O)
  return jax.lax.rsqrt(jnp.matmul(jnp.square(styles.astype(jnp.float32)), weight_sq,
                                  precision=jax.lax.Precision.HIGHEST) + eps)


def modulated_conv2d(x, weight, styles, up: int = 1, demodulate: bool = True):
  """Per-sample modulated (and demodulated) convolution, x (N,H,W,I), weight (k,k,I,O), styles (N,I).

  Computed as scale-input → shared convolution → scale-output, which equals convolving each
  sample with its own weight w'·s / ||w'·s|| (the "non-fused" path stylegan2-ada trains with).
  The scalings run in float32 and round once to x's dtype; the convolution runs in x's dtype.
  """
  dtype = x.dtype
  x = (x.astype(jnp.float32) * styles.astype(jnp.float32)[:, None, None, :]).astype(dtype)
  x = conv2d_resample(x, weight.astype(dtype), up=up)
  if demodulate:
    dcoefs = demodulation_coefficients(weight, styles)
    x = (x.astype(jnp.float32) * dcoefs[:, None, None, :]).astype(dtype)
  return x


def normalize_2nd_moment(x, eps: float = 1e-8):
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps)


def minibatch_stddev(x, group_size: int, num_channels: int = 1):
  """Appends the std over groups of samples (sample i is in group i mod N/G) as extra maps."""
  n, h, w, c = x.shape
  g = min(group_size, n) if group_size else n
  if n % g or c % num_channels:
    raise ValueError(f"minibatch-stddev: batch {n} must be divisible by group size {g} and "
                     f"channels {c} by mbstd_num_channels {num_channels}")
  y = x.astype(jnp.float32).reshape(g, n // g, h, w, num_channels, c // num_channels)
  y = y - jnp.mean(y, axis=0)
  y = jnp.sqrt(jnp.mean(jnp.square(y), axis=0) + 1e-8)
  y = jnp.mean(y, axis=(1, 2, 4))  # (n // g, num_channels)
  y = jnp.tile(y, (g, 1))[:, None, None, :]
  return jnp.concatenate([x, jnp.broadcast_to(y, (n, h, w, num_channels)).astype(x.dtype)], axis=-1)


def _unit_normal(key, shape, dtype=jnp.float32):
  return jax.random.normal(key, shape, dtype)


class EqualDense(nn.Module):
  """Fully connected layer with equalised learning rate and an lr multiplier."""
  features: int
  activation: str = "linear"
  lr_multiplier: float = 1.0
  bias_init: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    kernel = self.param("kernel", lambda k, s: _unit_normal(k, s) / self.lr_multiplier,
                        (fan_in, self.features))
    bias = self.param("bias", lambda k, s: jnp.full(s, self.bias_init, jnp.float32), (self.features,))
    x = x.astype(self.dtype) @ (kernel * (self.lr_multiplier / math.sqrt(fan_in))).astype(self.dtype)
    return bias_act(x, bias * self.lr_multiplier, self.activation)


class EqualConv(nn.Module):
  """Convolution with equalised learning rate, optional 2x filtered downsampling."""
  features: int
  kernel_size: int
  activation: str = "linear"
  use_bias: bool = True
  down: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, gain: float = 1.0):
    fan_in = x.shape[-1] * self.kernel_size**2
    kernel = self.param("kernel", _unit_normal,
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
    x = conv2d_resample(x.astype(self.dtype), (kernel * (1.0 / math.sqrt(fan_in))).astype(self.dtype),
                        down=self.down)
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    return bias_act(x, bias, self.activation, gain)


class MappingNetwork(nn.Module):
  """z (and/or a label embedding) → w through an MLP with lr multiplier; tracks the mean w.

  `num_ws` > 0 broadcasts w to (N, num_ws, w_dim); `w_avg_beta=None` (the discriminator's
  label mapping) tracks nothing. Truncation: w ← w_avg + ψ (w − w_avg).
  """
  z_dim: int
  c_dim: int
  w_dim: int
  num_ws: int | None
  num_layers: int = 8
  lr_multiplier: float = 0.01
  w_avg_beta: float | None = 0.995

  @nn.compact
  def __call__(self, z, c=None, truncation_psi: float = 1.0, update_w_avg: bool = False):
    parts = []
    if self.z_dim:
      parts.append(normalize_2nd_moment(z.astype(jnp.float32)))
    if self.c_dim:
      if c is None:
        raise ValueError(f"this network is conditional (c_dim={self.c_dim}): pass one-hot labels c")
      parts.append(normalize_2nd_moment(EqualDense(self.w_dim, name="embed")(c.astype(jnp.float32))))
    x = jnp.concatenate(parts, axis=-1)
    for i in range(self.num_layers):
      x = EqualDense(self.w_dim, "lrelu", self.lr_multiplier, name=f"fc{i}")(x)
    if self.w_avg_beta is not None:
      w_avg = self.variable("buffers", "w_avg", jnp.zeros, (self.w_dim,), jnp.float32)
      if update_w_avg:
        batch_mean = jnp.mean(jax.lax.stop_gradient(x), axis=0)
        w_avg.value = batch_mean + (w_avg.value - batch_mean) * self.w_avg_beta
    if self.num_ws:
      x = jnp.broadcast_to(x[:, None, :], (x.shape[0], self.num_ws, self.w_dim))
    if truncation_psi != 1.0:
      if self.w_avg_beta is None:
        raise ValueError("truncation needs a tracked w_avg (w_avg_beta is None)")
      x = w_avg.value + (x - w_avg.value) * truncation_psi
    return x


class SynthesisLayer(nn.Module):
  """Modulated 3×3 conv (optionally 2x up), per-pixel noise with learned strength, bias, lrelu."""
  features: int
  resolution: int
  up: int = 1

  @nn.compact
  def __call__(self, x, w, noise_mode: str = "random"):
    in_channels = x.shape[-1]
    styles = EqualDense(in_channels, bias_init=1.0, name="affine")(w)
    kernel = self.param("kernel", _unit_normal, (3, 3, in_channels, self.features))
    x = modulated_conv2d(x, kernel, styles, up=self.up, demodulate=True)
    noise_const = self.variable("buffers", "noise_const", lambda: jax.random.normal(
        self.make_rng("params"), (self.resolution, self.resolution, 1)))
    strength = self.param("noise_strength", nn.initializers.zeros, ())
    if noise_mode == "random":
      x = x + (jax.random.normal(self.make_rng("noise"), x.shape[:3] + (1,)) * strength).astype(x.dtype)
    elif noise_mode == "const":
      x = x + (noise_const.value * strength).astype(x.dtype)
    elif noise_mode != "none":
      raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return bias_act(x, bias, "lrelu")


class ToRGB(nn.Module):
  """Modulated 1×1 conv to image channels, without demodulation."""
  channels: int

  @nn.compact
  def __call__(self, x, w):
    in_channels = x.shape[-1]
    styles = EqualDense(in_channels, bias_init=1.0, name="affine")(w) * (1.0 / math.sqrt(in_channels))
    kernel = self.param("kernel", _unit_normal, (1, 1, in_channels, self.channels))
    x = modulated_conv2d(x, kernel, styles, demodulate=False)
    return x.astype(jnp.float32) + self.param("bias", nn.initializers.zeros, (self.channels,))


class SynthesisBlock(nn.Module):
  """One resolution of the skip generator: (const | up-conv), conv, ToRGB added to the image."""
  features: int
  resolution: int
  img_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, img, ws, noise_mode: str = "random"):
    """ws: (N, 3, w_dim) for upsampling blocks, (N, 2, w_dim) for the 4×4 block."""
    w_iter = iter(range(ws.shape[1]))
    if x is None:
      const = self.param("const", _unit_normal, (4, 4, self.features))
      x = jnp.broadcast_to(const.astype(self.dtype), (ws.shape[0],) + const.shape)
    else:
      x = SynthesisLayer(self.features, self.resolution, up=2, name="conv0")(x, ws[:, next(w_iter)], noise_mode)
    x = SynthesisLayer(self.features, self.resolution, name="conv1")(x, ws[:, next(w_iter)], noise_mode)
    y = ToRGB(self.img_channels, name="torgb")(x, ws[:, next(w_iter)])
    img = y if img is None else upsample2d(img) + y
    return x, img


class SynthesisNetwork(nn.Module):
  """ws (N, num_ws, w_dim) → image (N, R, R, C), linear output (about [-1, 1])."""
  resolution: int
  img_channels: int
  channel_base: int = 32768
  channel_max: int = 512
  dtype: Any = jnp.float32

  @property
  def num_ws(self) -> int:
    return 2 * check_resolution(self.resolution) - 2

  @nn.compact
  def __call__(self, ws, noise_mode: str = "random"):
    if ws.shape[1] != self.num_ws:
      raise ValueError(f"synthesis at {self.resolution}² needs {self.num_ws} ws, got {ws.shape[1]}")
    x = img = None
    w_idx = 0
    for log2_res in range(2, check_resolution(self.resolution) + 1):
      res = 2**log2_res
      num_conv = 1 if res == 4 else 2
      block = SynthesisBlock(channels_at(res, self.channel_base, self.channel_max), res,
                             self.img_channels, self.dtype, name=f"b{res}")
      x, img = block(x, img, ws[:, w_idx:w_idx + num_conv + 1], noise_mode)
      w_idx += num_conv
    return img


class Generator(nn.Module):
  """StyleGAN2 generator; `c_dim` > 0 makes it class-conditional through a label embedding."""
  resolution: int
  img_channels: int = 1
  z_dim: int = 512
  w_dim: int = 512
  c_dim: int = 0
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  w_avg_beta: float = 0.995
  channel_base: int = 32768
  channel_max: int = 512
  dtype: Any = jnp.float32  # synthesis only; the mapping network is float32

  @property
  def num_ws(self) -> int:
    return 2 * check_resolution(self.resolution) - 2

  def setup(self):
    if self.img_channels not in (1, 3):
      raise ValueError(f"img_channels must be 1 or 3, got {self.img_channels}")
    self.mapping = MappingNetwork(self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.mapping_layers,
                                  self.mapping_lr_multiplier, self.w_avg_beta)
    self.synthesis = SynthesisNetwork(self.resolution, self.img_channels, self.channel_base,
                                      self.channel_max, self.dtype)

  def map(self, z, c=None, truncation_psi: float = 1.0, update_w_avg: bool = False):
    return self.mapping(z, c, truncation_psi, update_w_avg)

  def synthesize(self, ws, noise_mode: str = "random"):
    return self.synthesis(ws, noise_mode)

  def __call__(self, z, c=None, truncation_psi: float = 1.0, noise_mode: str = "random"):
    return self.synthesize(self.map(z, c, truncation_psi), noise_mode)


class DiscriminatorBlock(nn.Module):
  """Residual block: two 3×3 convs (the second 2x down) plus a 1×1 down skip, each × sqrt(1/2)."""
  features: int
  out_features: int
  from_rgb: bool
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.from_rgb:
      x = EqualConv(self.features, 1, "lrelu", dtype=self.dtype, name="fromrgb")(x)
    skip = EqualConv(self.out_features, 1, use_bias=False, down=2, dtype=self.dtype, name="skip")(
        x, gain=math.sqrt(0.5))
    x = EqualConv(self.features, 3, "lrelu", dtype=self.dtype, name="conv0")(x)
    x = EqualConv(self.out_features, 3, "lrelu", down=2, dtype=self.dtype, name="conv1")(x, gain=math.sqrt(0.5))
    return skip + x


class Discriminator(nn.Module):
  """Residual StyleGAN2 discriminator with minibatch-stddev; projection conditioning if c_dim>0.

  Returns one logit per image, shape (N,).
  """
  resolution: int
  img_channels: int = 1
  c_dim: int = 0
  channel_base: int = 32768
  channel_max: int = 512
  mbstd_group_size: int = 4
  mbstd_num_channels: int = 1
  mapping_layers: int = 8
  mapping_lr_multiplier: float = 0.01
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, img, c=None):
    log2 = check_resolution(self.resolution)
    if img.shape[1:] != (self.resolution, self.resolution, self.img_channels):
      raise ValueError(f"discriminator expects (N, {self.resolution}, {self.resolution}, "
                       f"{self.img_channels}) images, got {img.shape}")
    ch = lambda res: channels_at(res, self.channel_base, self.channel_max)  # noqa: E731
    x = img.astype(self.dtype)
    for log2_res in range(log2, 2, -1):
      res = 2**log2_res
      x = DiscriminatorBlock(ch(res), ch(res // 2), from_rgb=res == self.resolution, dtype=self.dtype,
                             name=f"b{res}")(x)
    x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
    x = EqualConv(ch(4), 3, "lrelu", dtype=self.dtype, name="b4_conv")(x)
    x = EqualDense(ch(4), "lrelu", dtype=self.dtype, name="b4_fc")(x.reshape(x.shape[0], -1))
    x = x.astype(jnp.float32)  # the output layer and the projection: float32 logits
    if not self.c_dim:
      return EqualDense(1, name="b4_out")(x)[:, 0]
    cmap_dim = ch(4)
    if c is None:
      raise ValueError(f"this discriminator is conditional (c_dim={self.c_dim}): pass one-hot labels c")
    cmap = MappingNetwork(0, self.c_dim, cmap_dim, None, self.mapping_layers, self.mapping_lr_multiplier,
                          w_avg_beta=None, name="mapping")(None, c)
    x = EqualDense(cmap_dim, name="b4_out")(x)
    return jnp.sum(x * cmap, axis=-1) * (1.0 / math.sqrt(cmap_dim))
