"""What the GAN, VAE and VAE-GAN loops share: network states, the chest X-ray training images,
resume ("second wind"), sample grids, the Fréchet-distance hook and the loop itself.

Each family module (`gan.py`, `vae.py`, `vaegan.py`) builds its models, state (one
`runtime.state.TrainState` per network) and jitted step and hands them to `fit` as a `Family`. The loop follows the thesis's
protocol: `num_steps` iterations of `batch_size`, a grid of fixed latents every
`sample_every` steps, a checkpoint (all kept by default) and the Fréchet distance every
`save_every` steps and at the end, plus one at initialisation (step 0). reports/ holds the
sample grids (`samples_<step>.png`), `reals.png` (training images at the grids' layout), the
metric history (`fd_history.json`) and its curves (`curve_<metric>.png`).

Resume (`runtime.checkpointing.resume`): a rerun with the same workdir continues from its
latest checkpoint. `resume_step=k` restarts from step k — from `resume_workdir` into a new
workdir (the thesis's "second wind": the original run keeps every checkpoint), or in place when
k is the latest step. config.json and reports go through `runtime.rundir`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from prepnet_jax.data import pipeline, transforms
from prepnet_jax.eval import figures, generators
from prepnet_jax.runtime import checkpointing, checks, compile_cache, rundir, sharding, writers
from prepnet_jax.runtime.state import TrainState

# --- network state -------------------------------------------------------------------------------

def create_net(model, tx: optax.GradientTransformation, rng: jax.Array, *inputs, **kwargs) -> TrainState:
  """The `TrainState` of one network, initialised from `rng` on `inputs` (several positional
  inputs: G's (z, labels), the VAE's (images, noise key)). The state's `rng` is that init key:
  the training step draws its randomness from the model state's own `rng`, one stream for every
  network."""
  variables = model.init({"params": rng, "dropout": rng}, *inputs, train=False, **kwargs)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params), rng=rng, apply_fn=model.apply, tx=tx)


def select_tree(condition: jax.Array, new, old):
  """`new` where `condition` holds, else `old` (skipping an update inside a jitted step)."""
  return jax.tree_util.tree_map(lambda a, b: jnp.where(condition, a, b), new, old)


def with_data_sharding(x: jax.Array, mesh) -> jax.Array:
  """Splits an in-step array (latents, noise) over the data axis like the batch."""
  return jax.lax.with_sharding_constraint(x, sharding.data_sharding(mesh))


# --- the family protocol -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Family:
  """What `fit` needs from a generative family.

  init_state(rng) -> a fresh state (a pytree with a `step` field);
  train_step(state, batch) -> (state, scalars), jitted; batch['image'] is
    (B, batches_per_step, S, S, C) in [−1, 1] and batch['label'] (B, batches_per_step);
  generate(state, z, labels) -> images in [−1, 1], jitted;
  latent_dim and num_classes (0 = unconditional) of the generator.
  """
  name: str
  init_state: Callable[[jax.Array], Any]
  train_step: Callable[[Any, dict], tuple[Any, dict]]
  generate: Callable[[Any, jax.Array, jax.Array], jax.Array]
  latent_dim: int
  num_classes: int = 0
  batches_per_step: int = 1


# Config fields that change what runs, not what is compiled (data, schedule, metrics).
LOOP_FIELDS = ("seed", "preset", "data", "batch_size", "num_steps", "sample_every", "save_every",
               "log_every_steps", "num_grid_images", "keep_checkpoints", "resume_step", "resume_workdir", "fd")


def compiled_part(config) -> ml_collections.ConfigDict:
  """The config without `LOOP_FIELDS`: what a family's modules, optimizers and steps depend on."""
  return ml_collections.ConfigDict({k: v for k, v in config.to_dict().items() if k not in LOOP_FIELDS})


def build_family(make_family: Callable[[Any, Any], Family], config, mesh) -> Family:
  """`make_family(config, mesh)` through `compile_cache.build_once`, reused for configs that
  differ only in `LOOP_FIELDS`, so a resumed run or repeated sampling in one process does not
  recompile its steps."""
  return compile_cache.build_once(make_family, compiled_part(config), mesh)


