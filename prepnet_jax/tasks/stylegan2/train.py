"""StyleGAN2 + DiffAugment training (task 'stylegan2'), counted in kimg and resumable.

The loop follows stylegan2-ada-pytorch `training_loop.py`: per minibatch the phases G-main,
G-reg (path length, every `g_reg_interval` steps), D-main, D-reg (R1, every `d_reg_interval`
steps), then the EMA of G. Each phase is its own jitted, data-parallel step; lazy phases use
Adam with lr·c and β^c (c = I/(I+1)) and multiply their loss by I. DiffAugment transforms
every image D sees (reals and fakes, in the D and the G phases); gradients flow through it.

Everything lives in one `StyleGAN2State` checkpointed with the data-iterator position, so a
rerun with the same workdir continues at the same kimg with the same EMA weights, path-length
mean and RNG. Snapshots (every `snapshot_kimg`, plus kimg 0) write Fréchet distance / KID with
the named feature extractor, an augmentation-leak check, a fixed-latent sample grid
(TensorBoard and `reports/fakes_<kimg>.png`) and `reports/metrics_history.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from prepnet_jax.data import diffaugment
from prepnet_jax.losses import stylegan2 as losses
from prepnet_jax.data import datasets, pipeline, transforms
from prepnet_jax.models import stylegan2 as sg2
from prepnet_jax.runtime import checkpointing, checks
from prepnet_jax.runtime import writers, sharding

PRESETS = ("small", "low_shot", "paper256", "auto")

# Architecture fields: a checkpoint can only be resumed with the same values.
ARCH_FIELDS = ("resolution", "channels", "c_dim", "z_dim", "w_dim", "mapping_layers", "channel_base",
               "channel_max", "mbstd_group_size", "mbstd_num_channels")


# --- hyperparameters -------------------------------------------------------------------------------

def preset_values(preset: str, resolution: int | None, num_devices: int) -> dict:
  """The preset's hyperparameters (stylegan2-ada-pytorch `cfg_specs`, DiffAugment's `low_shot`).

  small     CPU-fast: 32², narrow nets; γ = 0.1 as DiffAugment's CIFAR (32²) recipe.
  low_shot  DiffAugment-stylegan2-pytorch: 300 kimg, mb 8, mbstd 4, fmaps 1, lr 0.002, γ 10,
            EMA 10 kimg, 2 mapping layers (snapshots every 10 ticks of 4 kimg).
  paper256  StyleGAN2-ADA paper: mb 64, mbstd 8, fmaps 0.5, lr 0.0025, γ 1, EMA 20, 8 layers.
  auto      StyleGAN2-ADA formulas of resolution and device count (γ = 0.0002·res²/mb, ...).
  """
  if preset == "small":
    return dict(resolution=resolution or 32, batch_size=16, total_kimg=12.0, snapshot_kimg=2.0,
                checkpoint_kimg=1.0, z_dim=64, w_dim=64, mapping_layers=2, channel_base=1024, channel_max=32,
                mbstd_group_size=4, lr=0.0025, r1_gamma=0.1, ema_kimg=5.0, ema_rampup=0.05)
  big = dict(z_dim=512, w_dim=512, channel_max=512)
  if preset == "low_shot":
    return dict(big, resolution=resolution or 256, batch_size=8, total_kimg=300.0, snapshot_kimg=40.0,
                checkpoint_kimg=10.0, mapping_layers=2, channel_base=32768, mbstd_group_size=4, lr=0.002, r1_gamma=10.0,
                ema_kimg=10.0, ema_rampup=0.0)
  if preset == "paper256":
    return dict(big, resolution=resolution or 256, batch_size=64, total_kimg=25000.0,
                snapshot_kimg=200.0, checkpoint_kimg=40.0, mapping_layers=8, channel_base=16384, mbstd_group_size=8,
                lr=0.0025, r1_gamma=1.0, ema_kimg=20.0, ema_rampup=0.0)
  if preset == "auto":
    res = resolution or 256
    mb = max(min(num_devices * min(4096 // res, 32), 64), num_devices)
    return dict(big, resolution=res, batch_size=mb, total_kimg=25000.0, snapshot_kimg=200.0,
                checkpoint_kimg=40.0, mapping_layers=2, channel_base=32768 if res >= 512 else 16384,
                mbstd_group_size=min(mb // num_devices, 4), lr=0.002 if res >= 1024 else 0.0025,
                r1_gamma=0.0002 * res**2 / mb, ema_kimg=mb * 10 / 32, ema_rampup=0.05)
  raise ValueError(f"unknown config.preset {preset!r}; expected one of {PRESETS}")


@dataclasses.dataclass(frozen=True)
class Hparams:
  """Resolved hyperparameters: the preset, overridden by every config field that is set."""
  resolution: int
  channels: int
  c_dim: int
  z_dim: int
  w_dim: int
  mapping_layers: int
  mapping_lr_multiplier: float
  w_avg_beta: float
  channel_base: int
  channel_max: int
  mbstd_group_size: int
  mbstd_num_channels: int
  batch_size: int
  # Run length and save intervals do not change the steps: left out of equality and hashing,
  # so a resumed run with a longer schedule reuses the compiled steps.
  total_kimg: float = dataclasses.field(compare=False)
  snapshot_kimg: float = dataclasses.field(compare=False)
  checkpoint_kimg: float = dataclasses.field(compare=False)
  lr: float
  betas: tuple[float, float]
  eps: float
  r1_gamma: float
  d_reg_interval: int
  pl_weight: float
  pl_decay: float
  pl_batch_shrink: int
  g_reg_interval: int
  style_mixing_prob: float
  ema_kimg: float
  ema_rampup: float | None

  @property
  def g_lazy(self) -> bool:
    return self.pl_weight > 0 and self.g_reg_interval > 0

  @property
  def d_lazy(self) -> bool:
    return self.r1_gamma > 0 and self.d_reg_interval > 0


def resolve_hparams(config, num_devices: int | None = None) -> Hparams:
  num_devices = num_devices or jax.device_count()
  values = preset_values(config.preset, config.get("resolution"), num_devices)
  model, train = config.model, config.train

  def pick(section, name):
    value = section.get(name)
    return values[name] if value is None else value

  conditional = bool(config.data.get("conditional", False))
  if conditional and config.data.get("class_filter") is not None:
    raise ValueError("config.data.conditional=True and config.data.class_filter are exclusive: "
                     "train one conditional model or one model per class")
  ema_rampup = float(pick(train, "ema_rampup"))
  hp = Hparams(
      resolution=int(values["resolution"]), channels=int(config.channels),
      c_dim=int(config.data.num_classes) if conditional else 0,
      z_dim=int(pick(model, "z_dim")), w_dim=int(pick(model, "w_dim")),
      mapping_layers=int(pick(model, "mapping_layers")),
      mapping_lr_multiplier=float(model.mapping_lr_multiplier), w_avg_beta=float(model.w_avg_beta),
      channel_base=int(pick(model, "channel_base")), channel_max=int(pick(model, "channel_max")),
      mbstd_group_size=int(pick(model, "mbstd_group_size")),
      mbstd_num_channels=int(model.mbstd_num_channels),
      batch_size=int(pick(train, "batch_size")), total_kimg=float(pick(train, "total_kimg")),
      snapshot_kimg=float(pick(train, "snapshot_kimg")),
      checkpoint_kimg=float(pick(train, "checkpoint_kimg")), lr=float(pick(train, "lr")),
      betas=(float(train.adam_beta1), float(train.adam_beta2)), eps=float(train.adam_eps),
      r1_gamma=float(pick(train, "r1_gamma")), d_reg_interval=int(train.d_reg_interval),
      pl_weight=float(train.pl_weight), pl_decay=float(train.pl_decay),
      pl_batch_shrink=int(train.pl_batch_shrink), g_reg_interval=int(train.g_reg_interval),
      style_mixing_prob=float(train.style_mixing_prob), ema_kimg=float(pick(train, "ema_kimg")),
      ema_rampup=ema_rampup if ema_rampup > 0 else None)
  sg2.check_resolution(hp.resolution)
  if hp.channels not in (1, 3):
    raise ValueError(f"config.channels must be 1 or 3, got {hp.channels}")
  if hp.batch_size % max(1, hp.pl_batch_shrink) or hp.batch_size % min(hp.mbstd_group_size, hp.batch_size):
    raise ValueError(f"train.batch_size={hp.batch_size} must be divisible by pl_batch_shrink="
                     f"{hp.pl_batch_shrink} and model.mbstd_group_size={hp.mbstd_group_size}")
  return hp


def build_models(hp: Hparams) -> tuple[sg2.Generator, sg2.Discriminator]:
  generator = sg2.Generator(
      hp.resolution, hp.channels, z_dim=hp.z_dim, w_dim=hp.w_dim, c_dim=hp.c_dim,
      mapping_layers=hp.mapping_layers, mapping_lr_multiplier=hp.mapping_lr_multiplier,
      w_avg_beta=hp.w_avg_beta, channel_base=hp.channel_base, channel_max=hp.channel_max)
  discriminator = sg2.Discriminator(
      hp.resolution, hp.channels, c_dim=hp.c_dim, channel_base=hp.channel_base,
      channel_max=hp.channel_max, mbstd_group_size=hp.mbstd_group_size,
      mbstd_num_channels=hp.mbstd_num_channels, mapping_layers=hp.mapping_layers,
      mapping_lr_multiplier=hp.mapping_lr_multiplier)
  return generator, discriminator


def make_optimizer(hp: Hparams, reg_interval: int | None) -> optax.GradientTransformation:
  lr, beta1, beta2 = losses.lazy_regularization_adam(hp.lr, *hp.betas, reg_interval)
  return _adam(lr, beta1, beta2, hp.eps)


@functools.lru_cache(maxsize=None)
def _adam(lr: float, beta1: float, beta2: float, eps: float) -> optax.GradientTransformation:
  """One object per setting, so equal Setups hash equal and reuse compiled steps."""
  return optax.adam(lr, b1=beta1, b2=beta2, eps=eps)


# --- state and static setup ------------------------------------------------------------------------

@flax.struct.dataclass
class StyleGAN2State:
  """Everything a resumed run needs; `step` counts minibatches (nimg = step · batch_size).

  G_ema shares G's buffers (the reference copies them into G_ema after every step).
  """
  step: jax.Array
  g_params: Any
  g_buffers: Any
  d_params: Any
  g_ema_params: Any
  g_opt_state: Any
  d_opt_state: Any
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


def make_setup(hp: Hparams, augment: diffaugment.DiffAugment, mesh=None) -> Setup:
  generator, discriminator = build_models(hp)
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
  return StyleGAN2State(
      step=jnp.zeros((), jnp.int32), g_params=g_vars["params"], g_buffers=g_vars["buffers"],
      d_params=d_params, g_ema_params=g_vars["params"],
      g_opt_state=setup.g_tx.init(g_vars["params"]), d_opt_state=setup.d_tx.init(d_params),
      pl_mean=jnp.zeros((), jnp.float32), rng=rng)


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
    buffers, pl_mean, total, scalars = state.g_buffers, state.pl_mean, 0.0, {}
    if phase in ("main", "both"):
      map_key, noise_key, aug_key = jax.random.split(main_key, 3)
      ws, buffers = mapped_latents(setup, g_params, buffers, map_key, c, n)
      fakes = synthesize(setup, g_params, buffers, ws, noise_key)
      fake_logits = discriminate(setup, state.d_params, fakes, c, aug_key)
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

  grads, (buffers, pl_mean, scalars) = jax.grad(loss_fn, has_aux=True)(state.g_params)
  updates, g_opt_state = setup.g_tx.update(grads, state.g_opt_state, state.g_params)
  state = state.replace(g_params=optax.apply_updates(state.g_params, updates), g_opt_state=g_opt_state,
                        g_buffers=buffers, pl_mean=pl_mean, rng=rng)
  return state, scalars


def discriminator_step(setup: Setup, state: StyleGAN2State, batch, phase: str):
  """D phase 'main' (logistic loss), 'reg' (R1 on reals × interval) or 'both'."""
  hp = setup.hp
  rng, gen_key, aug_fake_key, aug_real_key = jax.random.split(state.rng, 4)
  c = _labels(setup, batch)
  reals = batch["image"]
  buffers = state.g_buffers
  if phase in ("main", "both"):
    map_key, noise_key = jax.random.split(gen_key)
    ws, buffers = mapped_latents(setup, state.g_params, buffers, map_key, c, reals.shape[0])
    fakes = synthesize(setup, state.g_params, buffers, ws, noise_key)

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

  grads, scalars = jax.grad(loss_fn, has_aux=True)(state.d_params)
  updates, d_opt_state = setup.d_tx.update(grads, state.d_opt_state, state.d_params)
  state = state.replace(d_params=optax.apply_updates(state.d_params, updates), d_opt_state=d_opt_state,
                        g_buffers=buffers, rng=rng)
  return state, scalars


def ema_step(setup: Setup, state: StyleGAN2State) -> StyleGAN2State:
  """G_ema ← lerp(G, G_ema, β) with β = 0.5^(batch/ema_nimg); step + 1."""
  hp = setup.hp
  beta = losses.ema_beta(hp.batch_size, state.step * hp.batch_size, hp.ema_kimg, hp.ema_rampup)
  ema = jax.tree_util.tree_map(lambda p, e: p + (e - p) * beta, state.g_params, state.g_ema_params)
  return state.replace(g_ema_params=ema, step=state.step + 1)


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

def _sample(setup: Setup, params, buffers, z, c, noise_key, truncation_psi: float, noise_mode: str):
  return setup.generator.apply({"params": params, "buffers": buffers}, z, c, truncation_psi, noise_mode,
                               rngs={"noise": noise_key})


sample_jit = jax.jit(_sample, static_argnames=("setup", "truncation_psi", "noise_mode"))


def generate_uint8(setup: Setup, state: StyleGAN2State, key, num: int, labels: np.ndarray | None,
                   truncation_psi: float = 1.0, noise_mode: str = "random", batch_size: int = 64) -> np.ndarray:
  """`num` images from G_ema as uint8 (N, R, R, C), in fixed-size batches (one compile)."""
  hp = setup.hp
  out = []
  for start in range(0, num, batch_size):
    key_z, key_noise = jax.random.split(jax.random.fold_in(key, start))
    z = jax.random.normal(key_z, (batch_size, hp.z_dim), jnp.float32)
    c = None
    if hp.c_dim:
      idx = np.arange(start, start + batch_size) % len(labels)
      c = jax.nn.one_hot(jnp.asarray(labels[idx]), hp.c_dim)
    images = sample_jit(setup, state.g_ema_params, state.g_buffers, z, c, key_noise,
                        truncation_psi, noise_mode)
    out.append(writers.to_uint8(np.asarray(jax.device_get(images)), (-1.0, 1.0)))
  return np.concatenate(out)[:num]


# --- data ------------------------------------------------------------------------------------------

def load_training_images(config, hp: Hparams) -> pipeline.ArraySource:
  """The GAN's training set: resized, `channels` channels, [-1, 1], materialised once."""
  data_cfg = config.data
  source = datasets.get_source(data_cfg.source, data_cfg.split, data_cfg)
  label_key = data_cfg.label_key
  if data_cfg.get("class_filter") is not None:
    source = pipeline.filter_source(source, label_key, [int(data_cfg.class_filter)])
  if len(source) == 0:
    raise ValueError(f"no training images: {data_cfg.source} split {data_cfg.split!r} with "
                     f"class_filter={data_cfg.get('class_filter')}")
  preprocess = transforms.make_preprocess(dict(
      image_size=hp.resolution, channels=hp.channels, grayscale=False, equalize=bool(data_cfg.equalize),
      value_range="symmetric", resize_method=data_cfg.resize_method), training=False)
  data = pipeline.materialize(source, preprocess, seed=int(config.seed))
  labels = data.column(label_key).astype(np.int32)
  if hp.c_dim and (labels.min() < 0 or labels.max() >= hp.c_dim):
    raise ValueError(f"labels '{label_key}' span {labels.min()}..{labels.max()}, outside "
                     f"0..{hp.c_dim - 1} (config.data.num_classes={hp.c_dim})")
  return pipeline.ArraySource({"image": data.column("image").astype(np.float32), "label": labels})


