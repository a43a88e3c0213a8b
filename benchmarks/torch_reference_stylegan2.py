"""StyleGAN2's generator and discriminator in plain torch.nn (benchmark-only; see torch_reference.py).

Layer for layer `prepnet_jax/models/stylegan2.py` (stylegan2-ada-pytorch's networks, config F,
unconditional): equalised learning rate, mapping network with lr multiplier and tracked w_avg,
modulated convolution with demodulation computed like the project (scale input -> shared conv ->
scale output, stylegan2-ada's non-fused path), per-pixel noise, ToRGB skips, the separable
[1, 3, 3, 1] FIR up/down-sampling, residual D with minibatch-stddev. Parameter counts (buffers
excluded) and FLOPs equal the JAX networks'. DiffAugment is not part of the networks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from prepnet_jax.models import stylegan2 as sg2


def bias_act(x, bias, activation, gain=1.0):
  x = x if bias is None else x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
  if activation == "lrelu":
    return F.leaky_relu(x, sg2.LRELU_SLOPE) * (sg2.LRELU_GAIN * gain)
  return x * gain if gain != 1.0 else x


def upfirdn2d(x, up=1, down=1, pad=(0, 0), gain=1.0):
  """Zero insertion, padding, the separable [1, 3, 3, 1] filter, decimation (NCHW)."""
  n, c, h, w = x.shape
  if up > 1:
    y = x.new_zeros(n, c, h * up, w * up)
    y[:, :, ::up, ::up] = x
    x = y
  taps = torch.tensor(sg2.RESAMPLE_FILTER, dtype=x.dtype)
  taps = taps / taps.sum() * math.sqrt(gain)
  x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
  x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
  x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
  return x[:, :, ::down, ::down] if down > 1 else x


def conv2d_resample(x, weight, up=1, down=1):
  """'same' conv, 2x up (transposed conv, then filter) or 2x down (filter, then strided conv)."""
  k = weight.shape[-1]
  p = k // 2
  if up == 2:
    x = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
    return upfirdn2d(x, pad=(p + 3 - k, p + 3 - k), gain=4.0)
  if down == 2:
    if k == 1:
      return F.conv2d(upfirdn2d(x, down=2, pad=(1, 1)), weight)
    return F.conv2d(upfirdn2d(x, pad=(p + 1, p + 1)), weight, stride=2)
  return F.conv2d(x, weight, padding=p)


def modulated_conv2d(x, weight, styles, up=1, demodulate=True):
  """Scale input -> shared conv -> scale output (stylegan2-ada's non-fused path)."""
  x = conv2d_resample(x * styles[:, :, None, None], weight, up=up)
  if demodulate:
    dcoefs = (styles.square() @ weight.square().sum((2, 3)).t() + 1e-8).rsqrt()
    x = x * dcoefs[:, :, None, None]
  return x


class EqualDense(nn.Module):
  def __init__(self, n_in, n_out, activation="linear", lr_multiplier=1.0, bias_init=0.0):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(n_out, n_in) / lr_multiplier)
    self.bias = nn.Parameter(torch.full((n_out,), float(bias_init)))
    self.activation, self.lr_multiplier = activation, lr_multiplier
    self.gain = lr_multiplier / math.sqrt(n_in)

  def forward(self, x):
    return bias_act(x @ (self.weight * self.gain).t(), self.bias * self.lr_multiplier, self.activation)


class EqualConv(nn.Module):
  def __init__(self, n_in, n_out, kernel, activation="linear", bias=True, down=1):
    super().__init__()
    self.weight = nn.Parameter(torch.randn(n_out, n_in, kernel, kernel))
    self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None
    self.activation, self.down, self.gain = activation, down, 1 / math.sqrt(n_in * kernel**2)

  def forward(self, x, gain=1.0):
    x = conv2d_resample(x, self.weight * self.gain, down=self.down)
    return bias_act(x, self.bias, self.activation, gain)


