"""PrepNet's auto-encoder: TernausNet-style UNet16 (VGG16 encoder, extra pool, centre, decoder).

Thesis §2.1: the encoder is VGG16's conv part (ImageNet), its output goes through one more
pooling into a centre block, and the decoder mirrors the encoder with BatchNorm conv blocks,
up-sampling and skip connections. The encoder keeps `VGG`'s layer names (`encoder/block1_conv1`
...) so Keras ImageNet weights load into it with `load_pretrained('unet_vgg16', ...)`.

With depth D the encoder uses VGG16 blocks 1..D; there are D 2x2 poolings (D-1 inside the
encoder plus the extra one), so image sides must be divisible by 2**D. Decoder widths at
depth 5 (width 1, `base_filters`=32) are TernausNet's: centre (512 -> 256), dec5 (512 -> 256),
dec4 (512 -> 256), dec3 (256 -> 64), dec2 (128 -> 32), dec1 conv 32, final 1x1 conv.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from prepnet_jax.models.conv import Conv, ConvTranspose
from prepnet_jax.models.vgg import VGG_BLOCK_SIZES, VGGFeatures, conv_init, max_pool2, scaled

UPSAMPLE_MODES = ("bilinear", "nearest", "transpose")
OUT_ACTIVATIONS = {"linear": lambda x: x, "tanh": jnp.tanh, "sigmoid": nn.sigmoid}

# (mid, out) widths of the decoder block that up-samples to the resolution of encoder block k,
# in units of base_filters; the centre block of a depth-D net uses entry D + 1.
DECODER_WIDTHS = {6: (16, 8), 5: (16, 8), 4: (16, 8), 3: (8, 2), 2: (4, 1)}


class ConvBNReLU(nn.Module):
  features: int
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=conv_init,
             dtype=self.dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                     dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


class DecoderBlock(nn.Module):
  """ConvBNReLU(mid) -> ConvBNReLU(out) -> 2x up-sample; 'transpose' mode follows TernausNet:
  ConvBNReLU(mid) -> ConvTranspose 4x4 stride 2 (out) -> ReLU."""
  mid_features: int
  out_features: int
  upsample: str = "bilinear"
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = ConvBNReLU(self.mid_features, self.bn_momentum, self.dtype, name="conv1")(x, train)
    if self.upsample == "transpose":
      x = ConvTranspose(self.out_features, (4, 4), strides=(2, 2), padding="SAME",
                       kernel_init=conv_init, dtype=self.dtype, name="deconv")(x)
      return nn.relu(x)
    x = ConvBNReLU(self.out_features, self.bn_momentum, self.dtype, name="conv2")(x, train)
    if self.upsample == "nearest":
      return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    batch, height, width, channels = x.shape
    return jax.image.resize(x, (batch, 2 * height, 2 * width, channels), "bilinear")


class UNetVGG16AE(nn.Module):
  """The PrepNet auto-encoder; `apply(v, x, train)` returns an image of x's height and width.

  Params: 'encoder' (VGG16 blocks, no BatchNorm, as in the ImageNet weights), 'center',
  'dec{depth}'..'dec2', 'dec1', 'final'. BatchNorm statistics live in 'batch_stats' (pass
  `mutable=['batch_stats']` when train=True). `out_activation` 'linear' suits ImageNet-normalised
  targets (thesis §2.1), 'tanh' targets in [-1, 1], 'sigmoid' targets in [0, 1].
  """
  out_channels: int = 3
  depth: int = 5
  upsample: str = "bilinear"
  out_activation: str = "linear"
  width_multiplier: float = 1.0
  base_filters: int = 32
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if not 1 <= self.depth <= 5:
      raise ValueError(f"UNetVGG16AE depth must be in 1..5, got {self.depth}")
    if self.upsample not in UPSAMPLE_MODES:
      raise ValueError(f"UNetVGG16AE upsample must be one of {UPSAMPLE_MODES}, "
                       f"got {self.upsample!r}")
    if self.out_activation not in OUT_ACTIVATIONS:
      raise ValueError(f"UNetVGG16AE out_activation must be one of {sorted(OUT_ACTIVATIONS)}, "
                       f"got {self.out_activation!r}")
    factor = 2**self.depth
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"UNetVGG16AE with depth {self.depth} needs image sides divisible by "
                       f"{factor}, got {x.shape[1:3]}")

    encoder = VGGFeatures(VGG_BLOCK_SIZES[16], width_multiplier=self.width_multiplier,
                          dtype=self.dtype, name="encoder")
    skips = []
    h = x
    for block in range(1, self.depth + 1):
      h = encoder(h, train, start=block, stop=block)
      skips.append(h)

    def decoder_block(stage, name):
      mid, out = DECODER_WIDTHS[stage]
      width = lambda units: scaled(units * self.base_filters, self.width_multiplier)
      return DecoderBlock(width(mid), width(out), self.upsample, self.bn_momentum, self.dtype,
                          name=name)

    h = decoder_block(self.depth + 1, "center")(max_pool2(h), train)
    for stage in range(self.depth, 1, -1):
      h = decoder_block(stage, f"dec{stage}")(jnp.concatenate([h, skips[stage - 1]], -1), train)
    h = ConvBNReLU(scaled(self.base_filters, self.width_multiplier), self.bn_momentum, self.dtype,
                   name="dec1")(jnp.concatenate([h, skips[0]], -1), train)
    h = Conv(self.out_channels, (1, 1), dtype=self.dtype, name="final")(h)
    return OUT_ACTIVATIONS[self.out_activation](h.astype(jnp.float32))
