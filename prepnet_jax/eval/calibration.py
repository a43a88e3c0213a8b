"""Temperature scaling, NLL and expected calibration error (ECE).

Follows gpleiss/temperature_scaling (Guo et al. 2017), as used by the COVID-Net/ResNet50 study
(reference/cxr_papers.md §002.2.5): one scalar T > 0 divides every logit, so the argmax and hence
accuracy never change; T is fitted by minimising the NLL of held-out *validation* logits and
reported on the test set.

Logit conventions match `eval/metrics.py`: K-class logits are (N,K) for a softmax; a binary
classifier has one logit, (N,) or (N,1), with P(class 1) = sigmoid(z/T). The binary case is
handled as the two-class softmax of [0, z], which is exactly sigmoid(z/T), so one code path
serves both.

Every classifier-producing job calls `write_model_calibration` once, after model selection, on
the selected model's validation (and test) logits: it writes `reports/calibration.json` (the
`calibration_report`) and reliability diagrams into that model's servable directory, and
`read_temperature` is how `predict`/`serve` find the fitted T there.

Optimiser choice: scipy L-BFGS-B on log T with an analytic float64 gradient, on the host.
The problem is one-dimensional and the logits are already collected in host memory after
evaluation, so there is nothing for an accelerator to do; float64 keeps the mean NLL exact for
large N without enabling `jax_enable_x64` globally; optimising log T keeps T positive without
constraints, and the bounds keep it inside [1e-2, 1e2] (beyond that the logits are degenerate).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from scipy import optimize, special

from prepnet_jax.eval.metrics import as_class_probs
from prepnet_jax.runtime import rundir

CALIBRATION_FILE = os.path.join(rundir.REPORTS, "calibration.json")

INITIAL_TEMPERATURE = 1.5  # gpleiss's initial value
LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))


def as_class_logits(logits: np.ndarray) -> np.ndarray:
  """(N,) or (N,1) binary logits → (N,2) logits [0, z]; (N,K) with K ≥ 2 unchanged (float64)."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1):
    z = logits.reshape(-1)
    return np.stack([np.zeros_like(z), z], axis=-1)
  if logits.ndim != 2:
    raise ValueError(f"logits: expected shape (N,), (N,1) or (N,K), got {logits.shape}")
  return logits


def _check_labels(labels: np.ndarray, num_examples: int, num_classes: int) -> np.ndarray:
  labels = np.asarray(labels).reshape(-1)
  if labels.size != num_examples:
    raise ValueError(f"labels: expected {num_examples} labels to match the logits/probs, got {labels.size}")
  if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
    raise ValueError(f"labels: expected integers in [0, {num_classes}), got range "
                     f"[{labels.min()}, {labels.max()}]")
  return labels.astype(np.int64)


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
  """Calibrated probabilities in the shape `eval/metrics.py` expects: (N,) P(class 1) for a
  binary single logit, (N,K) softmax otherwise."""
  binary = np.ndim(logits) == 1 or np.shape(logits)[-1] == 1
  probs = special.softmax(as_class_logits(logits) / temperature, axis=-1)
  return probs[:, 1] if binary else probs


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
  """Mean negative log-likelihood of `labels` under softmax(logits / T) (sigmoid for one logit)."""
  scaled = as_class_logits(logits) / temperature
  labels = _check_labels(labels, scaled.shape[0], scaled.shape[1])
  log_probs = scaled - special.logsumexp(scaled, axis=-1, keepdims=True)
  return float(-log_probs[np.arange(labels.size), labels].mean())


