"""StyleGAN2 losses: non-saturating logistic GAN loss, R1 and path-length regularisation.

Definitions follow stylegan2-ada-pytorch `training/loss.py` (StyleGAN2Loss). Every function
returns per-sample values or a scalar plus the statistics worth logging; weighting by the lazy
regularisation interval happens in the training step.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def generator_loss(fake_logits):
  """Non-saturating: softplus(−D(G(z))), mean over the batch."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def discriminator_loss(real_logits, fake_logits):
  """Logistic: softplus(D(G(z))) + softplus(−D(x)), mean over the batch."""
  return jnp.mean(jax.nn.softplus(fake_logits)) + jnp.mean(jax.nn.softplus(-real_logits))


def r1_penalty(discriminator_fn: Callable, reals):
  """Per-sample ‖∇ₓ D(x)‖² on real images (the R1 loss is γ/2 times its mean).

  `discriminator_fn(images) -> logits (N,)`; any augmentation inside it is differentiated
  through, so the gradient is taken with respect to the un-augmented reals, as in
  DiffAugment's `ns_DiffAugment_r1`. Returns (penalty (N,), real logits (N,)).
  """
  def summed_logits(x):
    logits = discriminator_fn(x)
    return jnp.sum(logits), logits

  grads, logits = jax.grad(summed_logits, has_aux=True)(reals)
  return jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))), logits


def path_length_penalty(synthesis_fn: Callable, ws, noise_key, pl_mean, pl_decay: float = 0.01):
  """Path-length regulariser on a batch of ws (N, num_ws, w_dim).

  y ~ N(0, I)/sqrt(H·W); length = sqrt(mean over ws of ‖J_wᵀ y‖²); the running mean a moves
  towards the batch mean by `pl_decay`; penalty = (length − a)² per sample.
  Returns (penalty (N,), new pl_mean (no gradient), lengths (N,)).
  """
  def projected(w):
    images = synthesis_fn(w)
    noise = jax.random.normal(noise_key, images.shape, images.dtype)
    noise = noise / jnp.sqrt(float(images.shape[1] * images.shape[2]))
    return jnp.sum(images * noise)

  grads = jax.grad(projected)(ws)
  lengths = jnp.sqrt(jnp.mean(jnp.sum(jnp.square(grads), axis=2), axis=1))
  new_pl_mean = jax.lax.stop_gradient(pl_mean + (jnp.mean(lengths) - pl_mean) * pl_decay)
  return jnp.square(lengths - new_pl_mean), new_pl_mean, lengths


def ema_beta(batch_size: int, cur_nimg, ema_kimg: float, ema_rampup: float | None = None):
  """Per-step EMA coefficient 0.5^(batch/ema_nimg): a half-life of ema_nimg images.

  With a ramp-up, ema_nimg = min(ema_kimg·1000, cur_nimg·ema_rampup), so early averages forget
  the random initialisation quickly.
  """
  ema_nimg = ema_kimg * 1000.0
  if ema_rampup is not None:
    ema_nimg = jnp.minimum(ema_nimg, cur_nimg * ema_rampup)
  return 0.5 ** (batch_size / jnp.maximum(ema_nimg, 1e-8))


def lazy_regularization_adam(lr: float, beta1: float, beta2: float, reg_interval: int | None):
  """Adam settings when a regulariser runs every `reg_interval` steps in a separate phase.

  With c = I/(I+1): lr·c and betas β^c, so the main+reg phases together move like one
  un-split step (StyleGAN2 appendix B). No interval: the plain settings.
  """
  if not reg_interval:
    return lr, beta1, beta2
  c = reg_interval / (reg_interval + 1)
  return lr * c, beta1**c, beta2**c
