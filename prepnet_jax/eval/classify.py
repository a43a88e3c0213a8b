"""Logits, probabilities, metric tables and report figures of a classifier state on dataset splits.

The evaluation path (no augmentation, the run's own preprocessing) shared by the classifier
task, its recipes, the augmentation experiment and PrepNet's diagnostics.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from prepnet_jax.data import datasets, pipeline, transforms
from prepnet_jax.eval import calibration, figures, gradcam, metrics as metrics_lib
from prepnet_jax.losses import classification as losses
from prepnet_jax.models import classifier_factory
from prepnet_jax.runtime import rundir, sharding
from prepnet_jax.runtime.state import TrainState

# --- data ----------------------------------------------------------------------------------------

def relabel(source, label_key: str):
  """Uses `label_key` (e.g. 'label3' for normal/pneumonia/COVID) as the example's `label`."""
  if label_key == "label":
    return source
  return RelabelSource(source, label_key)


class RelabelSource:
  """`source` with the field `key` served as `label`."""

  def __init__(self, source, key):
    self.source, self.key = source, key

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    ex = dict(self.source[i])
    ex["label"] = ex[self.key]
    return ex

  def column(self, key):
    return pipeline.column(self.source, self.key if key == "label" else key)


def load_split(config, ref: str, split: str):
  """Split `split` of dataset `ref`, labelled by `config.data.label_key`."""
  return relabel(datasets.get_source(ref, split, config.data), config.data.label_key)


# --- logits --------------------------------------------------------------------------------------

@jax.jit
def logits_step(state: TrainState, images: jax.Array) -> jax.Array:
  return state.apply_fn(state.variables, images, train=False)


