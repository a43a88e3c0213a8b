"""The training examples of each arm: real images plus N extra per class (copies, classical
variants or generator samples), so every arm sees the same class mix."""

from __future__ import annotations

import dataclasses

import numpy as np

from prepnet_jax.data import classical_augment, pipeline
from prepnet_jax.eval.generators import load_generator

ARMS = ("none", "classical", "oversample", "synthetic")
KEPT_FIELDS = ("image", "label", "patient")
SAMPLE_SEED_OFFSET = 10_000  # synthetic images of seed s come from latents seeded 10000 + s


def extra_counts(labels: np.ndarray, per_class, num_classes: int) -> np.ndarray:
  """Extra images per class: `per_class[k]` ≥ 0 as given, −1 = up to the largest class's count."""
  per_class = [int(n) for n in per_class]
  if len(per_class) != num_classes or any(n < -1 for n in per_class):
    raise ValueError(f"extra.per_class={tuple(per_class)}: expected {num_classes} integers, each ≥ 0 "
                     f"or -1 (= fill the class up to the largest class)")
  counts = np.bincount(np.asarray(labels, int), minlength=num_classes)
  return np.asarray([counts.max() - counts[k] if n == -1 else n for k, n in enumerate(per_class)], np.int64)


class FieldsSource:
  """Only `KEPT_FIELDS` of each example, so real and extra examples collate into one batch."""

  def __init__(self, source, fields=KEPT_FIELDS):
    self.source, self.fields = source, tuple(fields)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict:
    example = self.source[i]
    return {key: example[key] for key in self.fields}

  def column(self, key: str) -> np.ndarray:
    return pipeline.column(self.source, key)


def _per_class_draws(labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> list[int]:
  """Indices of real images to copy or augment: each class's images in a seeded order, cycled,
  so every image of a class is used equally often (± 1)."""
  picks = []
  for k, n in enumerate(counts):
    members = np.flatnonzero(labels == k)
    if n and not len(members):
      raise ValueError(f"extra.per_class asks for {n} images of class {k}, which has no training images")
    if n:
      order = rng.permutation(members)
      picks.extend(order[np.arange(n) % len(order)].tolist())
  return picks


def _object_array(items: list) -> np.ndarray:
  out = np.empty(len(items), dtype=object)
  out[:] = items
  return out


def oversampled_images(real, counts: np.ndarray, seed: int) -> pipeline.SubsetSource:
  """`counts[k]` duplicates of real class-k images (sampling without replacement, cycled)."""
  labels = pipeline.column(real, "label").astype(int)
  return pipeline.SubsetSource(real, _per_class_draws(labels, counts, np.random.default_rng([seed, 1])))


def classical_images(real, counts: np.ndarray, preset: str, seed: int) -> pipeline.ArraySource:
  """`counts[k]` ImageDataGenerator variants of real class-k images (thesis §2.5, offline)."""
  if preset not in classical_augment.PRESETS:
    raise ValueError(f"classical.preset={preset!r}; expected one of {sorted(classical_augment.PRESETS)}")
  params = classical_augment.PRESETS[preset]
  labels = pipeline.column(real, "label").astype(int)
  picks = _per_class_draws(labels, counts, np.random.default_rng([seed, 2]))
  images, out_labels, patients = [], [], []
  for draw, index in enumerate(picks):
    example = real[index]
    rng = np.random.default_rng([seed, 3, draw])
    images.append(classical_augment.augment_image(rng, np.asarray(example["image"]), params))
    out_labels.append(int(example["label"]))
    patients.append(str(example["patient"]))
  return pipeline.ArraySource({"image": _object_array(images), "label": np.asarray(out_labels, np.int32),
                               "patient": _object_array(patients)})


@dataclasses.dataclass(frozen=True)
class Generator:
  """A generator checkpoint and the class it supplies (`label=None`: conditional, any class)."""
  workdir: str
  label: int | None
  trained_here: bool


def synthetic_images(generators: list[Generator], counts: np.ndarray, step: int, seed: int,
                     truncation_psi: float = 1.0, noise_mode: str = "random") -> pipeline.ArraySource:
  """`counts[k]` generated images of class k from the per-class or conditional generator (any
  run `eval.generators` loads: GAN family, VAE, VAE-GAN, StyleGAN2)."""
  images, labels, loaded = [], [], {}
  for k, n in enumerate(counts):
    if not n:
      continue
    workdir = _generator_for(generators, k).workdir
    if workdir not in loaded:
      loaded[workdir] = load_generator(workdir, step)
    images.append(loaded[workdir].generate(int(n), seed, k, truncation_psi, noise_mode))
    labels.append(np.full(int(n), k, np.int32))
  if not images:
    return pipeline.ArraySource({"image": _object_array([]), "label": np.zeros(0, np.int32),
                                 "patient": _object_array([])})
  labels = np.concatenate(labels)
  return pipeline.ArraySource({
      "image": _object_array(list(np.concatenate(images))), "label": labels,
      "patient": _object_array([f"synthetic/class{k}/{i}" for i, k in enumerate(labels)])})


def _generator_for(generators: list[Generator], label: int) -> Generator:
  for generator in generators:
    if generator.label is None or generator.label == label:
      return generator
  raise ValueError(f"no generator for class {label}: set generator.workdirs[{label}] or "
                   f"generator.conditional_workdir")


def arm_training_source(arm: str, real, counts: np.ndarray, config, generators: list[Generator], seed: int):
  """The training examples of `arm` (real ones first, then the extra ones with domain 1)."""
  if arm == "none" or not counts.sum():
    return real
  if arm == "oversample":
    extra = oversampled_images(real, counts, seed)
  elif arm == "classical":
    extra = classical_images(real, counts, config.classical.preset, seed)
  elif arm == "synthetic":
    extra = synthetic_images(generators, counts, int(config.generator.step), SAMPLE_SEED_OFFSET + seed,
                             float(config.generator.truncation_psi), config.generator.noise_mode)
  else:
    raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
  return pipeline.ConcatSource([real, extra], domains=[0, 1])
