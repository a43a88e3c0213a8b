"""The paper-style tables of a study, built from its stages' own reports (nothing is recomputed).

- Generators: one row per `gen_metrics` stage (the generator it sampled, each metric with its
  real-vs-real noise floor); the generator picked by '@best_generator' is marked. Then the
  generators the synthetic arms sampled, with their training run's own Fréchet-distance record.
- Classifiers: one row per arm of every `augment_experiment` stage (a recipe compared without
  synthetic data is an experiment with `arms=('none',)`): internal test accuracy, balanced
  accuracy, sensitivity / PPV / F1 of the positive class, AUC; external site accuracy and AUC;
  temperature and ECE before → after scaling. Mean ± sample std over the stage's seeds.
- Stages: task, wall time, workdir.
Row names come from `config.labels` ('<stage>' or '<stage>/<arm>' → name), else '<stage>: <arm>'.
"""

from __future__ import annotations

import json
import os

from prepnet_jax.runtime import rundir


def read_report(directory: str, name: str) -> dict:
  path = os.path.join(directory, rundir.REPORTS, f"{name}.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist; the stage in {directory} has not finished")
  with open(path) as f:
    return json.load(f)


def _task(directory: str) -> str:
  return rundir.read_config(directory, "study stage").task


def collect(config, directories: dict[str, str]) -> dict:
  """{'generators': [...], 'classifiers': [...], 'stages': [...]} from the stages' reports."""
  generators, classifiers, stages, trained = [], [], [], []
  for name, directory in directories.items():
    task = _task(directory)
    stages.append({"stage": name, "task": task, "workdir": directory})
    if task == "gen_metrics":
      report = read_report(directory, "gen_metrics")
      generators.append({"stage": name, "label": _label(config, name), "generated": report["generated"],
                         "records": report["records"]})
    elif task == "augment_experiment":
      report = read_report(directory, "augment_results")
      positive = report["class_names"][-1]
      for g in report["generator_data"].get("generators", []):
        trained.append({"stage": name, "class": "conditional" if g["label"] is None else report["class_names"][g["label"]],
                        **{k: g.get(k) for k in ("kind", "num_images", "num_patients", "quality", "workdir", "trained_here")}})
      for arm, record in report["arms"].items():
        classifiers.append({"stage": name, "arm": arm, "label": _label(config, name, arm),
                            "positive_class": positive, "seeds": report["seeds"],
                            "classifier": report["classifier"], "train_size": record["train_size"],
                            "eval_sets": report["eval_sets"], "summary": record["summary"],
                            "temperature_at_bound": sum(bool(run["calibration"].get("at_bound"))
                                                        for run in record["seeds"].values())})
  return {"generators": generators, "trained_generators": trained, "classifiers": classifiers, "stages": stages}


def _label(config, stage: str, arm: str | None = None) -> str:
  labels = config.labels.to_dict() if hasattr(config.labels, "to_dict") else dict(config.labels)
  key = stage if arm is None else f"{stage}/{arm}"
  if key in labels:
    return labels[key]
  return stage if arm is None else f"{labels.get(stage, stage)}: {arm}"


def _stat(s: dict | None) -> str:
  if not s or not s.get("n"):
    return "n/a"
  return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"


def _value(record: dict | None) -> str:
  if record is None:
    return "–"
  floor = record.get("noise_floor")
  text = f"{record['value']:.4g}"
  return text + (f" ({floor:.3g})" if isinstance(floor, (int, float)) else "")


