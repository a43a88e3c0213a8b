"""Standalone generative-metrics job (task 'gen_metrics'): generated images vs real ones.

Generated images come from a folder of images (`generated.folder`) or from a generator run
(`generated.workdir`: any GAN/VAE/VAE-GAN/StyleGAN2 run, sampled through
`eval.generators.load_generator`, with StyleGAN2's `truncation_psi` and `noise_mode`). Real images
come from a folder of images (`real.folder`: folder-vs-folder, like clean-fid's `compare_folders`)
or from any dataset reference (`data.train`, `data.train_split`, optional class filter on
`data.label_key`). By default the real images are first brought to the generated images' size and
channel count (`real.match_generated`), so both sets take the same path into the extractor
(comparing 256² fakes with 1024² reals is a classic FID mistake); turn it off to resize each image
straight to the extractor's input, as clean-fid and pytorch-fid do. The Inception resize rule is
`inception.resize_mode` (feature_extractors.RESIZE_MODES). Writes `reports/gen_metrics.json` and
`reports/gen_metrics.md`.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
from absl import logging

from prepnet_jax.data import datasets, image_folder, pipeline, transforms
from prepnet_jax.eval import feature_extractors, gen_metrics, generators
from prepnet_jax.runtime import rundir


def load_generated(config) -> tuple[list[np.ndarray] | np.ndarray, dict]:
  """(uint8 images, description) from `generated.folder` or `generated.workdir`."""
  gen = config.generated
  num = int(gen.num_images)
  if bool(gen.folder) == bool(gen.workdir):
    raise ValueError("set exactly one of config.generated.folder (PNG files) and "
                     f"config.generated.workdir (a generator run); got folder={gen.folder!r}, "
                     f"workdir={gen.workdir!r}")
  if gen.folder:
    files = folder_files("generated.folder", gen.folder)
    files = files[:num] if num > 0 else files
    images = [image_folder.decode_image(f) for f in files]
    return images, dict(source="folder", folder=os.path.abspath(gen.folder), num_images=len(images))
  if num <= 0:
    raise ValueError(f"config.generated.num_images must be positive to sample a generator, got {num}")
  step = None if int(gen.step) < 0 else int(gen.step)
  label = None if int(gen.label) < 0 else int(gen.label)
  generator = generators.load_generator(gen.workdir, step)
  images = generator.generate(num, int(config.seed), label, float(gen.truncation_psi), gen.noise_mode)
  return images, dict(source="checkpoint", workdir=os.path.abspath(gen.workdir), task=generator.task,
                      kind=generator.kind, step=generator.step, label=label, seed=int(config.seed),
                      truncation_psi=float(gen.truncation_psi), noise_mode=gen.noise_mode, num_images=len(images))


def folder_files(field: str, folder: str) -> list[pathlib.Path]:
  """Image files below `config.<field>` (recursive, sorted); a clear error when there are none."""
  path = pathlib.Path(folder)
  if not path.is_dir():
    raise FileNotFoundError(f"config.{field}={folder!r} is not a directory")
  files = image_folder.list_images(path)
  if not files:
    raise FileNotFoundError(f"config.{field}={folder!r} holds no image files "
                            f"({', '.join(image_folder.IMAGE_EXTENSIONS)}, searched recursively)")
  return files


def load_real(config, like: np.ndarray | None) -> tuple[list[np.ndarray], dict]:
  """uint8 real images of `real.folder`, or of `data.train`/`data.train_split` (class filter);
  a seeded subset of `real.max_images` when there are more."""
  real = config.real
  labels = tuple(int(v) for v in (real.labels or ()))
  if real.folder:
    if labels:
      raise ValueError(f"config.real.labels={list(labels)} filters a dataset by class, but "
                       f"config.real.folder={real.folder!r} has no labels; unset one of them")
    files = folder_files("real.folder", real.folder)

    def read(i):
      return image_folder.decode_image(files[i])

    available, described = len(files), f"real.folder={os.path.abspath(real.folder)}"
    info = dict(source="folder", folder=os.path.abspath(real.folder))
  else:
    dataset, split, label_key = config.data.train, config.data.train_split, config.data.label_key
    source = datasets.get_source(dataset, split, config.data)
    if labels:
      source = pipeline.filter_source(source, label_key, labels)

    def read(i):
      return np.asarray(source[i]["image"])

    available, described = len(source), f"{dataset}:{split}"
    if labels:
      described += f":{label_key}in{list(labels)}"
    info = dict(dataset=dataset, split=split, label_key=label_key, labels=list(labels))
  if available < 2:
    raise ValueError(f"real set {described!r} has {available} images; need at least 2")
  index = np.arange(available)
  if 0 < int(real.max_images) < available:
    rng = np.random.default_rng(int(config.seed))
    index = np.sort(rng.choice(available, int(real.max_images), replace=False))
  images = []
  for i in index:
    image = read(int(i))
    if image.dtype != np.uint8:
      raise TypeError(f"real set {described!r} gives {image.dtype} images; generative metrics "
                      "compare 8-bit images (use an 8-bit export or window CT slices first)")
    if like is not None:
      image = transforms.set_channels(image, like.shape[-1])
      image = transforms.resize(image, like.shape[:2], real.resize_method)
    images.append(image)
  preprocessing = "as stored"
  if like is not None:
    preprocessing = (f"{real.resize_method} resize (uint8) to the generated {like.shape[0]}x{like.shape[1]}, "
                     f"{like.shape[-1]} channel(s)")
    described += f":matched_{like.shape[0]}x{like.shape[1]}x{like.shape[-1]}_{real.resize_method}"
  return images, dict(**info, num_images=len(images), available=available, preprocessing=preprocessing,
                      reference=described)


def _extractor_kwargs(config, spec: str) -> dict:
  kind = spec.partition(":")[0]
  kwargs = {"batch_size": int(config.batch_size)}
  if kind == "inception":
    kwargs.update(weights_path=config.inception.weights_path, sha256=config.inception.sha256 or None,
                  resize_mode=config.inception.resize_mode)
  elif kind == "randinit":
    kwargs.update(seed=int(config.randinit.seed), image_size=int(config.randinit.image_size),
                  widths=tuple(config.randinit.widths))
  elif kind == "classifier":
    kwargs.update(step=None if int(config.classifier_step) < 0 else int(config.classifier_step))
  return kwargs


def make_extractors(config) -> list[feature_extractors.FeatureExtractor]:
  """The configured extractors; a missing Inception file falls back only if allowed."""
  extractors, seen = [], set()
  for spec in [s.strip() for s in config.extractors.split(",") if s.strip()]:
    extractor = feature_extractors.get_extractor_or_fallback(
        spec, allow_fallback=bool(config.allow_fallback), fallback=config.fallback_extractor,
        fallback_kwargs=_extractor_kwargs(config, config.fallback_extractor),
        **_extractor_kwargs(config, spec))
    key = (extractor.name, extractor.weights_sha256, extractor.resize)
    if key in seen:
      logging.info("extractor %s (%s) already evaluated; skipping the duplicate from %r",
                   extractor.name, extractor.weights_sha256[:12], spec)
      continue
    seen.add(key)
    extractors.append(extractor)
  if not extractors:
    raise ValueError(f"config.extractors={config.extractors!r} names no extractor")
  return extractors


def run(config, workdir: str) -> dict:
  # Before any image is read; and a fallback (missing weights) must not let a mistyped mode pass.
  feature_extractors.check_resize_mode(config.inception.resize_mode, "config.inception.resize_mode")
  generated, gen_info = load_generated(config)
  like = np.asarray(generated[0]) if bool(config.real.match_generated) else None  # H x W x C
  real, real_info = load_real(config, like)
  m = config.metrics
  options = dict(metrics=tuple(s.strip() for s in m.names.split(",") if s.strip()),
                 kid_subsets=int(m.kid_subsets), kid_subset_size=int(m.kid_subset_size), pr_k=int(m.pr_k),
                 is_splits=int(m.is_splits), fd_eps=float(m.fd_eps), seed=int(config.seed))
  cache_dir = config.cache_dir or os.path.join(workdir, "cache")
  label = gen_info.get("label")
  records = []
  for extractor in make_extractors(config):
    print(f"[gen_metrics] {extractor.name}: {len(real)} real vs {len(generated)} generated images "
          f"({extractor.description})", flush=True)
    records += gen_metrics.evaluate(real, generated, extractor, dataset=real_info["reference"], label=label,
                                    cache_dir=cache_dir, **options)
  table = gen_metrics.format_table(records)
  print(table, flush=True)
  result = dict(records=records, generated=gen_info, real=real_info)
  rundir.write_report(workdir, "gen_metrics", result,
                      f"# Generative metrics\n\nGenerated: {json.dumps(gen_info)}\n\nReal: {json.dumps(real_info)}\n\n"
                      "Noise floor = the same metric between two random halves of the real set. "
                      "Only `fid`/`kid`/`is` use the standard FID Inception-v3: without a suffix with "
                      "clean-fid's 'clean' resize, with `_legacy_pytorch`/`_legacy_tensorflow` with "
                      "pytorch-fid's/TTUR's resize.\n\n"
                      f"{table}\n")
  return result
