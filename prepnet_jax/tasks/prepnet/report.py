"""The thesis's cross-dataset tables (reference §6.3), over seeds, as JSON and Markdown.

Definitions (verified against the thesis's numbers):
  per dataset Tr/Va/Te   balanced accuracy of E_cov on that dataset's splits
  Average (cross only)   mean of Tr, Va and Te BA on a dataset E_cov was NOT trained on
  Within                 mean over COVID training sets of the same-dataset TEST BA
  Cross                  mean of all cross "Average" values
  Sens/Spec/AUC          on the test split
  Δ                      percentage points against the baseline row
Every number is a mean ± std over the seeds the config lists. Per row, a heatmap of the test
balanced accuracy (COVID training set × evaluated dataset) goes beside its diagnostics.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from prepnet_jax.eval import figures, paired_stats, prepnet_layout
from prepnet_jax.runtime import rundir

SPLITS = ("train", "val", "test")
SHORT = {"train": "Tr", "val": "Va", "test": "Te"}
HEATMAP = "cross_site_balanced_accuracy.png"


def _seed_summary(result: dict) -> dict:
  """Within/Cross (slice and patient level), the leave-one-site-out view and every table cell for
  one row and one seed. E_covs trained under the leave-one-site-out protocol get `LOSO` (the mean
  over held-out sites of their Tr/Va/Te average, as Cross) and `LOSO_within` (the mean test BA on
  the sites they were trained on); they stay out of Within/Cross."""
  cells = {}
  acc = {name: [] for name in ("Within", "Cross", "Within_patient", "Cross_patient", "LOSO", "LOSO_patient",
                               "LOSO_within")}
  for key, r in result.items():
    if key.startswith("_"):
      continue
    members = r["members"]
    loso = r.get("protocol") == "leave_one_site_out"
    for dataset, by_split in r["eval"].items():
      ba = {s: by_split[s]["balanced_accuracy"] for s in SPLITS}
      patient = {s: by_split[s].get("patient", {}).get("balanced_accuracy", float("nan")) for s in SPLITS}
      for s in SPLITS:
        cells[f"{key}|{dataset}|{SHORT[s]}"] = ba[s]
        cells[f"{key}|{dataset}|{SHORT[s]}_patient"] = patient[s]
      test = by_split["test"]
      for m in ("sensitivity", "specificity", "auc"):
        cells[f"{key}|{dataset}|{m}"] = test.get(m, float("nan"))
      if dataset in members:
        acc["LOSO_within" if loso else "Within"].append(ba["test"])
        if not loso:
          acc["Within_patient"].append(patient["test"])
      else:
        avg = float(np.mean([ba[s] for s in SPLITS]))
        cells[f"{key}|{dataset}|Avg"] = avg
        acc["LOSO" if loso else "Cross"].append(avg)
        acc["LOSO_patient" if loso else "Cross_patient"].append(float(np.mean([patient[s] for s in SPLITS])))
  for name, values in acc.items():
    if values or name in ("Within", "Cross"):
      cells[name] = float(np.mean(values)) if values else float("nan")
  return cells


def build_tables(all_results: dict, config) -> dict:
  """{row: {cell: {'mean', 'std', 'values'}}} plus pp deltas of Within/Cross vs the baseline."""
  tables = {}
  for row, by_seed in all_results.items():
    per_seed = [_seed_summary(r) for _, r in sorted(by_seed.items())]
    keys = per_seed[0].keys()
    tables[row] = {k: _stats([s[k] for s in per_seed]) for k in keys}
  baseline = config.baseline_row or next(iter(tables))
  if baseline not in tables:
    raise KeyError(f"baseline_row={baseline!r} is not one of the rows {list(tables)}")
  for row, cells in tables.items():
    for agg in ("Within", "Cross"):
      ours = np.asarray(cells[agg]["values"])
      base = np.asarray(tables[baseline][agg]["values"])
      delta = (ours - base) * 100.0 if ours.shape == base.shape else np.asarray([(ours.mean() - base.mean()) * 100])
      cells[f"{agg}_delta_pp"] = _stats(list(delta))
  tables["_baseline"] = baseline
  return tables


def _stats(values) -> dict:
  v = np.asarray(values, np.float64)
  finite = v[np.isfinite(v)]
  return {"mean": float(finite.mean()) if finite.size else float("nan"),
          "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
          "values": [float(x) for x in v]}


def _fmt(cell: dict | None, pct: bool = False) -> str:
  if cell is None or not np.isfinite(cell["mean"]):
    return "–"
  if pct:
    return f"{cell['mean']:+.2f} ± {cell['std']:.2f}" if len(cell["values"]) > 1 else f"{cell['mean']:+.2f}"
  return f"{cell['mean']:.4f} ± {cell['std']:.4f}" if len(cell["values"]) > 1 else f"{cell['mean']:.4f}"


def _layout(all_results: dict, row: str) -> tuple[list[str], list[str]]:
  """(COVID training sets, evaluated datasets) of a row, from its first seed's results."""
  first = all_results[row][sorted(all_results[row])[0]]
  train_keys = [k for k in first if not k.startswith("_")]
  return train_keys, list(first[train_keys[0]]["eval"])