# --- data ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainingImages:
  """The chest X-rays a generator learns, as sources the input pipeline reads (`load_training_images`).

  train_source/train_preprocess: what training batches are read from: without augmentation the
    preprocessed examples in memory when they fit in `config.data.cache_mb`, else the examples
    as stored, preprocessed on every read;
  real_source/real_preprocess: the same images without augmentation (the real side of the
    Fréchet distance, streamed in order);
  labels: the int32 label of every example (read without decoding an image).
  Examples are {'image': float32 (S, S, C) in [−1, 1], 'label': int32} once preprocessed.
  """
  train_source: Any
  train_preprocess: Callable
  real_source: Any
  real_preprocess: Callable
  labels: np.ndarray


def load_training_images(config) -> TrainingImages:
  """The chest X-rays the generator learns, for `config.data` / `config.preprocess`."""
  size, channels = int(config.preprocess.image_size), int(config.preprocess.channels)
  source, eval_pre = generators.training_set(config.data, config.preprocess, size, channels)
  labels = pipeline.column(source, "label")
  if transforms.augments(config.preprocess.augment):
    train_pre = transforms.make_preprocess(config.preprocess, training=True)
    return TrainingImages(source, train_pre, source, eval_pre, labels)
  cached, cached_pre = pipeline.cache_if_small(source, eval_pre, float(config.data.cache_mb), seed=int(config.seed))
  return TrainingImages(cached, cached_pre, cached, cached_pre, labels)


