"""The generators of the synthetic arm: given ones or per-class ones trained here, and the
check of which patients each one learned from against the evaluation data."""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from prepnet_jax import tasks
from prepnet_jax.data import datasets, pipeline, splits
from prepnet_jax.eval.generators import read_generator_info
from prepnet_jax.runtime import rundir
from prepnet_jax.tasks.augment_experiment.arms import Generator


def generator_training_config(config, label: int) -> ml_collections.ConfigDict:
  """`generator.train` pointed at class `label` of the generator's data (default: the train split)."""
  g = config.generator.train.copy_and_resolve_references()
  with g.unlocked():
    g.seed = int(config.seed)
    g.data.train = config.generator.data_train or config.data.train
    g.data.train_split = config.generator.data_train_split
    g.data.label_key = config.data.label_key
    g.data.class_filter = [int(label)]
    for key in ("phantom_backend", "phantom_seed", "phantom_overrides", "tfds_dir", "manual_dir"):
      g.data[key] = config.data[key]
  return g


def resolve_generators(config, workdir: str, counts: np.ndarray) -> list[Generator]:
  """The generators the synthetic arm samples from; trains per-class ones here when none is given."""
  needed = [k for k, n in enumerate(counts) if n]
  conditional = config.generator.conditional_workdir
  given = list(config.generator.workdirs or ())
  if conditional and given:
    raise ValueError("set either generator.workdirs (per class) or generator.conditional_workdir, not both")
  if conditional:
    return [Generator(conditional, None, False)]
  if given:
    if len(given) != int(config.data.num_classes):
      raise ValueError(f"generator.workdirs has {len(given)} entries; expected one per class "
                       f"({config.data.num_classes}), '' where extra.per_class is 0")
    missing = [k for k in needed if not given[k]]
    if missing:
      raise ValueError(f"generator.workdirs has no generator for class(es) {missing}, which "
                       f"extra.per_class asks images of")
    return [Generator(given[k], k, False) for k in needed]
  train_generator = tasks.get_runner(config.generator.train.task)  # gan, vae, vaegan or stylegan2
  generators = []
  for k in needed:
    gen_dir = os.path.join(workdir, "generators", f"class_{k}")
    print(f"[augment] training the class-{k} generator ({config.generator.train.task}) in {gen_dir}", flush=True)
    train_generator(generator_training_config(config, k), gen_dir)
    generators.append(Generator(gen_dir, k, True))
  return generators


def patient_ids(source) -> set[str]:
  return {str(p) for p in pipeline.column(source, "patient")}


def generator_data_check(config, generators: list[Generator], eval_sources: dict) -> dict:
  """Which data each generator learned from, and its patient overlap with the evaluation data.

  By default the generator's patients must be disjoint from every evaluation set (asserted with
  `splits.assert_disjoint`); with `generator.allow_eval_data` an overlap is allowed and recorded.
  """
  label_key = config.data.label_key
  records, eval_patients = [], {name: patient_ids(source) for name, source in eval_sources.items()}
  for generator in generators:
    info = read_generator_info(generator.workdir)
    g_label_key = info.data.label_key
    if g_label_key != label_key:
      raise ValueError(f"generator {generator.workdir} was trained with data.label_key={g_label_key!r}, "
                       f"but this experiment's classes are data.label_key={label_key!r}")
    if generator.label is not None and generator.label not in info.classes:
      raise ValueError(f"generator.workdirs[{generator.label}]={generator.workdir!r} makes classes "
                       f"{list(info.classes) or 'without a label (trained on all classes)'}, not class "
                       f"{generator.label}")
    source = datasets.training_source(info.data)
    seen = patient_ids(source)
    overlap = {name: len(seen & patients) for name, patients in eval_patients.items()}
    records.append({"workdir": os.path.abspath(generator.workdir), "label": generator.label,
                    "trained_here": generator.trained_here, "task": info.task, "kind": info.kind,
                    "num_classes": info.num_classes, "image_size": info.image_size,
                    "data": info.training_data, "class_filter": list(info.class_filter),
                    "num_images": len(source), "num_patients": len(seen), "overlap_patients": overlap,
                    "quality": _generator_quality(generator.workdir)})
    if not config.generator.allow_eval_data:
      for name, patients in eval_patients.items():
        splits.assert_disjoint({f"generator {generator.workdir}": seen, f"evaluation set {name!r}": patients})
  sees_eval = any(v for r in records for v in r["overlap_patients"].values())
  return {"generators": records, "sees_eval_data": bool(sees_eval),
          "allow_eval_data": bool(config.generator.allow_eval_data)}


def _generator_quality(workdir: str) -> dict | None:
  """The run's own Fréchet-distance record: a GAN-family `summary.json` or StyleGAN2's
  `metrics_history.json` (first and last snapshot)."""
  reports = os.path.join(workdir, rundir.REPORTS)
  if os.path.exists(os.path.join(reports, "summary.json")):
    with open(os.path.join(reports, "summary.json")) as f:
      summary = json.load(f)
    return {key: summary.get(key) for key in ("metric", "num_steps", "initial", "final")}
  if not os.path.exists(os.path.join(reports, "metrics_history.json")):
    return None
  with open(os.path.join(reports, "metrics_history.json")) as f:
    history = json.load(f)
  metric = next((k for k in (history[-1] if history else {}) if k.startswith("fd_") and
                 not k.endswith(("_std", "_noise_floor"))), None)
  return {"metric": metric, "num_steps": history[-1]["step"] if history else 0,
          "initial": history[0].get(metric) if metric else None,
          "final": history[-1].get(metric) if metric else None}