def check_batch(batch: dict, hp: Hparams) -> None:
  images = np.asarray(batch["image"])
  expected = (hp.resolution, hp.resolution, hp.channels)
  if images.shape[1:] != expected or images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6:
    raise ValueError(f"first training batch: expected images (N, {expected}) in [-1, 1], got shape "
                     f"{images.shape} range [{images.min():.3f}, {images.max():.3f}]")


# --- snapshots -------------------------------------------------------------------------------------

class Snapshotter:
  """Metrics, leak check and sample grids at one kimg; keeps reports/metrics_history.json."""

  def __init__(self, config, setup: Setup, workdir: str, reals: pipeline.ArraySource, writer):
    self.config, self.setup, self.writer = config, setup, writer
    self.reports = os.path.join(workdir, "reports")
    os.makedirs(self.reports, exist_ok=True)
    self.history_path = os.path.join(self.reports, "metrics_history.json")
    eval_cfg = config.eval
    self.labels = reals.column("label")
    num_real = int(eval_cfg.num_real) or len(reals)
    pick = np.random.default_rng(int(config.seed)).permutation(len(reals))[:num_real]
    self.reals_uint8 = writers.to_uint8(reals.column("image")[np.sort(pick)], (-1.0, 1.0))
    key = jax.random.PRNGKey(int(eval_cfg.latent_seed))
    self.grid_key, self.metric_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    self.dataset = f"{config.data.source}:{config.data.split}:class_filter={config.data.get('class_filter')}"
    self.extractor = None
    self.real_leaks = diffaugment.leak_fractions(self.reals_uint8, setup.augment) if eval_cfg.leak_check else {}

  def get_extractor(self):
    """The named feature extractor (built once); 'randinit' sees images at `extractor_image_size`."""
    if self.extractor is None:
      from prepnet_jax.eval import gen_metrics
      spec, eval_cfg = self.config.eval.extractor, self.config.eval
      kwargs = {}
      if spec == "randinit":
        kwargs = dict(seed=int(eval_cfg.extractor_seed),
                      image_size=int(eval_cfg.extractor_image_size) or self.setup.hp.resolution)
      self.extractor = gen_metrics.get_extractor(spec, **kwargs)
    return self.extractor

  def load_history(self, kimg: float) -> list[dict]:
    """History up to `kimg` (entries from after the restored checkpoint are dropped)."""
    if not os.path.exists(self.history_path):
      return []
    with open(self.history_path) as f:
      return [r for r in json.load(f) if r["kimg"] <= kimg + 1e-9]

  def __call__(self, state: StyleGAN2State, history: list[dict]) -> dict:
    from prepnet_jax.eval import gen_metrics
    eval_cfg, hp = self.config.eval, self.setup.hp
    nimg = int(jax.device_get(state.step)) * hp.batch_size
    kimg = nimg / 1000.0
    record = {"kimg": kimg, "nimg": nimg, "step": int(jax.device_get(state.step))}
    if int(eval_cfg.num_generated) > 0:
      fakes = generate_uint8(self.setup, state, self.metric_key, int(eval_cfg.num_generated), self.labels,
                             float(eval_cfg.truncation_psi))
      records = gen_metrics.evaluate(self.reals_uint8, fakes, self.get_extractor(),
                                     dataset=self.dataset, metrics=tuple(eval_cfg.metrics))
      record.update(gen_metrics.as_scalars(records))
      record["records"] = records
      if eval_cfg.leak_check:
        record.update({f"fake_{k}": v for k, v in diffaugment.leak_fractions(fakes, self.setup.augment).items()})
        record.update({f"real_{k}": v for k, v in self.real_leaks.items()})
    grid = generate_uint8(self.setup, state, self.grid_key, int(eval_cfg.grid_size), self.labels,
                          float(eval_cfg.truncation_psi), noise_mode="const")
    grid = writers.image_grid(grid, ncols=int(math.ceil(math.sqrt(len(grid)))))
    writers.save_png(os.path.join(self.reports, f"fakes_{kimg:010.3f}.png"), grid)
    self.writer.write_images(nimg, {"fakes": grid[None]})
    numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    self.writer.write_scalars(nimg, {f"snapshot/{k}": v for k, v in numbers.items()})
    history.append(record)
    if jax.process_index() == 0:
      with open(self.history_path, "w") as f:
        json.dump(history, f, indent=2, default=str)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in numbers.items()
                      if k not in ("nimg", "step") and not k.endswith(("_std", "_noise_floor")))
    print(f"[stylegan2] snapshot {shown}", flush=True)
    return record


