"""Mean ± std over seeds per arm, and the markdown report of the experiment."""

from __future__ import annotations

import numpy as np


def _scalar_metrics(m: dict, class_names: list[str]) -> dict:
  out = {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "auc": m["auc"]}
  for name in class_names:
    c = m["per_class"][name]
    out.update({f"{name}/precision": c["ppv"], f"{name}/recall": c["sensitivity"], f"{name}/f1": c["f1"]})
  return out


def mean_std(values: list[float]) -> dict:
  """Mean and sample standard deviation (ddof=1; 0 for one seed) over seeds, NaN-aware."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  if not finite.size:
    return {"mean": float("nan"), "std": float("nan"), "n": 0}
  std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
  return {"mean": float(np.mean(finite)), "std": std, "n": int(finite.size)}


def _summarise(per_seed: dict, key_fn) -> dict:
  keys = key_fn(next(iter(per_seed.values())))
  return {k: mean_std([key_fn(run)[k] for run in per_seed.values()]) for k in keys}


def _fmt(stat: dict) -> str:
  return "n/a" if not stat["n"] else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def format_report(results: dict) -> str:
  """The markdown report: provenance header, one table per test set, the calibration table."""
  class_names = results["class_names"]
  lines = ["# Synthetic augmentation experiment", ""]
  check = results["generator_data"]
  if check.get("sees_eval_data"):
    lines += ["**WARNING — data leakage: a generator was trained on patients of the evaluation data "
              "(generator.allow_eval_data=True); the synthetic arm's numbers are optimistic.**", ""]
  lines += [f"- Training data: {results['train']['data']} ({results['train']['size']} images, per class "
            f"{results['train']['per_class']}); extra images per class in every augmented arm: "
            f"{results['extra_per_class']} (extra.per_class={results['extra_per_class_spec']})",
            f"- Classifier: {results['classifier']}; seeds {results['seeds']}: mean ± sample std (ddof=1)"]
  for g in check.get("generators", []):
    quality = g.get("quality") or {}
    fd = (f"; {quality['metric']} {quality['initial']:.1f} → {quality['final']:.1f} after {quality['num_steps']} steps"
          if quality.get("final") is not None else "")
    where = "trained here" if g["trained_here"] else "given"
    cls = "conditional" if g["label"] is None else f"class {class_names[g['label']]}"
    overlap = ", ".join(f"{k} {v}" for k, v in g["overlap_patients"].items())
    lines.append(f"- Generator ({cls}, {g['kind']}, {where}): {g['data']} {g['class_filter']}, "
                 f"{g['num_images']} images of {g['num_patients']} patients{fd}; patients shared with "
                 f"evaluation sets: {overlap}")
  if not check.get("generators"):
    lines.append("- Generator: none (no synthetic arm)")
  elif not check.get("sees_eval_data"):
    lines.append("- The generators never saw evaluation patients (asserted).")
  for set_name, title in (("internal", "Internal test"), ("external", "External site")):
    ref = results["eval_sets"][set_name]
    lines += ["", f"## {title}: {ref['data']} (n = {ref['n']})", ""]
    header = ["arm", "train n", "accuracy", "AUC"] + [f"{c} {m}" for c in class_names for m in ("P", "R", "F1")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, record in results["arms"].items():
      s = record["summary"][set_name]
      cells = [arm, str(record["train_size"]), _fmt(s["accuracy"]), _fmt(s["auc"])]
      cells += [_fmt(s[f"{c}/{m}"]) for c in class_names for m in ("precision", "recall", "f1")]
      lines.append("| " + " | ".join(cells) + " |")
  lines += ["", f"## Calibration (temperature fitted on {results['eval_sets']['val']['data']} logits; "
            f"ECE with {results['calibration_bins']} bins)", "",
            "| arm | T | internal NLL before | after | internal ECE before | after | external NLL before | "
            "after | external ECE before | after |", "|" + "---|" * 10]
  for arm, record in results["arms"].items():
    c = record["summary"]["calibration"]
    cells = [arm, _fmt(c["temperature"])] + [_fmt(c[f"{s}/{m}_{w}"]) for s in ("internal", "external")
                                             for m in ("nll", "ece") for w in ("before", "after")]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", f"Figures (seed {results['seeds'][0]}): reliability_<arm>_<set>.png, gradcam_<arm>_<set>.png. "
            f"Wall time {results['wall_time_s']:.0f} s (process CPU time {results['process_cpu_time_s']:.0f} s)."]
  return "\n".join(lines) + "\n"


def arm_record(per_seed: dict, class_names: list[str]) -> dict:
  """Every seed's results plus their mean ± std per metric (val, internal, external, calibration)."""
  summary = {name: _summarise(per_seed, lambda r, n=name: _scalar_metrics(r["metrics"][n], class_names))
             for name in ("val", "internal", "external")}
  summary["calibration"] = _summarise(per_seed, lambda r: {
      "temperature": r["calibration"]["temperature"],
      **{f"{s}/{k}": r["calibration"][s][k] for s in ("internal", "external") for k in r["calibration"][s]}})
  train_labels = next(iter(per_seed.values()))["train_labels"]
  return {"train_size": int(sum(train_labels)), "train_per_class": train_labels, "summary": summary,
          "seeds": {str(s): r for s, r in per_seed.items()}}
