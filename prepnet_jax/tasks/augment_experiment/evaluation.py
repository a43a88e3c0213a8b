"""Evaluation of one trained arm: metrics and logits per set, temperature scaling, reliability
diagrams and Grad-CAM overlays."""

from __future__ import annotations

import os

from prepnet_jax.data import pipeline
from prepnet_jax.eval import calibration, classify, figures, metrics as metrics_lib
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


def gradcam_report(config, state, eval_sets: dict, arm: str, reports: str, writer) -> dict:
  """Grad-CAM overlays of a fixed class-balanced set of each test set: PNG grid + TensorBoard."""
  paths = {}
  for name, source in eval_sets.items():
    if name == "val":
      continue
    path = os.path.join(reports, f"gradcam_{arm}_{name}.png")
    overlays = classify.gradcam_grid(config, state, source, pipeline.identity, path, int(config.gradcam.num_images))
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
