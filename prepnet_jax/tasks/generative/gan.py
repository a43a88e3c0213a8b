"""GAN, CGAN, DCGAN (both variants), WGAN and WGAN-GP training (task 'gan').

`config.model.kind` picks the networks and the loss (`models.gan.KINDS`):
- 'ns' kinds (gan, cgan, dcgan, dcgan_upsample): one D step on a real and a fake batch
  (½ (BCE(D(x), 1) + BCE(D(G(z)), 0))), then one G step with the non-saturating loss
  (`config.g_loss='minimax'` for log(1 − D(G(z)))). CGAN: D sees the real batch's labels and
  fakes generated with them; G is trained on random labels.
- WGAN: `n_critic` critic steps, each on its own real batch, every critic parameter clipped to
  [−clip_value, clip_value] after each step; then one G step (RMSprop in the thesis).
- WGAN-GP: as WGAN without clipping, plus `gp_weight` · gradient penalty.

State (`GANState`): step, the generator's and the critic's `TrainState` (params, BatchNorm
stats, optimizer state; G's `ema_params` hold its EMA, None when `ema_decay` is 0) and the RNG
key every phase draws from. Optimizers: `config.optim.g` and `config.optim.d`. Samples come
from G in inference mode (BatchNorm running statistics), from the EMA weights when kept.
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp

from prepnet_jax.eval import generators
from prepnet_jax.losses import gan as gan_losses
from prepnet_jax.models import gan as gan_models
from prepnet_jax.runtime import optimizers, precision, sharding
from prepnet_jax.runtime.state import TrainState
from prepnet_jax.tasks.generative import common as gen_common


@flax.struct.dataclass
class GANState:
  step: jax.Array
  generator: TrainState
  critic: TrainState
  rng: jax.Array


def state_initializer(config):
  """fn(rng) → a fresh `GANState`; the modules and optimizers are built once, so every state it
  makes shares their (static) apply functions and jitted steps compile once per config."""
  size, channels = int(config.preprocess.image_size), int(config.preprocess.channels)
  dtype = precision.compute_dtype(config)
  g_model = gan_models.build_generator(config.model, size, channels, dtype)
  d_model = gan_models.build_discriminator(config.model, dtype)
  g_tx, d_tx = optimizers.make_optimizer(config.optim.g), optimizers.make_optimizer(config.optim.d)
  labels = jnp.zeros((1,), jnp.int32) if int(config.model.num_classes) else None
  latent_dim, keep_ema = int(config.model.latent_dim), float(config.ema_decay) > 0

  def init(rng: jax.Array) -> GANState:
    g_rng, d_rng, rng = jax.random.split(rng, 3)
    generator = gen_common.create_net(g_model, g_tx, g_rng, jnp.zeros((1, latent_dim)), labels)
    if keep_ema:
      generator = generator.replace(ema_params=generator.params)
    critic = gen_common.create_net(d_model, d_tx, d_rng, jnp.zeros((1, size, size, channels)), labels)
    return GANState(step=jnp.zeros((), jnp.int32), generator=generator, critic=critic, rng=rng)

  return init


def _apply(net: TrainState, params, inputs, labels, train: bool, rng=None):
  """Forward pass in train/eval mode; returns (output, new batch stats)."""
  out, updates = net.apply_fn(net.variables_with(params), inputs, labels, train=train,
                              rngs={"dropout": rng} if rng is not None else {}, mutable=["batch_stats"])
  return out, updates.get("batch_stats", net.batch_stats)


def critic_step(state: GANState, real, labels, rng, *, loss: str, latent_dim: int, conditional: bool,
                clip_value: float, gp_weight: float, mesh) -> tuple[TrainState, dict]:
  """One D/critic update on a real batch and a fresh fake batch."""
  k_z, k_real, k_fake, k_gp, k_alpha = jax.random.split(rng, 5)
  y = labels if conditional else None
  z = gen_common.with_data_sharding(jax.random.normal(k_z, (real.shape[0], latent_dim)), mesh)
  fake, _ = _apply(state.generator, state.generator.params, z, y, True)
  fake = jax.lax.stop_gradient(fake)
  critic = state.critic

  def loss_fn(params):
    real_out, stats = _apply(critic, params, real, y, True, k_real)
    fake_out, stats = _apply(critic.replace(batch_stats=stats), params, fake, y, True, k_fake)
    if loss == "ns":
      value = gan_losses.discriminator_loss(real_out, fake_out)
      metrics = {"d_accuracy": gan_losses.discriminator_accuracy(real_out, fake_out),
                 "d_real": jax.nn.sigmoid(real_out).mean(), "d_fake": jax.nn.sigmoid(fake_out).mean()}
    else:
      value = gan_losses.wasserstein_critic_loss(real_out, fake_out)
      metrics = {"w_distance": real_out.mean() - fake_out.mean()}
    if loss == "wasserstein_gp":
      scores = lambda x: _apply(critic.replace(batch_stats=stats), params, x, y, True, k_gp)[0]
      penalty = gan_losses.gradient_penalty(scores, real, fake, k_alpha, gp_weight)
      metrics["gradient_penalty"] = penalty
      value = value + penalty
    return value, (stats, metrics)

  (value, (stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(critic.params)
  critic = critic.apply_gradients(grads, batch_stats=stats)
  if loss == "wasserstein_clip":
    critic = critic.replace(params=gan_losses.clip_weights(critic.params, clip_value))
  return critic, {"d_loss": value, **metrics}


def generator_step(state: GANState, batch_size: int, rng, *, loss: str, g_loss: str, latent_dim: int,
                   num_classes: int, mesh) -> tuple[TrainState, dict]:
  """One G update on fresh latents (random labels for a conditional G)."""
  k_z, k_y, k_d = jax.random.split(rng, 3)
  z = gen_common.with_data_sharding(jax.random.normal(k_z, (batch_size, latent_dim)), mesh)
  y = jax.random.randint(k_y, (batch_size,), 0, num_classes) if num_classes else None
  generator = state.generator

  def loss_fn(params):
    fake, stats = _apply(generator, params, z, y, True)
    out, _ = _apply(state.critic, state.critic.params, fake, y, True, k_d)
    if loss == "ns":
      return gan_losses.generator_loss(out, g_loss), stats
    return gan_losses.wasserstein_generator_loss(out), stats

  (value, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(generator.params)
  return generator.apply_gradients(grads, batch_stats=stats), {"g_loss": value}


def train_step(state: GANState, batch: dict, *, loss: str, g_loss: str, n_critic: int, latent_dim: int,
               num_classes: int, clip_value: float, gp_weight: float, ema_decay: float, mesh):
  """n_critic critic updates (one real batch each: batch['image'] is (B, n_critic, S, S, C)),
  then one generator update and the EMA. The critic loop is unrolled: XLA:CPU runs convolutions
  inside a `lax.scan` body several times slower."""
  rng, critic_rng, g_rng = jax.random.split(state.rng, 3)
  metrics = {}
  for i, key in enumerate(jax.random.split(critic_rng, n_critic)):
    critic, metrics = critic_step(state, batch["image"][:, i], batch["label"][:, i], key, loss=loss,
                                  latent_dim=latent_dim, conditional=bool(num_classes),
                                  clip_value=clip_value, gp_weight=gp_weight, mesh=mesh)
    state = state.replace(critic=critic)
  generator, g_metrics = generator_step(state, batch["image"].shape[0], g_rng, loss=loss, g_loss=g_loss,
                                        latent_dim=latent_dim, num_classes=num_classes, mesh=mesh)
  if ema_decay > 0:
    generator = generator.replace(ema_params=jax.tree_util.tree_map(
        lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, generator.ema_params, generator.params))
  state = state.replace(step=state.step + 1, generator=generator, rng=rng)
  return state, {**metrics, **g_metrics}


def generate(state: GANState, z: jax.Array, labels: jax.Array, *, conditional: bool) -> jax.Array:
  """G in inference mode (EMA weights when kept) → images in [−1, 1], as trained runs are sampled."""
  return generators.gan_images(state.generator, z, labels, conditional)


def make_family(config, mesh) -> gen_common.Family:
  _, _, loss = gan_models.architectures(config.model)
  num_classes = int(config.model.num_classes)
  n_critic = int(config.n_critic)
  step = functools.partial(
      train_step, loss=loss, g_loss=config.g_loss, n_critic=n_critic, latent_dim=int(config.model.latent_dim),
      num_classes=num_classes, clip_value=float(config.clip_value), gp_weight=float(config.gp_weight),
      ema_decay=float(config.ema_decay), mesh=mesh)
  return gen_common.Family(
      name=config.model.kind, init_state=jax.jit(state_initializer(config)), train_step=jax.jit(step, donate_argnums=0),
      generate=jax.jit(functools.partial(generate, conditional=bool(num_classes))),
      latent_dim=int(config.model.latent_dim), num_classes=num_classes, batches_per_step=n_critic)


def train_and_evaluate(config, workdir: str) -> dict:
  mesh = sharding.make_mesh()
  return gen_common.fit(config, workdir, gen_common.build_family(make_family, config, mesh), mesh)
