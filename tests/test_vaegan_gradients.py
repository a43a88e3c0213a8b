"""VAE-GAN (Larsen et al. 2016): the encoder, decoder and discriminator each descend only their
own loss's gradient.

The reference recomputes the three losses from the networks directly and differentiates each
one with respect to its own network only; one training step with plain SGD (lr 1, no momentum)
must move every network by exactly minus that gradient. The cross terms (for example the
encoder loss's gradient with respect to the decoder, through the feature loss) are large, so
a step that summed the losses, or took a joint gradient, would fail.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from configs import common
from prepnet_jax.models import vae as vae_models
from prepnet_jax.runtime import sharding
from prepnet_jax.tasks.generative import common as gen_common, vaegan as vaegan_train
from tests.test_gan_training import SIZE, tiny_config

KL_WEIGHT, FEATURE_WEIGHT, RECON_WEIGHT = 0.7, 1.3, 0.5


def _config():
  config = tiny_config("vaegan")
  config.optim.g = common.optim("sgd", 1.0, momentum=0.0)
  config.optim.d = common.optim("sgd", 1.0, momentum=0.0)
  config.kl_weight, config.feature_weight, config.recon_weight = KL_WEIGHT, FEATURE_WEIGHT, RECON_WEIGHT
  config.equilibrium_gating = False
  return config


def _reference_losses(state, enc_params, dec_params, dis_params, x, eps_key, z_prior):
  """(encoder, decoder, discriminator) losses of Larsen et al., computed from the modules."""
  mean, logvar = state.encoder.apply_fn(state.encoder.variables_with(enc_params), x, train=True,
                                        mutable=["batch_stats"])[0]
  z = vae_models.reparameterize(eps_key, mean, logvar)
  decoded = state.decoder.apply_fn(state.decoder.variables_with(dec_params), jnp.concatenate([z, z_prior]),
                                   train=True, mutable=["batch_stats"])[0]
  x_tilde, x_prior = jnp.split(decoded, 2)
  logits, features = state.discriminator.apply_fn(
      state.discriminator.variables_with(dis_params), jnp.concatenate([x, x_tilde, x_prior]), train=True,
      return_features=True, mutable=["batch_stats"])[0]
  l_real, l_tilde, l_prior = jnp.split(logits, 3)
  f_real, f_tilde, _ = jnp.split(features, 3)
  kl = -0.5 * jnp.mean(jnp.sum(1 + logvar - mean ** 2 - jnp.exp(logvar), axis=-1))
  per_sample_sum = lambda d: jnp.mean(jnp.sum(d.reshape(d.shape[0], -1), axis=1))
  feature = 0.5 * per_sample_sum((f_real - f_tilde) ** 2)
  pixel = 0.5 * per_sample_sum((x_tilde - x) ** 2)
  softplus = jax.nn.softplus
  bce_one, bce_zero = lambda l: jnp.mean(softplus(-l)), lambda l: jnp.mean(softplus(l))
  encoder_loss = KL_WEIGHT * kl + feature + RECON_WEIGHT * pixel
  decoder_loss = FEATURE_WEIGHT * feature + bce_one(l_tilde) + bce_one(l_prior) + RECON_WEIGHT * pixel
  discriminator_loss = bce_one(l_real) + bce_zero(l_tilde) + bce_zero(l_prior)
  return encoder_loss, decoder_loss, discriminator_loss


def _max_abs(a, b=None):
  leaves = jax.tree_util.tree_leaves(a if b is None else jax.tree_util.tree_map(lambda u, v: u - v, a, b))
  return max(float(jnp.max(jnp.abs(leaf))) for leaf in leaves)


def test_each_network_descends_only_its_own_loss():
  config = _config()
  mesh = sharding.make_mesh()
  family = gen_common.build_family(vaegan_train.make_family, config, mesh)
  state = family.init_state(jax.random.key(3))
  rng = np.random.default_rng(0)
  k = family.batches_per_step
  batch = {"image": rng.uniform(-1, 1, (4, k, SIZE, SIZE, 1)).astype(np.float32),
           "label": np.zeros((4, k), np.int32)}

  # The same randomness as the training step: rng → (next rng, reparameterisation noise, prior z).
  _, eps_key, prior_key = jax.random.split(state.rng, 3)
  x = jnp.asarray(batch["image"][:, 0])
  z_prior = jax.random.normal(prior_key, (x.shape[0], int(config.model.latent_dim)))
  params = (state.encoder.params, state.decoder.params, state.discriminator.params)

  def loss_of(i, j, params_j):
    """Loss i as a function of network j's params."""
    p = list(params)
    p[j] = params_j
    return _reference_losses(state, *p, x, eps_key, z_prior)[i]

  reference = [jax.grad(lambda q, i=i: loss_of(i, i, q))(params[i]) for i in range(3)]
  # The cross terms the formulation excludes are not small: a joint gradient would be caught.
  cross_terms = {"encoder loss wrt decoder": jax.grad(lambda q: loss_of(0, 1, q))(params[1]),
                 "discriminator loss wrt decoder": jax.grad(lambda q: loss_of(2, 1, q))(params[1]),
                 "decoder loss wrt discriminator": jax.grad(lambda q: loss_of(1, 2, q))(params[2])}
  old_params = jax.device_get(params)  # the step donates the state
  new_state, metrics = family.train_step(state, batch)
  new_params = (new_state.encoder.params, new_state.decoder.params, new_state.discriminator.params)
  assert float(metrics["train_dis"]) == 1.0 and float(metrics["train_dec"]) == 1.0

  for name, old, new, grad in zip(("encoder", "decoder", "discriminator"), old_params, new_params, reference):
    step = jax.tree_util.tree_map(lambda a, b: a - b, old, new)  # SGD lr 1: old − new = gradient
    scale = _max_abs(grad)
    assert scale > 1e-6, f"{name}: its own loss has no gradient"
    assert _max_abs(step, grad) <= 1e-4 * max(1.0, scale), f"{name} did not descend its own loss only"
  for name, cross in cross_terms.items():
    assert _max_abs(cross) > 1e-2 * max(1.0, _max_abs(reference[1])), name