def predict_logits(state: TrainState, source, preprocess, batch_size: int, mesh,
                   options: pipeline.LoaderOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Logits and labels of every example of `source` (evaluation path, no augmentation).

  Each process feeds its slice of every batch; the logits and labels are gathered, so every
  process returns the whole result."""
  batch_size = round_up(batch_size, mesh.devices.size)
  all_logits, all_labels = [], []
  for batch, valid in pipeline.eval_batches(source, preprocess, batch_size, options):
    arrays = sharding.shard_batch({"image": batch["image"], "label": batch["label"]}, mesh)
    logits, labels = sharding.to_host((logits_step(state, arrays["image"]), arrays["label"]))
    all_logits.append(np.asarray(logits)[:valid])
    all_labels.append(np.asarray(labels)[:valid])
  if not all_logits:
    return np.zeros((0, 1), np.float32), np.zeros((0,), np.int32)
  return np.concatenate(all_logits), np.concatenate(all_labels)


def logits_to_probs(logits: np.ndarray) -> np.ndarray:
  return np.asarray(losses.class_probabilities(jnp.asarray(logits)))


def round_up(n: int, m: int) -> int:
  """`n` rounded up to a multiple of `m` (a global batch divisible by the device count)."""
  return ((n + m - 1) // m) * m


# --- metric tables -------------------------------------------------------------------------------

def evaluate_all(config, state, mesh, refs: list[str], splits=("train", "val", "test"),
                 transform_logits=None, figures_workdir: str | None = None, calibration_report: dict | None = None,
                 figure_splits=("test",)) -> dict[str, dict]:
  """Metrics of `state` on every dataset reference × split, keyed 'ref:split'.

  With `figures_workdir`, the sets of `figure_splits` (the held-out test split of the training
  site and of every other site; train/val figures would show the fit, not the model) also get
  their figures in its reports/ (`write_set_figures`), reliability before and after the
  temperature of `calibration_report` when one is given."""
  eval_pre = transforms.make_preprocess(config.preprocess, training=False)
  temperature = None if calibration_report is None else float(calibration_report["temperature"])
  results = {}
  for ref in refs:
    for split in splits:
      source = load_split(config, ref, split)
      if len(source) == 0:
        continue
      logits, labels = predict_logits(state, source, eval_pre, int(config.batch_size), mesh)
      if transform_logits is not None:
        logits = transform_logits(logits)
      results[f"{ref}:{split}"] = metrics_lib.classification_metrics(
          labels, logits_to_probs(logits), list(config.data.class_names))
      if figures_workdir is not None and split in figure_splits:
        write_set_figures(config, state, f"{ref}:{split}", (logits, labels), source, eval_pre,
                          rundir.reports_dir(figures_workdir), temperature)
  return results


def write_metrics_report(workdir: str, name: str, results: dict, extra: dict | None = None) -> str:
  """`reports/<name>.json` ({'results': ..., **extra}) and its markdown table; returns the table."""
  table = metrics_lib.format_metrics_table(results)
  rundir.write_report(workdir, name, {"results": results, **(extra or {})}, f"# {name}\n\n{table}\n")
  return table


# --- figures -------------------------------------------------------------------------------------

def figure_slug(set_name: str) -> str:
  """A set name ('phantom_ct/sars:test') as a file-name part ('phantom_ct_sars_test')."""
  return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in set_name)


def class_balanced_picks(labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
  """The first examples of each class in turn, `count` in all (a fixed, class-balanced set), in
  dataset order."""
  per_class = [list(np.flatnonzero(np.asarray(labels) == k)) for k in range(num_classes)]
  picks = []
  while len(picks) < count and any(per_class):
    for members in per_class:
      if members and len(picks) < count:
        picks.append(members.pop(0))
  return np.asarray(sorted(picks), np.int64)


def gradcam_grid(config, state, source, preprocess, path: str, num_images: int = 8) -> np.ndarray:
  """Grad-CAM of a fixed class-balanced set of `source` (`class_balanced_picks`) as a titled PNG
  grid at `path` (written by process 0); returns the (B,H,W,3) uint8 overlays for TensorBoard."""
  model = classifier_factory.build_classifier(config)
  class_names = list(config.data.class_names)
  labels = pipeline.column(source, "label").astype(int)
  picks = class_balanced_picks(labels, num_images, len(class_names))
  images = np.stack([np.asarray(preprocess(dict(source[int(i)]), np.random.default_rng(int(i)))["image"])
                     for i in picks])
  cams, info = gradcam.grad_cam(model, sharding.to_host(state.variables), images)
  probs = metrics_lib.as_class_probs(logits_to_probs(np.asarray(info["logits"])))
  value_range = config.preprocess.value_range
  display = np.stack([transforms.denormalize(image, value_range) for image in images])
  titles = [f"true {class_names[labels[i]]}\npred {class_names[p.argmax()]} {p.max():.2f}"
            for i, p in zip(picks, probs)]
  if jax.process_index() == 0:
    figures.save_cam_grid(path, display, np.asarray(cams), titles, value_range=(0, 255))
  return figures.cam_overlays(display, np.asarray(cams), value_range=(0, 255))


def write_set_figures(config, state, name: str, logits_labels: tuple, source, preprocess, reports: str,
                      temperature: float | None = None, num_gradcam: int = 8) -> dict[str, str]:
  """`roc_<set>.png`, `confusion_<set>.png`, `reliability_<set>.png` (before → after `temperature`
  when given) and `gradcam_<set>.png` of one evaluated set in `reports`; returns {kind: path}.
  Every process computes (Grad-CAM gathers the state); process 0 writes."""
  logits, labels = logits_labels
  class_names = list(config.data.class_names)
  slug = figure_slug(name)
  paths = {kind: os.path.join(reports, f"{kind}_{slug}.png") for kind in ("roc", "confusion", "reliability", "gradcam")}
  gradcam_grid(config, state, source, preprocess, paths["gradcam"], num_gradcam)
  if jax.process_index() != 0:
    return paths
  probs = calibration.probabilities(logits)
  figures.roc_curves(paths["roc"], probs, labels, class_names, title=f"ROC, {name}")
  cm = metrics_lib.classification_metrics(labels, probs, class_names)["confusion_matrix"]
  figures.confusion_matrix_plot(paths["confusion"], np.asarray(cm), class_names, title=f"Confusion, {name}")
  figures.reliability_diagram(paths["reliability"], probs, labels, class_names,
                              calibrated_probs=None if temperature is None else
                              calibration.probabilities(logits, temperature), title=f"Reliability, {name}")
  return paths
