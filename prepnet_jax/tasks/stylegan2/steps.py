"""StyleGAN2's state, its static setup and the jitted phases of one minibatch, plus sampling.

Per minibatch (stylegan2-ada-pytorch `training_loop.py`): G-main, G-reg (path length, every
`g_reg_interval` steps), D-main, D-reg (R1, every `d_reg_interval` steps), then the EMA of G.
Each phase is its own jitted, data-parallel step; lazy phases use Adam with lr·c and β^c
(c = I/(I+1)) and multiply their loss by I. DiffAugment transforms every image D sees (reals
and fakes, in the D and the G phases); gradients flow through it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from prepnet_jax.data import diffaugment
from prepnet_jax.eval import generators
from prepnet_jax.losses import stylegan2 as losses
from prepnet_jax.models import stylegan2 as sg2
from prepnet_jax.models.stylegan2_hparams import Hparams, build_models
from prepnet_jax.runtime import compile_cache, sharding, writers
from prepnet_jax.runtime.state import TrainState

# --- state and static setup ------------------------------------------------------------------------

@flax.struct.dataclass
class StyleGAN2State:
  """Everything a resumed run needs; `step` counts minibatches (nimg = step · batch_size).

  `g` is G's `TrainState`: its `batch_stats` hold G's `buffers` collection (the tracked w_avg),
  its `ema_params` are G_ema, which shares G's buffers (the reference copies them into G_ema
  after every step). `d` is D's. Each network's `step` counts its optimizer updates and its
  `rng` is its init key; every phase draws from the state's own `rng`, one stream for the run.
  """
  step: jax.Array
  g: TrainState
  d: TrainState
  pl_mean: jax.Array
  rng: jax.Array


@dataclasses.dataclass(frozen=True)
class Setup:
  """The static half of the step functions (hashable, so jit compiles it in)."""
  generator: sg2.Generator
  discriminator: sg2.Discriminator
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  augment: diffaugment.DiffAugment
  hp: Hparams
  batch_sharding: Any = None


def make_optimizer(hp: Hparams, reg_interval: int | None) -> optax.GradientTransformation:
  """Adam of the lazy-regularised phase (lr·c, β^c), one object per setting
  (`compile_cache.build_once`), so equal Setups hash equal and reuse compiled steps."""
  lr, beta1, beta2 = losses.lazy_regularization_adam(hp.lr, *hp.betas, reg_interval)
  return compile_cache.build_once(adam, lr, beta1, beta2, hp.eps)


def adam(lr: float, beta1: float, beta2: float, eps: float) -> optax.GradientTransformation:
  return optax.adam(lr, b1=beta1, b2=beta2, eps=eps)


def make_setup(hp: Hparams, augment: diffaugment.DiffAugment, mesh=None, dtype=jnp.float32) -> Setup:
  """The static setup; `dtype` is G's and D's compute dtype (`runtime.precision.compute_dtype`)."""
  generator, discriminator = build_models(hp, dtype)
  return Setup(generator, discriminator,
               make_optimizer(hp, hp.g_reg_interval if hp.g_lazy else None),
               make_optimizer(hp, hp.d_reg_interval if hp.d_lazy else None), augment, hp,
               sharding.data_sharding(mesh) if mesh is not None else None)


@functools.partial(jax.jit, static_argnums=(0, 1))
def create_state(setup: Setup, seed: int) -> StyleGAN2State:
  """Fresh G, D, G_ema (a copy of G), Adam states and RNG; jitted (eager init is slow on CPU)."""
  hp = setup.hp
  g_key, d_key, rng = jax.random.split(jax.random.PRNGKey(seed), 3)
  z = jnp.zeros((2, hp.z_dim), jnp.float32)
  c = jnp.zeros((2, hp.c_dim), jnp.float32) if hp.c_dim else None
  g_vars = setup.generator.init({"params": g_key, "noise": g_key}, z, c)
  images = jnp.zeros((2, hp.resolution, hp.resolution, hp.channels), jnp.float32)
  d_params = setup.discriminator.init(d_key, images, c)["params"]
  zero = jnp.zeros((), jnp.int32)
  g = TrainState(step=zero, params=g_vars["params"], batch_stats=g_vars["buffers"],
                 opt_state=setup.g_tx.init(g_vars["params"]), rng=g_key, apply_fn=setup.generator.apply,
                 tx=setup.g_tx, ema_params=g_vars["params"])
  d = TrainState(step=zero, params=d_params, batch_stats={}, opt_state=setup.d_tx.init(d_params), rng=d_key,
                 apply_fn=setup.discriminator.apply, tx=setup.d_tx)
  return StyleGAN2State(step=zero, g=g, d=d, pl_mean=jnp.zeros((), jnp.float32), rng=rng)


# --- generator and discriminator calls -------------------------------------------------------------

def _labels(setup: Setup, batch):
  return jax.nn.one_hot(batch["label"], setup.hp.c_dim) if setup.hp.c_dim else None


def _latents(setup: Setup, key, n: int):
  z = jax.random.normal(key, (n, setup.hp.z_dim), jnp.float32)
  if setup.batch_sharding is not None and n % setup.batch_sharding.mesh.devices.size == 0:
    z = jax.lax.with_sharding_constraint(z, setup.batch_sharding)
  return z


def mapped_latents(setup: Setup, params, buffers, key, c, n: int):
  """ws for n fresh latents with style mixing (one cutoff per batch, as the reference).

  Updates the tracked w_avg from the batch; returns (ws (n, num_ws, w_dim), new buffers).
  """
  generator, hp = setup.generator, setup.hp
  z_key, z2_key, cut_key, prob_key = jax.random.split(key, 4)
  ws, mutated = generator.apply({"params": params, "buffers": buffers}, _latents(setup, z_key, n), c,
                                update_w_avg=True, method=sg2.Generator.map, mutable=["buffers"])
  buffers = mutated["buffers"]
  if hp.style_mixing_prob > 0:
    num_ws = generator.num_ws
    cutoff = jax.random.randint(cut_key, (), 1, num_ws)
    cutoff = jnp.where(jax.random.uniform(prob_key) < hp.style_mixing_prob, cutoff, num_ws)
    ws2 = generator.apply({"params": params, "buffers": buffers}, _latents(setup, z2_key, n), c,
                          method=sg2.Generator.map)
    ws = jnp.where(jnp.arange(num_ws)[None, :, None] < cutoff, ws, ws2)
  return ws, buffers


def synthesize(setup: Setup, params, buffers, ws, noise_key):
  return setup.generator.apply({"params": params, "buffers": buffers}, ws, method=sg2.Generator.synthesize,
                               rngs={"noise": noise_key})


def discriminate(setup: Setup, d_params, images, c, aug_key):
  return setup.discriminator.apply({"params": d_params}, setup.augment(aug_key, images), c)


# --- phases ----------------------------------------------------------------------------------------

def generator_step(setup: Setup, state: StyleGAN2State, batch, phase: str):
  """G phase 'main' (non-saturating loss), 'reg' (path length × interval) or 'both'."""
  hp = setup.hp
  rng, main_key, reg_key = jax.random.split(state.rng, 3)
  c = _labels(setup, batch)
  n = batch["image"].shape[0]

  def loss_fn(g_params):
    buffers, pl_mean, total, scalars = state.g.batch_stats, state.pl_mean, 0.0, {}
    if phase in ("main", "both"):
      map_key, noise_key, aug_key = jax.random.split(main_key, 3)
      ws, buffers = mapped_latents(setup, g_params, buffers, map_key, c, n)
      fakes = synthesize(setup, g_params, buffers, ws, noise_key)
      fake_logits = discriminate(setup, state.d.params, fakes, c, aug_key)
      loss = losses.generator_loss(fake_logits)
      total += loss
      scalars["g_loss"] = loss
    if phase in ("reg", "both"):
      map_key, noise_key, pl_key = jax.random.split(reg_key, 3)
      m = n // hp.pl_batch_shrink
      ws, buffers = mapped_latents(setup, g_params, buffers, map_key, None if c is None else c[:m], m)
      penalty, pl_mean, lengths = losses.path_length_penalty(
          lambda w: synthesize(setup, g_params, buffers, w, noise_key), ws, pl_key, state.pl_mean,
          hp.pl_decay)
      gain = hp.g_reg_interval if phase == "reg" else 1
      total += jnp.mean(penalty) * hp.pl_weight * gain
      scalars.update(pl_penalty=jnp.mean(penalty), pl_length=jnp.mean(lengths), pl_mean=pl_mean)
    return total, (buffers, pl_mean, scalars)

  grads, (buffers, pl_mean, scalars) = jax.grad(loss_fn, has_aux=True)(state.g.params)
  state = state.replace(g=state.g.apply_gradients(grads, batch_stats=buffers), pl_mean=pl_mean, rng=rng)
  return state, scalars


def discriminator_step(setup: Setup, state: StyleGAN2State, batch, phase: str):
  """D phase 'main' (logistic loss), 'reg' (R1 on reals × interval) or 'both'."""
  hp = setup.hp
  rng, gen_key, aug_fake_key, aug_real_key = jax.random.split(state.rng, 4)
  c = _labels(setup, batch)
  reals = batch["image"]
  buffers = state.g.batch_stats
  if phase in ("main", "both"):
    map_key, noise_key = jax.random.split(gen_key)
    ws, buffers = mapped_latents(setup, state.g.params, buffers, map_key, c, reals.shape[0])
    fakes = synthesize(setup, state.g.params, buffers, ws, noise_key)

  def loss_fn(d_params):
    total, scalars = 0.0, {}
    real_logits = None
    if phase in ("reg", "both"):
      penalty, real_logits = losses.r1_penalty(
          lambda x: discriminate(setup, d_params, x, c, aug_real_key), reals)
      gain = hp.d_reg_interval if phase == "reg" else 1
      total += jnp.mean(penalty) * (hp.r1_gamma / 2) * gain
      scalars["r1_penalty"] = jnp.mean(penalty)
    if phase in ("main", "both"):
      fake_logits = discriminate(setup, d_params, fakes, c, aug_fake_key)
      if real_logits is None:
        real_logits = discriminate(setup, d_params, reals, c, aug_real_key)
      loss = losses.discriminator_loss(real_logits, fake_logits)
      total += loss
      scalars.update(d_loss=loss, real_logit=jnp.mean(real_logits), fake_logit=jnp.mean(fake_logits),
                     real_sign=jnp.mean(jnp.sign(real_logits)))
    return total, scalars

  grads, scalars = jax.grad(loss_fn, has_aux=True)(state.d.params)
  state = state.replace(d=state.d.apply_gradients(grads), g=state.g.replace(batch_stats=buffers), rng=rng)
  return state, scalars


def ema_step(setup: Setup, state: StyleGAN2State) -> StyleGAN2State:
  """G_ema ← lerp(G, G_ema, β) with β = 0.5^(batch/ema_nimg); step + 1."""
  hp = setup.hp
  beta = losses.ema_beta(hp.batch_size, state.step * hp.batch_size, hp.ema_kimg, hp.ema_rampup)
  ema = jax.tree_util.tree_map(lambda p, e: p + (e - p) * beta, state.g.params, state.g.ema_params)
  return state.replace(g=state.g.replace(ema_params=ema), step=state.step + 1)


g_step_jit = jax.jit(generator_step, static_argnames=("setup", "phase"), donate_argnames="state")
d_step_jit = jax.jit(discriminator_step, static_argnames=("setup", "phase"), donate_argnames="state")
ema_step_jit = jax.jit(ema_step, static_argnames="setup", donate_argnames="state")


def train_step(setup: Setup, state: StyleGAN2State, batch, step: int) -> tuple[StyleGAN2State, dict]:
  """One minibatch: G-main, G-reg (lazy), D-main, D-reg (lazy), EMA. `step` = state.step.

  The step number comes from the host loop so choosing the lazy phases never waits for the device.
  """
  hp = setup.hp
  scalars = {}
  state, out = g_step_jit(setup, state, batch, "main" if hp.g_lazy or hp.pl_weight == 0 else "both")
  scalars.update(out)
  if hp.g_lazy and step % hp.g_reg_interval == 0:
    state, out = g_step_jit(setup, state, batch, "reg")
    scalars.update(out)
  state, out = d_step_jit(setup, state, batch, "main" if hp.d_lazy or hp.r1_gamma == 0 else "both")
  scalars.update(out)
  if hp.d_lazy and step % hp.d_reg_interval == 0:
    state, out = d_step_jit(setup, state, batch, "reg")
    scalars.update(out)
  return ema_step_jit(setup, state), scalars


# --- sampling --------------------------------------------------------------------------------------

def generate_uint8(setup: Setup, state: StyleGAN2State, key, num: int, labels: np.ndarray | None,
                   truncation_psi: float = 1.0, noise_mode: str = "random", batch_size: int = 64) -> np.ndarray:
  """`num` images from G_ema as uint8 (N, R, R, C), in fixed-size batches (one compile): the
  snapshots' fixed latents (trained runs are sampled through `eval.generators`)."""
  hp = setup.hp
  out = []
  for start in range(0, num, batch_size):
    key_z, key_noise = jax.random.split(jax.random.fold_in(key, start))
    z = jax.random.normal(key_z, (batch_size, hp.z_dim), jnp.float32)
    y = np.zeros(batch_size, np.int32)
    if hp.c_dim:
      y = np.asarray(labels)[np.arange(start, start + batch_size) % len(labels)].astype(np.int32)
    images = generators.stylegan2_images(setup.generator, state.g.ema_params, state.g.batch_stats, z, y,
                                         key_noise, truncation_psi, noise_mode)
    out.append(writers.to_uint8(np.asarray(jax.device_get(images)), (-1.0, 1.0)))
  return np.concatenate(out)[:num]
