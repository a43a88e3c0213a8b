"""VAE-GAN (Larsen et al. 2016, seed 003 §003.2.4): ResNet-18 encoder, DCGAN decoder, DCGAN
discriminator whose last hidden feature map is the learned similarity metric.

The three networks are separate modules with separate parameters and optimizers (the
training loop updates each with its own loss), so this file only adds the encoder; the decoder
is `DCGANGenerator` and the discriminator `DCGANDiscriminator(return_features=True)`. All three
compute in `dtype` (bfloat16 under `config.half_precision`); μ, log σ², images, logits and the
similarity features are float32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from prepnet_jax.models.gan import DCGANDiscriminator, DCGANGenerator
from prepnet_jax.models.resnet import ResNetFeatures
from prepnet_jax.models.vgg import scaled


class ResNetEncoder(nn.Module):
  """ResNet-18 backbone (the classifiers' `ResNetFeatures`) → global average pool → μ, log σ².

  Seed 003's reading [I]: two fully-connected heads on the 512-d pooled feature. The input is
  the 1-channel image in [−1, 1]; the weights are randomly initialised (no ImageNet file here).
  """
  latent_dim: int = 512
  width_multiplier: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = True):
    h = ResNetFeatures(18, self.width_multiplier, dtype=self.dtype, name="backbone")(images, train)
    h = jnp.mean(h, axis=(1, 2))
    head = lambda name: nn.Dense(self.latent_dim, dtype=self.dtype, name=name)(h).astype(jnp.float32)  # noqa: E731
    return head("mean"), head("logvar")


def build_vaegan(model_cfg, image_size: int, channels: int = 1,
                 dtype: Any = jnp.float32) -> tuple[nn.Module, nn.Module, nn.Module]:
  """(encoder, decoder, discriminator) of `config.model`, computing in `dtype`."""
  m = float(model_cfg.width_multiplier)
  width = scaled(int(model_cfg.dcgan_width), m)
  encoder = ResNetEncoder(int(model_cfg.latent_dim), m, dtype)
  decoder = DCGANGenerator(image_size, channels, width, dtype=dtype)
  discriminator = DCGANDiscriminator(width, norm=model_cfg.d_norm, dtype=dtype)
  return encoder, decoder, discriminator