def _nll_and_grad_in_log_t(log_t: np.ndarray, logits: np.ndarray, labels: np.ndarray):
  # With u = z·exp(-s): NLL = mean(lse(u) - u_y) and dNLL/ds = mean(u_y - Σ_k p_k u_k).
  scaled = logits * np.exp(-log_t[0])
  log_probs = scaled - special.logsumexp(scaled, axis=-1, keepdims=True)
  rows = np.arange(labels.size)
  value = -log_probs[rows, labels].mean()
  expected_scaled = (np.exp(log_probs) * scaled).sum(-1)
  grad = (scaled[rows, labels] - expected_scaled).mean()
  return value, np.array([grad])


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 50) -> float:
  """The T > 0 minimising the NLL of (logits, labels); fit it on validation logits only."""
  logits = as_class_logits(logits)
  labels = _check_labels(labels, logits.shape[0], logits.shape[1])
  if labels.size == 0:
    raise ValueError("fit_temperature: no examples (empty logits/labels)")
  result = optimize.minimize(_nll_and_grad_in_log_t, x0=np.array([np.log(INITIAL_TEMPERATURE)]),
                             args=(logits, labels), jac=True, method="L-BFGS-B",
                             bounds=[LOG_T_BOUNDS], options=dict(maxiter=max_iter))
  return float(np.exp(result.x[0]))


