"""VAE-GAN (Larsen et al. 2016, seed 003 §003.2.4): ResNet-18 encoder, DCGAN decoder, DCGAN
discriminator whose last hidden feature map is the learned similarity metric.

The three networks are separate modules with separate parameters and optimizers (the
training loop updates each with its own loss), so this file only adds the encoder; the decoder
is `DCGANGenerator` and the discriminator `DCGANDiscriminator(return_features=True)`.
"""

from __future__ import annotations

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

  @nn.compact
  def __call__(self, images, train: bool = True):
    h = ResNetFeatures(18, self.width_multiplier, name="backbone")(images, train)
    h = jnp.mean(h, axis=(1, 2))
    return nn.Dense(self.latent_dim, name="mean")(h), nn.Dense(self.latent_dim, name="logvar")(h)


def build_vaegan(model_cfg, image_size: int, channels: int = 1) -> tuple[nn.Module, nn.Module, nn.Module]:
  """(encoder, decoder, discriminator) of `config.model`."""
  m = float(model_cfg.width_multiplier)
  width = scaled(int(model_cfg.dcgan_width), m)
  encoder = ResNetEncoder(int(model_cfg.latent_dim), m)
  decoder = DCGANGenerator(image_size, channels, width)
  discriminator = DCGANDiscriminator(width, norm=model_cfg.d_norm)
  return encoder, decoder, discriminator
