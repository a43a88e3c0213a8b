"""VAE training (task 'vae'): the fully-connected VAE of seed 003 ('vae_fc') and the thesis's
convolutional one ('vae_conv'), negative ELBO = reconstruction + kl_weight · KL.

State (`VAEState`): step, the VAE `TrainState` (params, BatchNorm stats, optimizer state of
`config.optim`), RNG key.
Samples decode z ~ N(0, I) in inference mode. Seed 003's per-class fine-tuning is a branch of
a run trained on every class: `--config.resume_workdir=<that run> --config.data.class_filter=[1]
--config.num_steps=<more>`.
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp

from prepnet_jax.eval import generators
from prepnet_jax.losses import gan as gan_losses
from prepnet_jax.models import vae as vae_models
from prepnet_jax.runtime import optimizers, precision, sharding
from prepnet_jax.runtime.state import TrainState
from prepnet_jax.tasks.generative import common as gen_common


@flax.struct.dataclass
class VAEState:
  step: jax.Array
  vae: TrainState
  rng: jax.Array


def state_initializer(config):
  """fn(rng) → a fresh `VAEState` (model and optimizer built once, see gan.state_initializer)."""
  size, channels = int(config.preprocess.image_size), int(config.preprocess.channels)
  model = vae_models.build_vae(config.model, size, channels, precision.compute_dtype(config))
  tx = optimizers.make_optimizer(config.optim)

  def init(rng: jax.Array) -> VAEState:
    init_rng, noise_rng, rng = jax.random.split(rng, 3)
    vae = gen_common.create_net(model, tx, init_rng, jnp.zeros((1, size, size, channels)), noise_rng)
    return VAEState(step=jnp.zeros((), jnp.int32), vae=vae, rng=rng)

  return init


def train_step(state: VAEState, batch: dict, *, recon_loss: str, kl_weight: float):
  rng, noise_rng = jax.random.split(state.rng)
  images = batch["image"][:, 0]

  def loss_fn(params):
    (output, mean, logvar), updates = state.vae.apply_fn(
        state.vae.variables_with(params), images, noise_rng, train=True, mutable=["batch_stats"])
    reconstruction = gan_losses.reconstruction_loss(output, images, recon_loss)
    kl = gan_losses.gaussian_kl(mean, logvar)
    stats = updates.get("batch_stats", state.vae.batch_stats)
    return reconstruction + kl_weight * kl, (stats, {"reconstruction": reconstruction, "kl": kl})

  (loss, (stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.vae.params)
  state = state.replace(step=state.step + 1, vae=state.vae.apply_gradients(grads, batch_stats=stats), rng=rng)
  return state, {"loss": loss, **metrics}


def generate(state: VAEState, z: jax.Array, labels: jax.Array) -> jax.Array:
  return generators.vae_images(state.vae, z, labels)


def make_family(config, mesh) -> gen_common.Family:
  del mesh  # the step draws its noise inside the model, already shaped like the sharded batch
  step = functools.partial(train_step, recon_loss=config.model.recon_loss, kl_weight=float(config.kl_weight))
  return gen_common.Family(name=config.model.kind, init_state=jax.jit(state_initializer(config)),
                           train_step=jax.jit(step, donate_argnums=0), generate=jax.jit(generate),
                           latent_dim=int(config.model.latent_dim))


def train_and_evaluate(config, workdir: str) -> dict:
  mesh = sharding.make_mesh()
  return gen_common.fit(config, workdir, gen_common.build_family(make_family, config, mesh), mesh)
