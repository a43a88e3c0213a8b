"""Losses of the GAN/VAE family: NS and minimax GAN, Wasserstein, gradient penalty, weight
clipping, Gaussian KL and the VAE-GAN feature (learned-similarity) loss.

Discriminators return logits (no sigmoid), so the BCE terms are computed stably from logits.
Every loss is a batch mean; per-sample sums (KL, reconstruction, feature error) are summed over
their own axes first, as the papers write them.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def bce_with_logits(logits: jax.Array, target: float) -> jax.Array:
  """Mean binary cross-entropy of logits against a constant label (1 = real, 0 = fake)."""
  return optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)).mean()


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Keras-GAN's d_loss = ½ (BCE(D(x), 1) + BCE(D(G(z)), 0))."""
  return 0.5 * (bce_with_logits(real_logits, 1.0) + bce_with_logits(fake_logits, 0.0))


def generator_loss(fake_logits: jax.Array, kind: str = "ns") -> jax.Array:
  """'ns': non-saturating −log D(G(z)) (what the codes train); 'minimax': log(1 − D(G(z)))."""
  if kind == "ns":
    return bce_with_logits(fake_logits, 1.0)
  if kind == "minimax":
    return -bce_with_logits(fake_logits, 0.0)
  raise ValueError(f"unknown generator loss {kind!r}; expected 'ns' or 'minimax'")


def discriminator_accuracy(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Share of real samples called real and fakes called fake (the thesis's logged 'accuracy')."""
  return 0.5 * ((real_logits > 0).mean() + (fake_logits <= 0).mean())


def wasserstein_critic_loss(real_scores: jax.Array, fake_scores: jax.Array) -> jax.Array:
  """E[f(G(z))] − E[f(x)]: the critic maximises the Wasserstein estimate E[f(x)] − E[f(G(z))]."""
  return fake_scores.mean() - real_scores.mean()


def wasserstein_generator_loss(fake_scores: jax.Array) -> jax.Array:
  return -fake_scores.mean()


def gradient_penalty(critic_fn: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     rng: jax.Array, weight: float = 10.0) -> jax.Array:
  """weight · E[(‖∇f(x̂)‖₂ − 1)²] on x̂ = α x + (1 − α) x̃, α ~ U[0, 1] per sample (Gulrajani).

  `critic_fn` maps a batch to per-sample scores (B,). The gradient is taken with respect to the
  whole batch at once, which is the per-sample gradient only when the critic does not couple
  samples (no BatchNorm), the reason WGAN-GP critics drop it.
  """
  alpha = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
  interpolates = alpha * real + (1.0 - alpha) * fake
  grads = jax.grad(lambda x: critic_fn(x).sum())(interpolates)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=-1) + 1e-12)
  return weight * jnp.mean(jnp.square(norms - 1.0))


def clip_weights(params, clip_value: float):
  """WGAN's Lipschitz constraint: every parameter clipped to [−c, c] after each critic update."""
  return jax.tree_util.tree_map(lambda p: jnp.clip(p, -clip_value, clip_value), params)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ (σ² + μ² − 1 − log σ²), summed over latents, batch mean."""
  kl = 0.5 * jnp.sum(jnp.exp(logvar) + jnp.square(mean) - 1.0 - logvar, axis=-1)
  return kl.mean()


def reconstruction_loss(output: jax.Array, target: jax.Array, kind: str) -> jax.Array:
  """Per-image sum over pixels, batch mean; `target` in [−1, 1].

  'bce': `output` are logits of p(pixel) with targets rescaled to [0, 1] (seed 003's BCE on a
  sigmoid decoder); 'mse': `output` is the tanh image, ½ Σ (x − x̂)² (unit-variance Gaussian,
  YongWookHa's VAE).
  """
  axes = tuple(range(1, target.ndim))
  if kind == "bce":
    per_pixel = optax.sigmoid_binary_cross_entropy(output, (target + 1.0) / 2.0)
    return jnp.sum(per_pixel, axis=axes).mean()
  if kind == "mse":
    return 0.5 * jnp.sum(jnp.square(output - target), axis=axes).mean()
  raise ValueError(f"unknown reconstruction loss {kind!r}; expected 'bce' or 'mse'")


def feature_loss(real_features: jax.Array, fake_features: jax.Array) -> jax.Array:
  """Larsen et al.'s Dis_l likelihood: ½ Σ (D_l(x) − D_l(x̃))² per sample, batch mean."""
  axes = tuple(range(1, real_features.ndim))
  return 0.5 * jnp.sum(jnp.square(real_features - fake_features), axis=axes).mean()
