"""Images from a trained generative run (task 'sample'), for classifier augmentation.

`sample_images(workdir, step, num_images, seed, label)` rebuilds the model from
`<workdir>/config.json`, restores checkpoint `step` (None = latest) and returns uint8
(N, H, W, 1) images; `run` writes them as PNG files plus a grid and a manifest.
"""

from __future__ import annotations

import importlib
import json
import os

import jax
import numpy as np

from prepnet_jax.runtime import checkpointing, rundir, sharding, writers
from prepnet_jax.tasks.generative import common as gen_common

FAMILY_MODULES = {"gan": "prepnet_jax.tasks.generative.gan", "vae": "prepnet_jax.tasks.generative.vae", "vaegan": "prepnet_jax.tasks.generative.vaegan"}


def load_generator(workdir: str, step: int | None = None):
  """(family, state, training config, step) of checkpoint `step` (None = latest) of `workdir`."""
  config = rundir.read_config(workdir, "generative training")
  if config.task not in FAMILY_MODULES:
    raise ValueError(f"{workdir}/config.json has task={config.task!r}; sampling needs one of {sorted(FAMILY_MODULES)}")
  mesh = sharding.make_mesh()
  family = gen_common.build_family(importlib.import_module(FAMILY_MODULES[config.task]).make_family, config, mesh)
  abstract = jax.eval_shape(family.init_state, jax.random.key(0))
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), None)
  state, _ = ckpt.restore(abstract, step)
  return family, sharding.replicate(state, mesh), config, int(jax.device_get(state.step))


def _labels(family: gen_common.Family, config, num_images: int, label: int | None) -> np.ndarray:
  """Labels for a conditional G (`label`, or every class in turn); a check for the others."""
  if family.num_classes:
    if label is None:
      return gen_common.grid_labels(num_images, family.num_classes)
    if not 0 <= label < family.num_classes:
      raise ValueError(f"label={label} is not a class of this model (0..{family.num_classes - 1})")
    return np.full(num_images, label, np.int32)
  trained_on = list(config.data.class_filter)
  if label is not None and trained_on != [label]:
    raise ValueError(f"label={label} asked of an unconditional model trained on "
                     f"class_filter={trained_on or 'all classes'}; pass label=None")
  return np.zeros(num_images, np.int32)


def _generate(family, state, config, num_images: int, seed: int, label: int | None, batch_size: int = 256):
  if num_images < 1:
    raise ValueError(f"num_images must be positive, got {num_images}")
  z = gen_common.latents(seed, num_images, family.latent_dim)
  labels = _labels(family, config, num_images, label)
  images = gen_common.generate_images(family, state, z, labels, sharding.make_mesh(), batch_size)
  return gen_common.to_uint8(images)


def sample_images(workdir: str, step: int | None, num_images: int, seed: int,
                  label: int | None = None) -> np.ndarray:
  """uint8 (N, H, W, 1) images from checkpoint `step` (None or −1 = latest) of run `workdir`.

  z ~ N(0, I) from `seed` (same seed, same images); `label` picks the class of a conditional
  model (None = classes in turn). Unconditional models accept only label=None, or the one class
  they were trained on (`data.class_filter`).
  """
  step = None if step is None or step < 0 else step
  family, state, config, _ = load_generator(workdir, step)
  return _generate(family, state, config, num_images, seed, label)


def run(config, workdir: str) -> dict:
  if not config.source_workdir:
    raise ValueError("config.source_workdir is empty: set it to the training run to sample from")
  step = None if int(config.step) < 0 else int(config.step)
  family, state, train_config, step = load_generator(config.source_workdir, step)
  out_dir = config.out_dir or os.path.join(workdir, "samples")
  if family.num_classes and int(config.label) < 0:
    classes = list(range(family.num_classes))
  else:
    classes = [int(config.label) if int(config.label) >= 0 else None]
  written, grids = {}, []
  for cls in classes:
    images = _generate(family, state, train_config, int(config.num_images), int(config.seed), cls,
                       int(config.batch_size))
    folder = os.path.join(out_dir, f"class_{cls}") if family.num_classes else out_dir
    for i, image in enumerate(images):
      writers.save_png(os.path.join(folder, f"{train_config.model.kind}"
                                                  f"_step{step}_{i:05d}.png"), image)
    written[str(cls)] = len(images)
    grids.append(images[:64])
  grid = writers.image_grid(np.concatenate(grids), ncols=8)
  writers.save_png(os.path.join(out_dir, "grid.png"), grid)
  manifest = {"source_workdir": os.path.abspath(config.source_workdir), "step": step, "seed": int(config.seed),
              "task": train_config.task, "kind": train_config.model.kind,
              "images_per_class": written, "out_dir": os.path.abspath(out_dir)}
  with open(os.path.join(out_dir, "samples.json"), "w") as f:
    json.dump(manifest, f, indent=2)
  print(f"[sample] wrote {sum(written.values())} images from step {step} of {config.source_workdir} "
        f"to {out_dir}", flush=True)
  return manifest