# --- training loop ---------------------------------------------------------------------------------

def restore_or_init(ckpt: checkpointing.Checkpointer, setup: Setup, seed: int):
  state = create_state(setup, seed)
  meta = {}
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    saved = meta.get("hparams", {})
    changed = [f"{k}: {saved[k]} → {getattr(setup.hp, k)}" for k in ARCH_FIELDS
               if k in saved and saved[k] != getattr(setup.hp, k)]
    if changed:
      raise ValueError(f"{ckpt.directory} holds a different architecture ({'; '.join(changed)}); "
                       f"use another --workdir or the original settings")
  return state, meta


def train_and_evaluate(config, workdir: str) -> dict:
  mesh = sharding.make_mesh()
  hp = resolve_hparams(config)
  sharding.local_batch_size(hp.batch_size, mesh)
  augment = diffaugment.DiffAugment(config.diffaugment.policy, float(config.diffaugment.translation_ratio),
                                    float(config.diffaugment.cutout_ratio))
  setup = make_setup(hp, augment, mesh)
  writer = writers.create_writer(workdir)
  reals = load_training_images(config, hp)
  print(f"[stylegan2] preset={config.preset} {hp.resolution}²×{hp.channels} on {config.data.source} "
        f"({len(reals)} images, class_filter={config.data.get('class_filter')}, c_dim={hp.c_dim}); "
        f"DiffAugment ops: {augment.describe(hp.channels)}; batch {hp.batch_size}, "
        f"{hp.total_kimg:g} kimg, {jax.device_count()} device(s)", flush=True)

  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), int(config.train.keep_checkpoints))
  state, meta = restore_or_init(ckpt, setup, int(config.seed))
  state = sharding.replicate(state, mesh)
  start = int(jax.device_get(state.step))
  if start:
    print(f"[stylegan2] resuming at step {start} ({start * hp.batch_size / 1000:g} kimg) from "
          f"{ckpt.directory}", flush=True)
  dataset = pipeline.train_dataset(reals, lambda ex, rng: ex, hp.batch_size, seed=int(config.seed))
  iterator = pipeline.make_iterator(dataset, meta.get("data_iterator"))
  snapshot = Snapshotter(config, setup, workdir, reals, writer)
  history = snapshot.load_history(start * hp.batch_size / 1000.0)
  total_steps = int(math.ceil(hp.total_kimg * 1000 / hp.batch_size))
  snapshot_steps = max(1, int(round(hp.snapshot_kimg * 1000 / hp.batch_size)))
  checkpoint_steps = max(1, int(round(hp.checkpoint_kimg * 1000 / hp.batch_size)))
  log_every = int(config.train.log_every_steps)
  if start == 0 and not history:
    snapshot(state, history)

  progress = writers.Progress(total_steps, log_every, "stylegan2", first_step=start)
  hparams_meta = dataclasses.asdict(hp)
  t0 = time.time()
  for step in range(start, total_steps):
    batch = next(iterator)
    if step == start:
      check_batch(batch, hp)
    state, scalars = train_step(setup, state, sharding.shard_batch(batch, mesh), step)
    done = step + 1
    if done % log_every == 0 or done % snapshot_steps == 0 or done == total_steps:
      scalars = {k: float(v) for k, v in jax.device_get(scalars).items()}
      checks.check_finite(scalars, done)
      scalars["kimg"] = done * hp.batch_size / 1000.0
      writer.write_scalars(done * hp.batch_size, {f"train/{k}": v for k, v in scalars.items()})
      progress(done, scalars, hp.batch_size)
    is_snapshot = done % snapshot_steps == 0 or done == total_steps
    if is_snapshot:
      snapshot(state, history)
    if is_snapshot or done % checkpoint_steps == 0:
      ckpt.save(done, jax.device_get(state), {
          "kimg": done * hp.batch_size / 1000.0, "nimg": done * hp.batch_size,
          "data_iterator": iterator.get_state(), "hparams": hparams_meta})
  if start < total_steps:
    logging.info("stylegan2: %d steps in %.1fs", total_steps - start, time.time() - t0)
  writer.flush()
  ckpt.close()
  return history[-1] if history else {}
