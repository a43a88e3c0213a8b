"""Variational auto-encoders for 1-channel chest X-rays.

- `FCVAE` (kind 'vae_fc'): seed 003's fully-connected VAE (the PyTorch-examples VAE scaled to
  the image): S²→400→(μ, log σ²) of 20, decoder 20→400→S² logits (sigmoid + BCE).
- `ConvVAE` (kind 'vae_conv'): the thesis's YongWookHa VAE: [Conv k5 s2 → BN → LeakyReLU(0.2)]
  (32..512) → global average pool → (μ, log σ²); decoder Dense → [ConvT k5 s2 → BN → ReLU] →
  ConvT(channels). The log-variance head replaces YongWookHa's log-scale one (same model,
  closed-form KL).

Both decode to a raw `output` whose meaning follows `recon_loss`: logits for 'bce' (image =
2σ(o) − 1 = tanh(o/2)) or a tanh image for 'mse'. `generate` always returns images in [−1, 1].
Both compute in their `dtype` (bfloat16 under `config.half_precision`) with float32 parameters;
μ, log σ², the sampled z and the decoder output are float32, so the KL term, the
reparameterisation and the reconstruction loss are float32.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prepnet_jax.models.conv import Conv, ConvTranspose
from prepnet_jax.models.vgg import scaled

VAE_KINDS = ("vae_fc", "vae_conv")
RECON_LOSSES = ("bce", "mse")


def output_to_image(output: jax.Array, recon_loss: str) -> jax.Array:
  """Decoder output → image in [−1, 1] ('bce' logits: 2σ(o) − 1; 'mse': already tanh)."""
  if recon_loss == "bce":
    return jnp.tanh(output / 2.0)
  if recon_loss == "mse":
    return output
  raise ValueError(f"unknown recon_loss {recon_loss!r}; expected one of {RECON_LOSSES}")


def reparameterize(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
  return mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)


class FCVAE(nn.Module):
  image_size: int
  channels: int = 1
  hidden: int = 400
  latent_dim: int = 20
  recon_loss: str = "bce"
  dtype: Any = jnp.float32

  def setup(self):
    dense = lambda features: nn.Dense(features, dtype=self.dtype)  # noqa: E731
    self.enc_hidden = dense(self.hidden)
    self.enc_mean = dense(self.latent_dim)
    self.enc_logvar = dense(self.latent_dim)
    self.dec_hidden = dense(self.hidden)
    self.dec_out = dense(self.image_size * self.image_size * self.channels)

  def encode(self, images, train: bool = True):
    h = nn.relu(self.enc_hidden(images.reshape(images.shape[0], -1)))
    return self.enc_mean(h).astype(jnp.float32), self.enc_logvar(h).astype(jnp.float32)

  def decode(self, z, train: bool = True):
    out = self.dec_out(nn.relu(self.dec_hidden(z))).astype(jnp.float32)
    out = out.reshape(-1, self.image_size, self.image_size, self.channels)
    return jnp.tanh(out) if self.recon_loss == "mse" else out

  def generate(self, z, train: bool = False):
    return output_to_image(self.decode(z, train), self.recon_loss)

  def __call__(self, images, rng, train: bool = True):
    mean, logvar = self.encode(images, train)
    return self.decode(reparameterize(rng, mean, logvar), train), mean, logvar


class ConvVAE(nn.Module):
  image_size: int
  channels: int = 1
  filters: Sequence[int] = (32, 64, 128, 256, 512)
  latent_dim: int = 512
  kernel: int = 5
  recon_loss: str = "mse"
  dtype: Any = jnp.float32

  def setup(self):
    n = len(self.filters)
    if self.image_size % 2 ** n:
      raise ValueError(f"image_size={self.image_size} must be divisible by 2**{n} "
                       f"(one stride-2 stage per entry of filters={tuple(self.filters)})")
    self.base_size = self.image_size // 2 ** n
    k = (self.kernel, self.kernel)
    dtype = self.dtype
    self.enc_convs = [Conv(f, k, strides=(2, 2), padding="SAME", dtype=dtype) for f in self.filters]
    self.enc_norms = [nn.BatchNorm(dtype=dtype) for _ in self.filters]
    self.enc_mean = nn.Dense(self.latent_dim, dtype=dtype)
    self.enc_logvar = nn.Dense(self.latent_dim, dtype=dtype)
    self.dec_in = nn.Dense(self.base_size ** 2 * self.filters[-1], dtype=dtype)
    up_filters = tuple(reversed(self.filters[:-1]))
    self.dec_convs = [ConvTranspose(f, k, strides=(2, 2), padding="SAME", dtype=dtype) for f in up_filters]
    self.dec_norms = [nn.BatchNorm(dtype=dtype) for _ in up_filters]
    self.dec_out = ConvTranspose(self.channels, k, strides=(2, 2), padding="SAME", dtype=dtype)

  def encode(self, images, train: bool = True):
    x = images
    for conv, norm in zip(self.enc_convs, self.enc_norms):
      x = nn.leaky_relu(norm(conv(x), use_running_average=not train), 0.2)
    h = jnp.mean(x, axis=(1, 2))
    return self.enc_mean(h).astype(jnp.float32), self.enc_logvar(h).astype(jnp.float32)

  def decode(self, z, train: bool = True):
    x = self.dec_in(z).reshape(-1, self.base_size, self.base_size, self.filters[-1])
    for conv, norm in zip(self.dec_convs, self.dec_norms):
      x = nn.relu(norm(conv(x), use_running_average=not train))
    out = self.dec_out(x).astype(jnp.float32)
    return jnp.tanh(out) if self.recon_loss == "mse" else out

  def generate(self, z, train: bool = False):
    return output_to_image(self.decode(z, train), self.recon_loss)

  def __call__(self, images, rng, train: bool = True):
    mean, logvar = self.encode(images, train)
    return self.decode(reparameterize(rng, mean, logvar), train), mean, logvar


def build_vae(model_cfg, image_size: int, channels: int = 1, dtype: Any = jnp.float32) -> nn.Module:
  """The VAE of `model_cfg` computing in `dtype` (`runtime.precision.compute_dtype(config)`)."""
  kind, m = model_cfg.kind, float(model_cfg.width_multiplier)
  if model_cfg.recon_loss not in RECON_LOSSES:
    raise ValueError(f"unknown config.model.recon_loss={model_cfg.recon_loss!r}; expected one of {RECON_LOSSES}")
  if kind == "vae_fc":
    return FCVAE(image_size, channels, scaled(int(model_cfg.fc_hidden), m), int(model_cfg.latent_dim),
                 model_cfg.recon_loss, dtype)
  if kind == "vae_conv":
    return ConvVAE(image_size, channels, tuple(scaled(f, m) for f in model_cfg.conv_filters),
                   int(model_cfg.latent_dim), int(model_cfg.conv_kernel), model_cfg.recon_loss, dtype)
  raise ValueError(f"unknown config.model.kind={kind!r} for the VAE task; expected one of {VAE_KINDS}")
