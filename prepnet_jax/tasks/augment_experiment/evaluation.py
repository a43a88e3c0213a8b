"""Evaluation of one trained arm: metrics and logits per set, temperature scaling, reliability
diagrams and Grad-CAM overlays."""

from __future__ import annotations

import os

import jax
import numpy as np

from prepnet_jax.data import pipeline, transforms
from prepnet_jax.eval import calibration, classify, figures, gradcam, metrics as metrics_lib
from prepnet_jax.models import classifier_factory
from prepnet_jax.runtime import writers



def evaluate(state, eval_sets: dict, config, mesh) -> tuple[dict, dict]:
  """(metrics, logits) of `state` on every preprocessed evaluation set."""
  metrics, logits = {}, {}
  for name, source in eval_sets.items():
    z, labels = classify.predict_logits(state, source, pipeline.identity, int(config.batch_size), mesh)
    logits[name] = (z, labels)
    metrics[name] = metrics_lib.classification_metrics(labels, classify.logits_to_probs(z),
                                                       list(config.data.class_names))
  return metrics, logits


def calibrate(logits: dict, n_bins: int, model_dir: str, class_names: list[str]) -> dict:
  """Temperature fitted on the 'val' logits, NLL and ECE before/after on every other set, written
  into the arm's model directory like every classifier's (`calibration.write_model_calibration`:
  the internal test set is its 'test', the external site an extra set). Returns the experiment's
  record: {'temperature', 'n_bins', 'fitted_on', <set>: {n, accuracy, nll/ece before/after}}."""
  others = {name: pair for name, pair in logits.items() if name not in ("val", "internal")}
  report = calibration.write_model_calibration(model_dir, logits["val"], class_names, test=logits["internal"],
                                               n_bins=n_bins, other_sets=others)
  return {"temperature": report["temperature"], "at_bound": report["at_bound"], "n_bins": n_bins, "fitted_on": "val",
          "internal": report["test"], **{name: report[name] for name in others}}


def _gradcam_indices(labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
  """The first examples of each class in turn, `count` in all (a fixed, class-balanced set)."""
  per_class = [list(np.flatnonzero(labels == k)) for k in range(num_classes)]
  picks = []
  while len(picks) < count and any(per_class):
    for members in per_class:
      if members and len(picks) < count:
        picks.append(members.pop(0))
  return np.asarray(sorted(picks), np.int64)


def gradcam_report(config, state, eval_sets: dict, arm: str, reports: str, writer) -> dict:
  """Grad-CAM overlays of a fixed class-balanced set of each test set: PNG grid + TensorBoard."""
  model = classifier_factory.build_classifier(config)
  class_names = list(config.data.class_names)
  value_range = config.preprocess.value_range
  paths = {}
  for name, source in eval_sets.items():
    if name == "val":
      continue
    labels = pipeline.column(source, "label").astype(int)
    picks = _gradcam_indices(labels, int(config.gradcam.num_images), len(class_names))
    images = np.stack([np.asarray(source[int(i)]["image"]) for i in picks])
    cams, info = gradcam.grad_cam(model, jax.device_get(state.variables), images)
    probs = metrics_lib.as_class_probs(classify.logits_to_probs(np.asarray(info["logits"])))
    display = np.stack([transforms.denormalize(image, value_range) for image in images])
    titles = [f"true {class_names[labels[i]]}\npred {class_names[p.argmax()]} {p.max():.2f}"
              for i, p in zip(picks, probs)]
    path = os.path.join(reports, f"gradcam_{arm}_{name}.png")
    figures.save_cam_grid(path, display, np.asarray(cams), titles, value_range=(0, 255))
    overlays = figures.cam_overlays(display, np.asarray(cams), value_range=(0, 255))
    writer.write_images(0, {f"gradcam/{arm}/{name}": writers.image_grid(overlays, ncols=4)[None]})
    paths[name] = path
  return paths


def reliability_diagrams(logits: dict, temperature: float, class_names: list[str], n_bins: int, arm: str,
                          reports: str) -> None:
  """Per-class reliability of the internal and external test sets, before and after scaling."""
  for name in ("internal", "external"):
    z, y = logits[name]
    figures.reliability_diagram(os.path.join(reports, f"reliability_{arm}_{name}.png"), calibration.probabilities(z),
                                y, class_names, n_bins=n_bins,
                                calibrated_probs=calibration.probabilities(z, temperature))
