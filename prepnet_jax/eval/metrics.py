"""Classification metrics computed on the host from collected labels and probabilities.

Binary tasks use one logit (sigmoid); `probs` is then (N,) or (N,1) = P(positive). K-class
tasks use (N,K) softmax probabilities. The positive class of a binary task is 1 (COVID).
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def as_class_probs(probs: np.ndarray) -> np.ndarray:
  """(N,) or (N,1) positive-class probabilities → (N,2); (N,K) unchanged."""
  probs = np.asarray(probs, np.float64)
  if probs.ndim == 1 or probs.shape[-1] == 1:
    p = probs.reshape(-1)
    return np.stack([1.0 - p, p], axis=-1)
  return probs


def classification_metrics(labels: np.ndarray, probs: np.ndarray,
                           class_names: list[str] | None = None) -> dict:
  """Accuracy, balanced accuracy, per-class sensitivity/specificity/PPV/F1, ROC AUC, confusion."""
  labels = np.asarray(labels).astype(int).reshape(-1)
  probs = as_class_probs(probs)
  k = probs.shape[1]
  class_names = list(class_names or [str(i) for i in range(k)])
  if len(class_names) != k:
    raise ValueError(f"{len(class_names)} class names for {k} classes")
  preds = probs.argmax(-1)
  cm = skm.confusion_matrix(labels, preds, labels=list(range(k)))
  per_class = {}
  recalls = []
  for c, name in enumerate(class_names):
    tp = cm[c, c]
    fn = cm[c].sum() - tp
    fp = cm[:, c].sum() - tp
    tn = cm.sum() - tp - fn - fp
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    ppv = tp / (tp + fp) if tp + fp else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else float("nan")
    per_class[name] = dict(sensitivity=float(sens), specificity=float(spec), ppv=float(ppv),
                           f1=float(f1), support=int(tp + fn))
    if tp + fn:
      recalls.append(sens)
  out = dict(
      n=int(labels.size),
      accuracy=float((preds == labels).mean()) if labels.size else float("nan"),
      # Mean recall over the classes present; for binary this is (sens + spec) / 2.
      balanced_accuracy=float(np.mean(recalls)) if recalls else float("nan"),
      auc=_auc(labels, probs),
      confusion_matrix=cm.tolist(),
      per_class=per_class,
      class_names=class_names,
  )
  if k == 2:
    pos = per_class[class_names[1]]
    out.update(sensitivity=pos["sensitivity"], specificity=pos["specificity"], ppv=pos["ppv"],
               f1=pos["f1"])
  return out


def _auc(labels: np.ndarray, probs: np.ndarray) -> float:
  present = np.unique(labels)
  if present.size < 2:
    return float("nan")  # AUC is undefined with one class
  if probs.shape[1] == 2:
    return float(skm.roc_auc_score(labels, probs[:, 1]))
  if present.size < probs.shape[1]:
    return float("nan")
  return float(skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def format_metrics_table(rows: dict[str, dict], columns=("n", "accuracy", "balanced_accuracy",
                                                         "sensitivity", "specificity", "ppv", "f1", "auc")) -> str:
  """Markdown table: one row per evaluated split/site, one column per scalar metric."""
  header = "| split | " + " | ".join(columns) + " |"
  lines = [header, "|" + "---|" * (len(columns) + 1)]
  for name, m in rows.items():
    cells = []
    for c in columns:
      v = m.get(c, float("nan"))
      cells.append(str(v) if isinstance(v, int) else f"{v:.4f}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