def normalize_2nd_moment(x, eps=1e-8):
  return x * (x.square().mean(1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
  def __init__(self, z_dim, w_dim, num_ws, num_layers, lr_multiplier, w_avg_beta):
    super().__init__()
    self.fcs = nn.ModuleList(EqualDense(z_dim if i == 0 else w_dim, w_dim, "lrelu", lr_multiplier)
                             for i in range(num_layers))
    self.register_buffer("w_avg", torch.zeros(w_dim))
    self.num_ws, self.w_avg_beta = num_ws, w_avg_beta

  def forward(self, z, update_w_avg=False):
    x = normalize_2nd_moment(z)
    for fc in self.fcs:
      x = fc(x)
    if update_w_avg:
      self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
    return x.unsqueeze(1).expand(-1, self.num_ws, -1)


class SynthesisLayer(nn.Module):
  def __init__(self, n_in, n_out, w_dim, resolution, up=1):
    super().__init__()
    self.affine = EqualDense(w_dim, n_in, bias_init=1.0)
    self.weight = nn.Parameter(torch.randn(n_out, n_in, 3, 3))
    self.register_buffer("noise_const", torch.randn(resolution, resolution))
    self.noise_strength = nn.Parameter(torch.zeros([]))
    self.bias = nn.Parameter(torch.zeros(n_out))
    self.up = up

  def forward(self, x, w):
    x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up)
    n, _, h, width = x.shape
    x = x + torch.randn(n, 1, h, width, dtype=x.dtype) * self.noise_strength
    return bias_act(x, self.bias, "lrelu")


class ToRGB(nn.Module):
  def __init__(self, n_in, channels, w_dim):
    super().__init__()
    self.affine = EqualDense(w_dim, n_in, bias_init=1.0)
    self.weight = nn.Parameter(torch.randn(channels, n_in, 1, 1))
    self.bias = nn.Parameter(torch.zeros(channels))
    self.scale = 1 / math.sqrt(n_in)

  def forward(self, x, w):
    x = modulated_conv2d(x, self.weight, self.affine(w) * self.scale, demodulate=False)
    return bias_act(x, self.bias, "linear")


class SynthesisBlock(nn.Module):
  def __init__(self, n_in, n_out, w_dim, resolution, channels):
    super().__init__()
    if n_in == 0:
      self.const = nn.Parameter(torch.randn(n_out, 4, 4))
    else:
      self.conv0 = SynthesisLayer(n_in, n_out, w_dim, resolution, up=2)
    self.conv1 = SynthesisLayer(n_out, n_out, w_dim, resolution)
    self.torgb = ToRGB(n_out, channels, w_dim)
    self.num_ws = 2 if n_in == 0 else 3

  def forward(self, x, img, ws):
    if x is None:
      x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
      x = self.conv1(x, ws[:, 0])
    else:
      x = self.conv1(self.conv0(x, ws[:, 0]), ws[:, 1])
    y = self.torgb(x, ws[:, self.num_ws - 1])
    return x, y if img is None else upfirdn2d(img, up=2, pad=(2, 1), gain=4.0) + y


class TorchStyleGAN2Generator(nn.Module):
  """Mapping + skip synthesis network of `sg2.Generator` (unconditional)."""

  def __init__(self, hp):
    super().__init__()
    log2 = sg2.check_resolution(hp.resolution)
    self.num_ws = 2 * log2 - 2
    self.mapping = MappingNetwork(hp.z_dim, hp.w_dim, self.num_ws, hp.mapping_layers,
                                  hp.mapping_lr_multiplier, hp.w_avg_beta)
    ch = lambda res: sg2.channels_at(res, hp.channel_base, hp.channel_max)  # noqa: E731
    self.blocks = nn.ModuleList(
        SynthesisBlock(ch(2**r // 2) if r > 2 else 0, ch(2**r), hp.w_dim, 2**r, hp.channels)
        for r in range(2, log2 + 1))

  def synthesize(self, ws):
    x = img = None
    w_idx = 0
    for block in self.blocks:
      x, img = block(x, img, ws[:, w_idx:w_idx + block.num_ws])
      w_idx += block.num_ws - 1
    return img


class DiscriminatorBlock(nn.Module):
  def __init__(self, n_in, n_out, channels, from_rgb):
    super().__init__()
    self.fromrgb = EqualConv(channels, n_in, 1, "lrelu") if from_rgb else None
    self.skip = EqualConv(n_in, n_out, 1, bias=False, down=2)
    self.conv0 = EqualConv(n_in, n_in, 3, "lrelu")
    self.conv1 = EqualConv(n_in, n_out, 3, "lrelu", down=2)

  def forward(self, x):
    x = x if self.fromrgb is None else self.fromrgb(x)
    return self.skip(x, gain=math.sqrt(0.5)) + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class TorchStyleGAN2Discriminator(nn.Module):
  """Residual D with minibatch-stddev of `sg2.Discriminator` (unconditional)."""

  def __init__(self, hp):
    super().__init__()
    log2 = sg2.check_resolution(hp.resolution)
    ch = lambda res: sg2.channels_at(res, hp.channel_base, hp.channel_max)  # noqa: E731
    self.blocks = nn.Sequential(*(DiscriminatorBlock(ch(2**r), ch(2**r // 2), hp.channels, r == log2)
                                  for r in range(log2, 2, -1)))
    self.group_size, self.mbstd_channels = hp.mbstd_group_size, hp.mbstd_num_channels
    self.b4_conv = EqualConv(ch(4) + self.mbstd_channels, ch(4), 3, "lrelu")
    self.b4_fc = EqualDense(ch(4) * 16, ch(4), "lrelu")
    self.b4_out = EqualDense(ch(4), 1)

  def minibatch_stddev(self, x):
    n, c, h, w = x.shape
    g, f = min(self.group_size, n), self.mbstd_channels
    y = x.reshape(g, n // g, f, c // f, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean((2, 3, 4))
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], 1)

  def forward(self, img):
    x = self.b4_conv(self.minibatch_stddev(self.blocks(img)))
    return self.b4_out(self.b4_fc(x.flatten(1)))[:, 0]