def generator_table(results: dict) -> list[str]:
  rows = results["generators"]
  if not rows:
    return []
  metrics = list(dict.fromkeys(r["metric"] for row in rows for r in row["records"]))
  best = (results.get("selection", {}).get("best_generator") or {}).get("best")
  lines = ["## Generators (generated vs real training images; value (real-vs-real noise floor))", "",
           "| generator | kind | N gen | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 3)]
  for row in rows:
    by_metric = {r["metric"]: r for r in row["records"]}
    n_gen = next((r.get("n_gen") for r in row["records"]), "")
    name = row["label"] + (" **(selected)**" if best and row["generated"].get("workdir") == best else "")
    lines.append(f"| {name} | {row['generated'].get('kind', row['generated'].get('source'))} | {n_gen} | "
                 + " | ".join(_value(by_metric.get(m)) for m in metrics) + " |")
  lines.append("")
  selection = (results.get("selection") or {}).get("best_generator")
  if selection:
    lines += [f"Selected for the synthetic arm: lowest {selection['metric']} "
              f"({os.path.basename(os.path.dirname(selection['best'])) + '/' + os.path.basename(selection['best'])}).", ""]
  return lines


def classifier_table(results: dict) -> list[str]:
  rows = results["classifiers"]
  if not rows:
    return []
  positive = rows[0]["positive_class"]
  first = rows[0]
  lines = [f"## Classifiers (mean ± sample std over seeds {first['seeds']}; positive class {positive!r})", "",
           f"Internal test: {first['eval_sets']['internal']['data']} (n = {first['eval_sets']['internal']['n']}); "
           f"external site: {first['eval_sets']['external']['data']} (n = {first['eval_sets']['external']['n']}); "
           "T fitted on the validation split.", "",
           "| method | train n | accuracy | balanced acc. | sensitivity | PPV | F1 | AUC | external acc. | "
           "external AUC | T | ECE before → after |", "|" + "---|" * 12]
  for row in rows:
    internal, external = row["summary"]["internal"], row["summary"]["external"]
    calibration = row["summary"]["calibration"]
    cells = [row["label"], str(row["train_size"]), _stat(internal["accuracy"]), _stat(internal["balanced_accuracy"]),
             _stat(internal[f"{positive}/recall"]), _stat(internal[f"{positive}/precision"]),
             _stat(internal[f"{positive}/f1"]), _stat(internal["auc"]), _stat(external["accuracy"]),
             _stat(external["auc"]), _stat(calibration["temperature"]) + ("†" if row["temperature_at_bound"] else ""),
             f"{_stat(calibration['internal/ece_before'])} → {_stat(calibration['internal/ece_after'])}"]
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  at_bound = [f"{row['label']} ({row['temperature_at_bound']} of {len(row['seeds'])})" for row in rows
              if row["temperature_at_bound"]]
  if at_bound:
    lines += ["† T reached its upper bound (100) in some seeds: uniform probabilities fit their validation "
              "split best, i.e. those models' confidence carries no information there: " + ", ".join(at_bound) + ".", ""]
  by_stage = dict.fromkeys((r["stage"], r["classifier"]) for r in rows)
  if len({description for _, description in by_stage}) == 1:
    lines += [f"Classifier of every row: {first['classifier']}.", ""]
  else:
    lines += ["Classifiers: " + "; ".join(f"{stage}: {description}" for stage, description in by_stage) + ".", ""]
  return lines


def synthetic_generator_table(results: dict) -> list[str]:
  """The generators the synthetic arms sampled (trained in the stage or given), with the Fréchet
  distance their own training run recorded."""
  rows = results["trained_generators"]
  if not rows:
    return []
  lines = ["## Generators of the synthetic arms (the Fréchet distance their own training run recorded)", "",
           "| stage | class | kind | origin | training images | patients | metric | first → last | steps |",
           "|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    quality = row.get("quality") or {}
    change = (f"{quality['initial']:.1f} → {quality['final']:.1f}" if quality.get("final") is not None
              and quality.get("initial") is not None else "–")
    origin = "trained in the stage" if row["trained_here"] else os.path.basename(row["workdir"])
    lines.append(f"| {row['stage']} | {row['class']} | {row['kind']} | {origin} | {row['num_images']} | {row['num_patients']} | "
                 f"{quality.get('metric') or '–'} | {change} | {quality.get('num_steps', '–')} |")
  return lines + [""]


def format_study(config, results: dict) -> str:
  lines = [f"# {config.title}", "", config.summary.strip(), ""]
  lines += generator_table(results)
  lines += synthetic_generator_table(results)
  lines += classifier_table(results)
  lines += ["## Stages", "", "| stage | task | seconds | workdir |", "|---|---|---|---|"]
  for stage in results["stages"]:
    seconds = results["stage_seconds"].get(stage["stage"], float("nan"))
    lines.append(f"| {stage['stage']} | {stage['task']} | {seconds:.0f} | {stage['workdir']} |")
  lines += ["", f"Study wall time {results['wall_time_s']:.0f} s (this invocation; finished stages are not rerun)."]
  return "\n".join(lines) + "\n"
