"""StyleGAN2 + DiffAugment training (task 'stylegan2'), counted in kimg and resumable.

The loop follows stylegan2-ada-pytorch `training_loop.py`; the phases of one minibatch are in
`steps`, the presets and their resolution in `models.stylegan2_hparams`, the snapshots in
`snapshots`.

Everything lives in one `steps.StyleGAN2State` (a `TrainState` for G, with G_ema as its
`ema_params`, and one for D) checkpointed with the data-iterator position, so a rerun with the
same workdir continues at the same kimg with the same EMA weights, path-length mean and RNG
(`runtime.checkpointing.resume`; `resume_workdir`/`resume_step` branch from another run). A
checkpoint of another architecture (`stylegan2_hparams.ARCH_FIELDS`) is refused.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from prepnet_jax.data import diffaugment, pipeline
from prepnet_jax.eval import generators
from prepnet_jax.runtime import checkpointing, checks, precision, rundir, sharding, writers
from prepnet_jax.models.stylegan2_hparams import ARCH_FIELDS, Hparams, resolve_hparams
from prepnet_jax.tasks.stylegan2.snapshots import Snapshotter
from prepnet_jax.tasks.stylegan2.steps import Setup, create_state, make_setup, train_step

# --- data ------------------------------------------------------------------------------------------

def load_training_images(config, hp: Hparams) -> tuple[Any, pipeline.Preprocess]:
  """(source, preprocess) of the GAN's training set: examples {'image': float32 (R, R, C) in
  [-1, 1], 'label': int32}, kept preprocessed in memory when they fit in `config.data.cache_mb`,
  else read and preprocessed on every access (`pipeline.cache_if_small`). The labels are checked
  without decoding an image."""
  source, preprocess = generators.training_set(config.data, config.preprocess, hp.resolution, hp.channels)
  labels = pipeline.column(source, "label")
  if hp.c_dim and (labels.min() < 0 or labels.max() >= hp.c_dim):
    raise ValueError(f"labels '{config.data.label_key}' span {labels.min()}..{labels.max()}, outside "
                     f"0..{hp.c_dim - 1} (config.data.num_classes={hp.c_dim})")
  return pipeline.cache_if_small(source, preprocess, float(config.data.cache_mb), seed=int(config.seed))


def check_batch(batch: dict, hp: Hparams) -> None:
  images = np.asarray(batch["image"])
  expected = (hp.resolution, hp.resolution, hp.channels)
  if images.shape[1:] != expected or images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6:
    raise ValueError(f"first training batch: expected images (N, {expected}) in [-1, 1], got shape "
                     f"{images.shape} range [{images.min():.3f}, {images.max():.3f}]")


# --- training loop ---------------------------------------------------------------------------------

def restore_or_init(config, workdir: str, ckpt: checkpointing.Checkpointer, setup: Setup):
  """`checkpointing.resume` from a fresh state, refusing a checkpoint of another architecture."""
  state, meta, how = checkpointing.resume(ckpt, create_state(setup, int(config.seed)), workdir,
                                          resume_workdir=config.resume_workdir,
                                          resume_step=int(config.resume_step))
  saved = meta.get("hparams", {})
  changed = [f"{k}: {saved[k]} → {getattr(setup.hp, k)}" for k in ARCH_FIELDS
             if k in saved and saved[k] != getattr(setup.hp, k)]
  if changed:
    raise ValueError(f"the checkpoint ({how}) holds a different architecture ({'; '.join(changed)}); "
                     f"use another --workdir or the original settings")
  return state, meta, how


def train_and_evaluate(config, workdir: str) -> dict:
  mesh = sharding.make_mesh()
  hp = resolve_hparams(config)
  sharding.local_batch_size(hp.batch_size, mesh)
  augment = diffaugment.DiffAugment(config.diffaugment.policy, float(config.diffaugment.translation_ratio),
                                    float(config.diffaugment.cutout_ratio))
  setup = make_setup(hp, augment, mesh, precision.compute_dtype(config))
  rundir.write_config(config, workdir, overwrite=False)  # what eval.generators rebuilds G from
  writer = writers.create_writer(workdir)
  reals, preprocess = load_training_images(config, hp)
  print(f"[stylegan2] preset={config.preset} {hp.resolution}²×{hp.channels} on {config.data.train} "
        f"({len(reals)} images, class_filter={config.data.class_filter}, c_dim={hp.c_dim}); "
        f"DiffAugment ops: {augment.describe(hp.channels)}; batch {hp.batch_size}, "
        f"{hp.total_kimg:g} kimg, {jax.device_count()} device(s)", flush=True)

  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), int(config.keep_checkpoints))
  state, meta, how = restore_or_init(config, workdir, ckpt, setup)
  state = sharding.replicate(state, mesh)
  start = int(jax.device_get(state.step))
  print(f"[stylegan2] {how} (step {start}, {start * hp.batch_size / 1000:g} kimg)", flush=True)
  dataset = pipeline.train_dataset(reals, preprocess, hp.batch_size, seed=int(config.seed))
  iterator = pipeline.make_iterator(dataset, meta.get("data_iterator"), pipeline.loader_options(config.data))
  snapshot = Snapshotter(config, setup, workdir, reals, preprocess, writer)
  history = snapshot.load_history(start * hp.batch_size / 1000.0)
  total_steps = int(math.ceil(hp.total_kimg * 1000 / hp.batch_size))
  snapshot_steps = max(1, int(round(hp.snapshot_kimg * 1000 / hp.batch_size)))
  checkpoint_steps = max(1, int(round(hp.checkpoint_kimg * 1000 / hp.batch_size)))
  log_every = int(config.log_every_steps)
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
    if step == start:  # the first step also compiled: no guide to the speed of the others
      jax.block_until_ready(state)
      progress.restart_rate(done)
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