def heatmaps(workdir: str, tables: dict, all_results: dict) -> list[str]:
  """`reports/<row>/cross_site_balanced_accuracy.png` per row: test balanced accuracy of each
  COVID training set (rows) on each dataset (columns), mean ± std over seeds. A training set's
  own datasets are what Within averages; the other cells show how it generalises across sites
  (the table's Cross also averages their train and val splits)."""
  paths = []
  for row in (r for r in tables if not r.startswith("_")):
    train_keys, datasets = _layout(all_results, row)
    cells = [[tables[row][f"{key}|{d}|Te"] for d in datasets] for key in train_keys]
    seeds = len(cells[0][0]["values"])
    path = os.path.join(workdir, rundir.REPORTS, prepnet_layout.row_slug(row), HEATMAP)
    if jax.process_index() == 0:
      figures.cross_site_heatmap(
          path, [[c["mean"] for c in line] for line in cells], train_keys, datasets,
          f"{row}: test balanced accuracy\n({f'mean ± std over {seeds} seeds' if seeds > 1 else 'one seed'})",
          stds=[[c["std"] for c in line] for line in cells] if seeds > 1 else None)
    paths.append(path)
  return paths


def markdown(tables: dict, all_results: dict, config) -> str:
  rows = [r for r in tables if not r.startswith("_")]
  baseline = tables["_baseline"]
  train_keys, datasets = _layout(all_results, rows[0])
  n_seeds = len(next(iter(all_results.values())))
  lines = [f"# PrepNet cross-dataset evaluation ({n_seeds} seed(s): {list(config.seeds)})", "",
           f"Balanced accuracy of the COVID classifier; mean ± std over seeds; Δ in pp vs **{baseline}**.",
           "Within = mean same-dataset test BA; Cross = mean of the cross-dataset Tr/Va/Te averages.", "",
           "## Summary", "", "| Method | Within | Δ Within (pp) | Cross | Δ Cross (pp) |", "|---|---|---|---|---|"]
  for r in rows:
    c = tables[r]
    lines.append(f"| {r} | {_fmt(c['Within'])} | {_fmt(c['Within_delta_pp'], True)} | {_fmt(c['Cross'])} | "
                 f"{_fmt(c['Cross_delta_pp'], True)} |")
  header = ["Method", "Train on"] + [f"{d}-{s}" for d in datasets for s in ("Tr", "Va", "Te", "Avg")]
  lines += ["", "## Balanced accuracy per dataset and split", "", "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header)]
  for r in rows:
    for key in train_keys:
      cells = [r, key] + [_fmt(tables[r].get(f"{key}|{d}|{s}")) for d in datasets for s in ("Tr", "Va", "Te", "Avg")]
      lines.append("| " + " | ".join(cells) + " |")
  header = ["Method", "Train on"] + [f"{d}-{m}" for d in datasets for m in ("Sens", "Spec", "AUC")]
  lines += ["", "## Test sensitivity / specificity / AUC", "", "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header)]
  for r in rows:
    for key in train_keys:
      cells = [r, key] + [_fmt(tables[r].get(f"{key}|{d}|{m}")) for d in datasets
                          for m in ("sensitivity", "specificity", "auc")]
      lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "## What the numbers say", ""] + verdicts(tables, rows, baseline)
  return "\n".join(lines) + "\n"


def verdicts(tables: dict, rows: list[str], baseline: str) -> list[str]:
  """Plain sentences from the paired 95 % t-interval of each row's per-seed Δ against the baseline
  (`eval.paired_stats`, the rule of the evidence report): improves / hurts / no evidence."""
  out = []
  for r in rows:
    if r == baseline:
      continue
    parts = []
    for agg in ("Within", "Cross"):
      d = tables[r][f"{agg}_delta_pp"]
      diff = paired_stats.paired_difference(np.asarray(d["values"]), np.zeros(len(d["values"])))
      if diff["n"] < 2:
        parts.append(f"{agg} {diff['mean']:+.2f} pp (single seed: no interval, so not a finding)")
        continue
      parts.append(f"{agg}: {paired_stats.verdict(diff)}, {diff['mean']:+.2f} pp "
                   f"[95 % CI {diff['ci_low']:+.2f}, {diff['ci_high']:+.2f}]")
    out.append(f"- **{r}** vs {baseline}: " + "; ".join(parts) + ".")
  return out


def write(workdir: str, tables: dict, all_results: dict, config, seconds: float) -> str:
  """`reports/prepnet_table.{json,md}` (the tables), `reports/prepnet_results.json` (the tables
  with every row's per-seed results, curves left out) and the per-row heatmaps; returns the Markdown."""
  text = markdown(tables, all_results, config) + f"\nWall time: {seconds:.0f} s\n"
  heatmaps(workdir, tables, all_results)
  rundir.write_report(workdir, prepnet_layout.TABLE_REPORT, tables, text, indent=1)
  raw = {row: {str(s): {k: v for k, v in r.items() if k != "_curves"} for s, r in by.items()}
         for row, by in all_results.items()}
  rundir.write_report(workdir, prepnet_layout.RESULTS_REPORT, {"tables": tables, "results": raw, "wall_seconds": seconds},
                      indent=1)
  return text