def reliability_bins(confidences: np.ndarray, outcomes: np.ndarray, n_bins: int = 15) -> dict:
  """Bins predicted probabilities with their 0/1 outcomes into `n_bins` equal-width bins on [0,1].

  A value is in bin b when lower < value ≤ upper (gpleiss), with 0 put in the first bin. Returns
  edges, per-bin mean `confidence`, mean outcome `accuracy` (NaN where empty), `count`, and
  `ece` = Σ_b (n_b/N)·|accuracy_b − confidence_b| over the non-empty bins.
  """
  confidences = np.asarray(confidences, np.float64).reshape(-1)
  outcomes = np.asarray(outcomes).reshape(-1)
  edges = np.linspace(0.0, 1.0, n_bins + 1)
  index = np.clip(np.searchsorted(edges, confidences, side="left") - 1, 0, n_bins - 1)
  count = np.bincount(index, minlength=n_bins)
  conf_sum = np.bincount(index, weights=confidences, minlength=n_bins)
  outcome_sum = np.bincount(index, weights=outcomes.astype(np.float64), minlength=n_bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    confidence = conf_sum / count
    accuracy = outcome_sum / count
  filled = count > 0
  error = float((count[filled] / max(confidences.size, 1) *
                 np.abs(accuracy[filled] - confidence[filled])).sum())
  return dict(edges=edges, confidence=confidence, accuracy=accuracy, count=count, ece=error)


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
  """Top-label ECE = Σ_b (n_b/N)·|acc_b − conf_b| over `n_bins` equal-width confidence bins,
  with conf = max class probability (gpleiss). Binary (N,) probabilities mean P(class 1)."""
  probs = as_class_probs(probs)
  labels = _check_labels(labels, probs.shape[0], probs.shape[1])
  correct = probs.argmax(-1) == labels
  return reliability_bins(probs.max(-1), correct, n_bins)["ece"]


def classwise_reliability(probs: np.ndarray, labels: np.ndarray, class_index: int,
                          n_bins: int = 15) -> dict:
  """One-vs-rest reliability of one class: per bin of P(class), the mean predicted probability
  (`confidence`), the observed frequency of the class (`accuracy`) and `count`, plus that class's
  calibration error `ece`. This is what a per-class reliability diagram plots."""
  probs = as_class_probs(probs)
  labels = _check_labels(labels, probs.shape[0], probs.shape[1])
  if not 0 <= class_index < probs.shape[1]:
    raise ValueError(f"class_index: expected an integer in [0, {probs.shape[1]}), got {class_index}")
  return reliability_bins(probs[:, class_index], labels == class_index, n_bins)


def _split_summary(logits: np.ndarray, labels: np.ndarray, temperature: float, n_bins: int) -> dict:
  before, after = probabilities(logits), probabilities(logits, temperature)
  predictions = as_class_probs(before).argmax(-1)
  return dict(n=int(np.asarray(labels).size),
              accuracy=float((predictions == np.asarray(labels).reshape(-1)).mean()),
              nll_before=nll(logits, labels), nll_after=nll(logits, labels, temperature),
              ece_before=ece(before, labels, n_bins), ece_after=ece(after, labels, n_bins))


def temperature_at_bound(temperature: float) -> str | None:
  """A note when the fit stopped at a bound of T: at 100 the validation NLL is lowest for (almost)
  uniform probabilities, i.e. the model's logits carry no usable information on validation."""
  if np.log(temperature) >= LOG_T_BOUNDS[1] - 1e-3:
    return (f"T = {temperature:.0f} is the upper bound: (almost) uniform probabilities fit the validation "
            "split best, so the model's confidence carries no information there")
  if np.log(temperature) <= LOG_T_BOUNDS[0] + 1e-3:
    return f"T = {temperature:.2f} is the lower bound: the validation logits are degenerate"
  return None


def calibration_report(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray | None = None,
                       test_labels: np.ndarray | None = None, n_bins: int = 15,
                       other_sets: dict | None = None) -> dict:
  """Fits T on validation logits and reports NLL/ECE before and after scaling on val and test.

  The result is JSON-serialisable: {'temperature', 'fitted_on': 'val', 'n_bins', 'val': {...},
  'test': {...}} with n, accuracy (unchanged by T), nll_before/after and ece_before/after per
  split; 'test' only when test logits are given, and one more entry per `other_sets` item
  (name → (logits, labels), e.g. an external site).
  """
  temperature = fit_temperature(val_logits, val_labels)
  report = dict(temperature=temperature, fitted_on="val", n_bins=n_bins,
                at_bound=temperature_at_bound(temperature),
                val=_split_summary(val_logits, val_labels, temperature, n_bins))
  sets = {} if test_logits is None else {"test": (test_logits, test_labels)}
  for name, (logits, labels) in {**sets, **(other_sets or {})}.items():
    report[name] = _split_summary(logits, labels, temperature, n_bins)
  return report


def write_model_calibration(model_dir: str, val: tuple, class_names, test: tuple | None = None,
                            n_bins: int = 15, other_sets: dict | None = None, diagrams: bool = True) -> dict:
  """The one calibration step of every job: fit T on the selected model's validation (logits,
  labels), then write `<model_dir>/reports/calibration.json` (+ .md) and one before/after
  reliability diagram per set (`reports/reliability_<set>.png`; `diagrams=False` leaves them out:
  drawing them is most of the cost when an experiment calibrates hundreds of models). Returns the report."""
  from prepnet_jax.eval import figures  # figures draws with this module's binning
  test = None if test is None or not np.asarray(test[1]).size else test
  report = calibration_report(*val, *(test or (None, None)), n_bins=n_bins, other_sets=other_sets)
  sets = {"val": val, **({"test": test} if test else {}), **(other_sets or {})}
  report["figures"] = {}
  for name, (logits, labels) in sets.items() if diagrams else ():
    figure = os.path.join(model_dir, rundir.REPORTS, f"reliability_{name}.png")
    figures.reliability_diagram(figure, probabilities(logits), labels, list(class_names), n_bins=n_bins,
                                calibrated_probs=probabilities(logits, report["temperature"]))
    report["figures"][name] = os.path.basename(figure)
  rows = [f"| {name} | {r['n']} | {r['accuracy']:.3f} | {r['nll_before']:.4f} → {r['nll_after']:.4f} | "
          f"{r['ece_before']:.4f} → {r['ece_after']:.4f} |" for name, r in report.items() if name in sets]
  note = [f"**Note:** {report['at_bound']}.", ""] if report["at_bound"] else []
  markdown = "\n".join([f"# Calibration: T = {report['temperature']:.4f} (fitted on val)", "", *note,
                         f"| set | n | accuracy | NLL before → after | ECE ({n_bins} bins) before → after |",
                         "|---|---|---|---|---|", *rows])
  rundir.write_report(model_dir, "calibration", report, markdown)
  return report


def read_temperature(model_dir: str) -> float | None:
  """The fitted temperature in `<model_dir>/reports/calibration.json`; None without that file."""
  path = os.path.join(model_dir, CALIBRATION_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    value = json.load(f).get("temperature")
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
    raise ValueError(f"{path}: 'temperature' must be a positive number, got {value!r}")
  return float(value)
