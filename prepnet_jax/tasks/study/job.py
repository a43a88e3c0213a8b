"""A source study end to end (task 'study'): the project's jobs run in order as the paper ran them.

A study config (`configs/study_<name>.py`) holds one complete config per stage
(`config.stages.<name>`, any task: a generator, `gen_metrics`, a classifier recipe,
`augment_experiment`, ...) and their order (`config.stage_order`). Each stage runs in
`<workdir>/stages/<name>` exactly as `main.py` would run its config alone (its own `config.json`,
checkpoints, reports, auto-resume); a finished stage leaves `stage_done.json` and is not run again,
so a rerun of a killed study resumes inside the stage it was in.

Stages reach earlier stages through references, resolved just before a stage starts: any string
field (or element of a tuple of strings) of the form
  '@<stage>'          → that stage's workdir (e.g. `generated.workdir='@dcgan'`,
                        `generator.workdirs=('', '@dcgan')`, `extractors='randinit,classifier:@cls'`);
  '@best_generator'   → the generator workdir whose `gen_metrics` stage has the lowest
                        `config.select.metric` (e.g. `fd_randinit`; the thesis of seed 001 "keeps the
                        best one" by FID) among the stages in `config.select.stages`.
`@` references may appear inside a longer string (as in the `classifier:@cls` extractor spec).

The study's `data_external` (when set) is the one external test site of every
`augment_experiment` stage; its other shared fields reach the stages as field references
(configs/studies.py).

At the end the study writes `reports/study.md` and `reports/study.json`: the paper-style
tables built from the stages' own reports (`tasks.study.tables`), and prints them.
"""

from __future__ import annotations

import json
import os
import re
import time

import ml_collections

from prepnet_jax import tasks
from prepnet_jax.runtime import rundir
from prepnet_jax.tasks.study import tables

DONE_FILE = "stage_done.json"
BEST_GENERATOR = "@best_generator"
_REFERENCE = re.compile(r"@([A-Za-z0-9_]+)")


def stage_dir(workdir: str, name: str) -> str:
  return os.path.join(os.path.abspath(workdir), "stages", name)


def best_generator(config, workdir: str) -> tuple[str, dict]:
  """The generator run with the lowest `select.metric` over the `select.stages` gen_metrics stages."""
  metric, scores = str(config.select.metric), {}
  for name in config.select.stages:
    report = tables.read_report(stage_dir(workdir, name), "gen_metrics")
    values = [r["value"] for r in report["records"] if r["metric"] == metric]
    if not values:
      raise ValueError(f"stage {name!r} reports no {metric!r}; its metrics are "
                       f"{sorted({r['metric'] for r in report['records']})}")
    scores[report["generated"]["workdir"]] = float(values[0])
  if not scores:
    raise ValueError(f"{BEST_GENERATOR} needs config.select.stages (gen_metrics stages); none are given")
  best = min(scores, key=scores.get)
  return best, {"metric": metric, "scores": scores, "best": best}


def resolve_references(stage: ml_collections.ConfigDict, config, workdir: str, done: set[str],
                       selection: dict) -> ml_collections.ConfigDict:
  """A copy of `stage` with every '@<stage>' / '@best_generator' replaced (module docstring)."""
  stage = stage.copy_and_resolve_references()

  def resolve(text: str) -> str:
    if BEST_GENERATOR in text:
      if "best_generator" not in selection:
        selection["best_generator"] = best_generator(config, workdir)[1]
      text = text.replace(BEST_GENERATOR, selection["best_generator"]["best"])

    def one(match: re.Match) -> str:
      name = match.group(1)
      if name not in config.stages:
        raise ValueError(f"reference {match.group(0)!r}: no stage named {name!r}; stages: {list(config.stage_order)}")
      if name not in done:
        raise ValueError(f"reference {match.group(0)!r}: stage {name!r} has not run yet; put it earlier in "
                         f"config.stage_order ({list(config.stage_order)})")
      return stage_dir(workdir, name)
    return _REFERENCE.sub(one, text)

  def walk(node: ml_collections.ConfigDict) -> None:
    for key, value in node.items():
      if isinstance(value, ml_collections.ConfigDict):
        walk(value)
      elif isinstance(value, str) and "@" in value:
        node[key] = resolve(value)
      elif isinstance(value, (tuple, list)) and any(isinstance(v, str) and "@" in v for v in value):
        node[key] = type(value)(resolve(v) if isinstance(v, str) else v for v in value)
  walk(stage)
  if stage.task == "augment_experiment" and config.get("data_external"):
    stage.data.eval = (str(config.data_external),)  # a tuple cannot hold a field reference
  return stage


def train_and_evaluate(config, workdir: str) -> dict:
  t0 = time.time()
  order = list(config.stage_order)
  unknown = [name for name in order if name not in config.stages]
  if unknown or not order:
    raise ValueError(f"config.stage_order={order}: every entry must be a key of config.stages "
                     f"({sorted(config.stages.keys())}); unknown {unknown}")
  done, selection, timing = set(), {}, {}
  for index, name in enumerate(order):
    directory = stage_dir(workdir, name)
    marker = os.path.join(directory, DONE_FILE)
    if os.path.exists(marker):
      with open(marker) as f:
        record = json.load(f)
      print(f"[study {config.name}] stage {index + 1}/{len(order)} {name!r}: finished earlier "
            f"({record['seconds']:.0f} s)", flush=True)
    else:
      stage = resolve_references(config.stages[name], config, workdir, done, selection)
      print(f"[study {config.name}] stage {index + 1}/{len(order)} {name!r} (task {stage.task}) in {directory}",
            flush=True)
      started = time.time()
      rundir.write_config(stage, directory)
      tasks.get_runner(stage.task)(stage, directory)
      record = {"task": stage.task, "seconds": round(time.time() - started, 1)}
      with open(marker, "w") as f:
        json.dump(record, f, indent=2)
    done.add(name)
    timing[name] = record["seconds"]
  if "best_generator" not in selection and len(config.select.stages):
    selection["best_generator"] = best_generator(config, workdir)[1]
  results = tables.collect(config, {name: stage_dir(workdir, name) for name in order})
  results.update(study=config.name, title=config.title, stage_seconds=timing, selection=selection,
                 wall_time_s=round(time.time() - t0, 1))
  table = tables.format_study(config, results)
  rundir.write_report(workdir, "study", results, table)
  print("\n" + table, flush=True)
  return results