def check_image_range(images: np.ndarray, config) -> None:
  """Generators are trained on [−1, 1] images of the model's size and channels; fail early."""
  size, channels = int(config.preprocess.image_size), int(config.preprocess.channels)
  if images.dtype != np.float32 or images.shape[1:] != (size, size, channels):
    raise ValueError(f"training images are {images.dtype} {images.shape[1:]}, expected float32 "
                     f"({size}, {size}, {channels}) from config.preprocess")
  lo, hi = float(images.min()), float(images.max())
  if not (-1.0 - 1e-5 <= lo and hi <= 1.0 + 1e-5):
    raise ValueError(f"training images span [{lo:.3f}, {hi:.3f}], expected [-1, 1]; set "
                     f"config.preprocess.value_range='symmetric' (got {config.preprocess.value_range!r})")


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[−1, 1] float images → uint8, as saved PNGs hold them (thesis: (0.5 x + 0.5) · 255)."""
  return writers.to_uint8(np.asarray(images), value_range=(-1.0, 1.0))


# --- sample grids ---------------------------------------------------------------------------------

def save_sample_grid(writer, workdir: str, step: int, images: np.ndarray, ncols: int) -> str:
  grid = writers.image_grid(to_uint8(images), ncols=ncols)
  writer.write_images(step, {"samples": grid[None]})
  return writers.save_png(os.path.join(rundir.reports_dir(workdir), f"samples_{step:06d}.png"), grid)


def save_real_grid(workdir: str, images: TrainingImages, grid_labels: np.ndarray, conditional: bool,
                   ncols: int) -> str:
  """`reports/reals.png`: training images laid out as the sample grids, for comparison; in a
  conditional run each cell holds a real image of the class its fake is generated for. The
  images are spread evenly over the set (its first ones are often one patient's slices)."""
  labels = np.asarray(images.labels)
  picks = []
  for cell, label in enumerate(grid_labels):
    members = np.flatnonzero(labels == label) if conditional else np.arange(len(labels))
    members = members if len(members) else np.arange(len(labels))
    same = np.flatnonzero(grid_labels == label) if conditional else np.arange(len(grid_labels))
    rank = int(np.searchsorted(same, cell))
    picks.append(int(members[rank * len(members) // len(same)]))
  reals = pipeline.materialize(pipeline.SubsetSource(images.real_source, picks), images.real_preprocess)
  grid = writers.image_grid(to_uint8(reals.column("image")), ncols=ncols)
  return writers.save_png(os.path.join(rundir.reports_dir(workdir), "reals.png"), grid)


# --- Fréchet distance ----------------------------------------------------------------------------

def make_metric_hook(config, real_batches: Callable[[], Iterable[np.ndarray]]
                     ) -> tuple[str, Callable[[np.ndarray, int], dict]]:
  """(FD metric name, fn(fake_uint8, step) → record) against the training images.

  The extractor comes from `config.fd.extractor` ('randinit' by default, at the training
  resolution unless `fd.extractor_image_size` is set), so the metric is `fd_randinit`, never
  'fid'. `real_batches()` streams the real uint8 images; their features are extracted once, at
  the first call, and kept (the images are not).
  """
  from prepnet_jax.eval import gen_metrics
  spec = config.fd.extractor
  kwargs = {}
  if spec == "randinit":
    size = int(config.fd.extractor_image_size) or int(config.preprocess.image_size)
    kwargs = dict(seed=int(config.fd.extractor_seed), image_size=size)
  extractor = gen_metrics.get_extractor(spec, **kwargs)
  fd_name = gen_metrics.metric_name("fd", extractor)
  dataset = f"{config.data.train}:{config.data.train_split}:{config.data.label_key}{list(config.data.class_filter)}"
  options = gen_metrics.MetricOptions(metrics=tuple(config.fd.metrics))
  real = None

  def evaluate(fake_uint8: np.ndarray, step: int) -> dict:
    nonlocal real
    if real is None:
      real = gen_metrics.streamed_real_stats(real_batches(), extractor, dataset=dataset, options=options)
    records = gen_metrics.evaluate(real, fake_uint8, extractor, dataset=dataset, metrics=options.metrics)
    return {"step": int(step), **gen_metrics.as_scalars(records), "records": records}

  return fd_name, evaluate


# --- checkpoints -------------------------------------------------------------------------------

def open_checkpointer(workdir: str, config) -> checkpointing.Checkpointer:
  keep = int(config.keep_checkpoints)
  return checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), keep if keep > 0 else None)


# --- the loop ------------------------------------------------------------------------------------

def fit(config, workdir: str, family: Family, mesh) -> dict:
  """Trains `family` to `config.num_steps` with auto-resume; returns {"fd_history", "state"}."""
  writer = writers.create_writer(workdir)
  rundir.write_config(config, workdir, overwrite=False)
  batch_size, k = int(config.batch_size), family.batches_per_step
  sharding.local_batch_size(batch_size, mesh)
  images = load_training_images(config)
  train_source, labels = images.train_source, images.labels
  fraction = float(config.data.balance_fraction)
  balance = ("label", 1, fraction) if fraction else None
  if len(train_source) < batch_size:  # tiny per-class sets: repeat them (the thesis samples with replacement)
    train_source = pipeline.ConcatSource([train_source], repeats=[-(-batch_size // len(train_source))])
  dataset = pipeline.train_dataset(train_source, images.train_preprocess, batch_size, seed=int(config.seed),
                                   balance=balance)
  check_image_range(dataset[0]["image"], config)
  print(f"[{family.name}] on {config.data.train}:{config.data.train_split} "
        f"({len(labels)} images, labels {np.bincount(labels).tolist()}), "
        f"{int(config.preprocess.image_size)}², {jax.device_count()} device(s)", flush=True)

  state = family.init_state(jax.random.key(int(config.seed)))
  ckpt = open_checkpointer(workdir, config)
  state, meta, how = checkpointing.resume(ckpt, state, workdir, resume_workdir=config.resume_workdir,
                                          resume_step=int(config.resume_step))
  print(f"[{family.name}] {how}", flush=True)
  state = sharding.replicate(state, mesh)
  iterator = pipeline.make_iterator(dataset, meta.get("iterator"), pipeline.loader_options(config.data))
  fd_history = list(meta.get("fd_history", []))

  num_steps = int(config.num_steps)
  def fakes(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return generators.generate_in_chunks(lambda zb, lb, start: family.generate(state, zb, lb), z, labels, mesh)

  num_grid = int(config.num_grid_images)
  ncols = int(np.ceil(np.sqrt(num_grid)))
  grid_z = generators.latents(int(config.seed) + 1, num_grid, family.latent_dim)
  grid_y = generators.grid_labels(num_grid, family.num_classes, ncols)
  if jax.process_index() == 0 and not os.path.exists(os.path.join(rundir.reports_dir(workdir), "reals.png")):
    save_real_grid(workdir, images, grid_y, bool(family.num_classes), ncols)
  fd_enabled = bool(config.fd.enabled)
  num_real = int(config.fd.num_real)
  real_source = images.real_source
  if 0 < num_real < len(real_source):
    real_source = pipeline.SubsetSource(real_source, np.arange(num_real))

  def real_batches():
    return generators.uint8_batches(real_source, images.real_preprocess,
                                    options=pipeline.loader_options(config.data))

  fd_name, fd_hook = make_metric_hook(config, real_batches) if fd_enabled else ("", None)
  num_fake = int(config.fd.num_fake)
  fd_z = generators.latents(int(config.seed) + 2, num_fake, family.latent_dim)
  fd_y = np.resize(labels, num_fake).astype(np.int32) if family.num_classes else np.zeros(num_fake, np.int32)

  def checkpoint(step: int) -> None:
    if fd_enabled and not any(r["step"] == step for r in fd_history):
      record = fd_hook(to_uint8(fakes(fd_z, fd_y)), step)
      fd_history.append(record)
      writer.write_scalars(step, {name: v for name, v in record.items() if name not in ("step", "records")})
      print(f"[{family.name}] step {step}: {fd_name}={record[fd_name]:.4g} (noise floor "
            f"{record.get(fd_name + '_noise_floor', float('nan')):.4g}; N_real={len(real_source)}, N_gen={num_fake})",
            flush=True)
      rundir.write_report(workdir, "fd_history", {"metric": fd_name, "history": fd_history})
      if jax.process_index() == 0:
        figures.history_curves(rundir.reports_dir(workdir), fd_history, "step", "training step", family.name)
    meta = {"iterator": iterator.get_state(), "fd_history": fd_history}
    ckpt.save(step, jax.device_get(state), meta)

  start = int(jax.device_get(state.step))
  if start == 0 and ckpt.latest_step() is None:
    save_sample_grid(writer, workdir, 0, fakes(grid_z, grid_y), ncols)
    checkpoint(0)
  progress = writers.Progress(num_steps, int(config.log_every_steps), family.name, first_step=start)
  t0 = time.time()
  for step in range(start + 1, num_steps + 1):
    batches = [next(iterator) for _ in range(k)]  # k independent batches: (B, k, ...)
    batch = {key: np.stack([b[key] for b in batches], axis=1) for key in ("image", "label")}
    state, scalars = family.train_step(state, sharding.shard_batch(batch, mesh))
    is_save = step % int(config.save_every) == 0 or step == num_steps
    if step % int(config.log_every_steps) == 0 or is_save:
      scalars = jax.device_get(scalars)
      checks.check_finite(scalars, step)
      writer.write_scalars(step, {f"train/{key}": value for key, value in scalars.items()})
      progress(step, scalars, batch_size)
    if step % int(config.sample_every) == 0 or step == num_steps:
      save_sample_grid(writer, workdir, step, fakes(grid_z, grid_y), ncols)
    if is_save:
      checkpoint(step)
  if start < num_steps:
    logging.info("%s: trained %d steps in %.1fs", family.name, num_steps - start, time.time() - t0)
  summary = {"metric": fd_name, "num_steps": num_steps, "train_seconds_this_run": round(time.time() - t0, 1),
             "initial": fd_history[0].get(fd_name) if fd_history else None,
             "final": fd_history[-1].get(fd_name) if fd_history else None,
             "history": {r["step"]: r.get(fd_name) for r in fd_history}}
  rundir.write_report(workdir, "summary", summary)
  writer.flush()
  return {"fd_history": fd_history, "state": state}
