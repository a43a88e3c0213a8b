"""Images from any trained generator run (task 'sample'), as stylegan2-ada's `generate.py` makes them.

`run` loads checkpoint `step` of `source_workdir` through `eval.generators.load_generator`
(GAN, CGAN, DCGAN, WGAN(-GP), VAE, VAE-GAN or StyleGAN2, unconditional, conditional or one per
class) and writes, into `out_dir`:
  - one PNG per image: `seeds` gives one image per seed (`<kind>_step<k>_seed<s>.png`), else
    `num_images` from latent seed `seed` (`<kind>_step<k>_<i>.png`); per class in `class_<k>/`
    (every class of a conditional model unless `label` is set; the one class of a per-class run),
    directly in `out_dir` for an unconditional run over several classes;
  - `grid.png` (the first 64 of each class) and `reals.png`, the same number of the run's own
    training images (its data.train / train_split / class_filter) at its resolution;
  - `samples.json`, the manifest (source, step, seeds, ψ, noise mode, counts, files, seconds).
`sample_images` is the same as a function, for code that wants the array.
"""

from __future__ import annotations

import json
import os
import re
import time

import numpy as np

from prepnet_jax.eval import generators
from prepnet_jax.runtime import writers

GRID_PER_CLASS = 64


def parse_seeds(spec) -> list[int]:
  """'0-63', '0,1,2', '(0, 1, 2)', '0-3,10' or a sequence of ints → the seeds; '' → []."""
  if isinstance(spec, (list, tuple)):
    return [int(s) for s in spec]
  text = str(spec).strip().strip("()[]").replace(" ", "")
  seeds = []
  for part in filter(None, text.split(",")):
    match = re.fullmatch(r"(\d+)-(\d+)", part)
    if match:
      lo, hi = int(match.group(1)), int(match.group(2))
      if hi < lo:
        raise ValueError(f"seeds={spec!r}: range {part!r} runs backwards")
      seeds.extend(range(lo, hi + 1))
    elif re.fullmatch(r"\d+", part):
      seeds.append(int(part))
    else:
      raise ValueError(f"seeds={spec!r}: expected e.g. '0-63', '0,1,2' or '(0,1,2)'")
  return seeds


def sample_images(workdir: str, step: int | None, num_images: int, seed: int, label: int | None = None,
                  truncation_psi: float = 1.0, noise_mode: str = "const") -> np.ndarray:
  """uint8 (N, H, W, C) images from checkpoint `step` (None or −1 = latest) of run `workdir`
  (`TrainedGenerator.generate`: same seed, same images)."""
  generator = generators.load_generator(workdir, step)
  return generator.generate(num_images, seed, label, truncation_psi, noise_mode)


def _classes(generator: generators.TrainedGenerator, label: int) -> list[int | None]:
  """The classes to write: `label`, every class of a conditional model, or the run's one class."""
  if label >= 0:
    return [label]
  if generator.num_classes:
    return list(range(generator.num_classes))
  return [generator.classes[0]] if generator.classes else [None]


def run(config, workdir: str) -> dict:
  t0 = time.time()
  if not config.source_workdir:
    raise ValueError("config.source_workdir is empty: set it to the training run to sample from")
  generator = generators.load_generator(config.source_workdir, int(config.step))
  seeds = parse_seeds(config.seeds)
  out_dir = config.out_dir or os.path.join(workdir, "samples")
  psi, noise_mode, batch_size = float(config.truncation_psi), str(config.noise_mode), int(config.batch_size)
  generator.check_options(psi, noise_mode)
  prefix = f"{generator.kind}_step{generator.step}"
  written, files, grids = {}, {}, []
  for cls in _classes(generator, int(config.label)):
    if seeds:
      images = generator.generate_from_seeds(seeds, cls, psi, noise_mode, batch_size)
      names = [f"{prefix}_seed{s:05d}.png" for s in seeds]
    else:
      images = generator.generate(int(config.num_images), int(config.seed), cls, psi, noise_mode, batch_size)
      names = [f"{prefix}_{i:05d}.png" for i in range(len(images))]
    folder = out_dir if cls is None else os.path.join(out_dir, f"class_{cls}")
    for name, image in zip(names, images):
      writers.save_png(os.path.join(folder, name), image)
    written[str(cls)] = len(images)
    files[str(cls)] = os.path.relpath(folder, out_dir)
    grids.append(images[:GRID_PER_CLASS])
  fakes = np.concatenate(grids)
  writers.save_png(os.path.join(out_dir, "grid.png"), writers.image_grid(fakes, ncols=8))
  reals_written = 0
  if int(config.num_reals):
    reals = generators.training_images(generator, min(int(config.num_reals), len(fakes)), int(config.seed))
    writers.save_png(os.path.join(out_dir, "reals.png"), writers.image_grid(reals, ncols=8))
    reals_written = len(reals)
  manifest = {
      "source_workdir": generator.workdir, "task": generator.task, "kind": generator.kind, "step": generator.step,
      "num_classes": generator.num_classes, "classes": list(generator.classes),
      "seeds": seeds or None, "seed": None if seeds else int(config.seed),
      "truncation_psi": psi, "noise_mode": noise_mode, "images_per_class": written, "folders": files,
      "image_shape": list(fakes.shape[1:]), "out_dir": os.path.abspath(out_dir),
      "reals": {"file": "reals.png" if reals_written else None, "num_images": reals_written,
                "data": generator.training_data, "class_filter": list(generator.class_filter)},
      "seconds": round(time.time() - t0, 1)}
  with open(os.path.join(out_dir, "samples.json"), "w") as f:
    json.dump(manifest, f, indent=2)
  print(f"[sample] wrote {sum(written.values())} images from step {generator.step} of {config.source_workdir} "
        f"({generator.kind}, ψ={psi}, noise {noise_mode}) to {out_dir} in {manifest['seconds']} s", flush=True)
  return manifest
