"""Paired statistics for "does this row beat its comparison row" evidence reports.

A report row (e.g. PrepNet, or a simple baseline such as per-site histogram matching) and the row
it is compared with are trained on the same seeds, so their per-seed results are paired: seed s of
one row shares the data split and initialisation stream of seed s of the other. The seed-to-seed
spread, which is often larger than the effect, cancels in the per-seed difference d = a − b, so
the evidence is judged on d alone rather than on two overlapping mean ± std bands.

- `paired_difference`: mean of d with a two-sided Student-t confidence interval,
  mean ± t_{n−1,(1+confidence)/2} · sd/√n (sd with ddof=1). The t rather than the normal
  quantile because a report has a handful of seeds (t_{4,0.975} ≈ 2.78 against 1.96). Seeds
  where either side is not finite (a diverged or missing run) are dropped pairwise and n counts
  the pairs kept; with n < 2 there is no spread to estimate, and the interval is NaN.
- `verdict`: "improves" when the whole interval lies on the better side of 0, "hurts" when it
  lies on the worse side, otherwise (or without an interval) "no evidence". The rule says
  nothing about effects too small to matter; it only says whether the seeds rule out zero.
- `gap_closed`: the fraction of the cross-site gap a row closes,
  (Cross_row − Cross_Original) / (Within_Original − Cross_Original): 0 means no better than the
  untreated model on unseen sites, 1 means as good on unseen sites as the untreated model is on
  its own site. Undefined (NaN) when the untreated model has no gap to close (denominator ≤ 0).
  Callers pass means over seeds; the ratio of noisy means is a summary, not a test.
- `patient_level`: one score per patient from its slice probabilities (mean or max), so
  patient-level metrics count each patient once however many slices they contribute.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

VERDICTS = ("improves", "hurts", "no evidence")
PATIENT_AGGREGATIONS = ("mean", "max")


def paired_difference(a, b, confidence: float = 0.95) -> dict:
  """Mean per-seed difference a − b with its t confidence interval.

  `a` and `b` are one metric's per-seed values for a row and its comparison row, in the same
  seed order. Returns {"mean", "sd", "n", "ci_low", "ci_high", "t_crit", "values"}, where
  "values" lists the differences kept (pairs with a non-finite side dropped).
  """
  a = np.asarray(a, np.float64).reshape(-1)
  b = np.asarray(b, np.float64).reshape(-1)
  if len(a) != len(b):
    raise ValueError(f"paired_difference: {len(a)} values against {len(b)}; a paired comparison "
                     "needs one value per seed on each side, in the same seed order")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"paired_difference: confidence must lie in (0, 1), got {confidence}")
  kept = np.isfinite(a) & np.isfinite(b)
  differences = a[kept] - b[kept]
  n = len(differences)
  mean = float(differences.mean()) if n else math.nan
  sd = t_crit = ci_low = ci_high = math.nan
  if n >= 2:
    sd = float(differences.std(ddof=1))
    t_crit = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1))
    half_width = t_crit * sd / math.sqrt(n)
    ci_low, ci_high = mean - half_width, mean + half_width
  return {"mean": mean, "sd": sd, "n": n, "ci_low": ci_low, "ci_high": ci_high, "t_crit": t_crit,
          "values": differences.tolist()}


def verdict(diff: dict, what_is_better: str = "higher") -> str:
  """"improves" / "hurts" / "no evidence" from a `paired_difference` result.

  `what_is_better` says which direction of the metric is good: "higher" (accuracy, AUC) or
  "lower" (ECE, loss), so a lower-is-better metric whose interval is wholly below 0 improves.
  """
  if what_is_better not in ("higher", "lower"):
    raise ValueError(f"verdict: what_is_better must be 'higher' or 'lower', got {what_is_better!r}")
  low, high = diff["ci_low"], diff["ci_high"]
  if not (math.isfinite(low) and math.isfinite(high)):
    return "no evidence"
  if what_is_better == "lower":
    low, high = -high, -low
  if low > 0:
    return "improves"
  if high < 0:
    return "hurts"
  return "no evidence"


def gap_closed(cross_row: float, cross_original: float, within_original: float) -> float:
  """(cross_row − cross_original) / (within_original − cross_original); NaN without a gap."""
  gap = within_original - cross_original
  if not math.isfinite(gap) or gap <= 0:
    return math.nan
  return float((cross_row - cross_original) / gap)


def patient_level(probs, labels, patients, how: str = "mean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Slice probabilities (N,) → one probability per patient, by the mean or max of its slices.

  Returns (patient_probs, patient_labels, patient_ids), sorted by patient id. Every slice of a
  patient must carry the patient's label: a disagreement means a broken split or label file,
  and averaging over it would hide that.
  """
  if how not in PATIENT_AGGREGATIONS:
    raise ValueError(f"patient_level: how={how!r}; expected one of {PATIENT_AGGREGATIONS}")
  probs = np.asarray(probs, np.float64)
  if probs.ndim == 2 and probs.shape[1] == 1:
    probs = probs[:, 0]
  labels, patients = np.asarray(labels).reshape(-1), np.asarray(patients).reshape(-1)
  if probs.ndim != 1:
    raise ValueError(f"patient_level: probs of shape {probs.shape}; expected (N,) probabilities of "
                     "the positive class, one per slice")
  if not len(probs):
    raise ValueError("patient_level: no slices given")
  if not len(probs) == len(labels) == len(patients):
    raise ValueError(f"patient_level: {len(probs)} probabilities, {len(labels)} labels and "
                     f"{len(patients)} patient ids; expected one of each per slice")
  patient_ids, first, inverse = np.unique(patients, return_index=True, return_inverse=True)
  patient_labels = labels[first]
  disagreeing = np.flatnonzero(labels != patient_labels[inverse])
  if len(disagreeing):
    patient = patient_ids[inverse[disagreeing[0]]]
    found = sorted(set(labels[patients == patient].tolist()))
    raise ValueError(f"patient_level: patient {patient!r} has slices with different labels {found}; "
                     "every slice of a patient must carry the patient's label")
  if how == "mean":
    patient_probs = np.bincount(inverse, weights=probs) / np.bincount(inverse)
  else:
    patient_probs = np.full(len(patient_ids), -np.inf)
    np.maximum.at(patient_probs, inverse, probs)
  return patient_probs, patient_labels, patient_ids
