"""Does adding generated chest X-rays help a COVID classifier? (task 'augment_experiment')

Seeds 001, 003 and 004 add GAN images to a classifier's training data and report a gain; seed
004 itself warns that the gain may only be a rebalancing effect and that its generator saw the
test-site data. This job therefore trains the same classifier recipe (`cxr_recipes.fit_recipe`)
on the same real training split in several arms that differ only in the extra images:

  none        real images only
  classical   + N Keras-ImageDataGenerator variants of real images (`classical_augment` preset)
  oversample  + N duplicates of real images (the rebalancing control of seed 004)
  synthetic   + N images sampled from a generator checkpoint of this project

N per class comes from `extra.per_class` (-1 = as many as bring that class up to the largest
class), so every arm sees the same class mix. Each arm runs for every seed in `seeds` and is
evaluated on the internal test split (`data.test_split` of `data.train`) and on an external
site (`data.eval[0]`, split `data.eval_split`) (accuracy, per-class
precision/recall/F1, AUC; mean ± sample std over seeds), then calibrated (temperature fitted on
validation logits; NLL and 15-bin ECE before/after, per-class reliability diagrams) and explained
(Grad-CAM overlays, PNG and TensorBoard).

Generators: per-class workdirs (`generator.workdirs`, one per class, '' where no image is
needed), a conditional one (`generator.conditional_workdir`), or — when neither is given —
small per-class generators trained here (`generator.train` config) on the training split into
`<workdir>/generators/class_<k>`. Whatever their origin, the patients each generator was trained
on are checked against the validation, internal-test and external patients: an overlap is an
error unless `generator.allow_eval_data` is set, and then the report says so in its header.

Writes `<workdir>/reports/augment_table.md`, `augment_results.json`,
`reliability_<arm>_<set>.png` and `gradcam_<arm>_<set>.png`; each classifier run lives in
`<workdir>/arms/<arm>/seed_<s>` (a rerun resumes and does not retrain finished runs), a
servable classifier workdir of its own: `config.json` (the experiment's config narrowed to that
arm and seed), `best/` (or `finetune/best/` with a head-only phase) and, beside the best state,
`reports/calibration.json` — `predict`/`serve` take it directly or as `--config.arm`/`model_seed`.

Console: the classifier's step progress lines and, after every arm/seed run, one with the runs
done, elapsed time and the ETA of the whole experiment. TensorBoard: one run per arm/seed (event
files in its run directory, starting with its hyperparameters: that run's config) holding its
training curves; the Grad-CAM grids of every arm sit side by side in the experiment's own run
(`<workdir>`).
"""

from __future__ import annotations

import os
import time

import numpy as np

from prepnet_jax.data import pipeline, splits, transforms
from prepnet_jax.eval import classify
from prepnet_jax.runtime import rundir, sharding, writers
from prepnet_jax.tasks.augment_experiment.arms import ARMS, FieldsSource, arm_training_source, extra_counts
from prepnet_jax.tasks.augment_experiment.evaluation import (calibrate, evaluate, gradcam_report,
                                                             reliability_diagrams)
from prepnet_jax.tasks.augment_experiment.generators import (generator_data_check, patient_ids,
                                                             resolve_generators)
from prepnet_jax.tasks.augment_experiment.report import arm_record, format_report
from prepnet_jax.tasks.classifier import recipes as cxr_recipes


def _with_seed(config, seed: int):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.seed = int(seed)
  return config


def _arm_config(run_config, arm: str, seed: int):
  """The config.json of one arm's run: the experiment's, narrowed to that arm and seed."""
  config = run_config.copy_and_resolve_references()
  with config.unlocked():
    config.arms, config.seeds = (arm,), (int(seed),)
  return config


def _eval_set(config, ref: str, split: str):
  """The preprocessed examples of an evaluation split (in memory only when they fit `data.cache_mb`)."""
  source = classify.load_split(config, ref, split)
  if not len(source):
    raise ValueError(f"{ref}:{split} has no examples; check config.data")
  eval_pre = transforms.make_preprocess(config.preprocess, training=False)
  return pipeline.preprocessed_source(FieldsSource(source), eval_pre, float(config.data.cache_mb))


def train_and_evaluate(config, workdir: str) -> dict:
  """Task 'augment_experiment': generators (if needed), every arm × seed, reports (module docstring)."""
  t0, cpu0 = time.time(), time.process_time()
  arms = list(config.arms)
  unknown = sorted(set(arms) - set(ARMS))
  if unknown or not arms:
    raise ValueError(f"config.arms={arms}: expected a non-empty subset of {ARMS}")
  seeds = [int(s) for s in config.seeds]
  if not seeds:
    raise ValueError("config.seeds is empty; give at least one seed (three or more for mean ± std)")
  mesh = sharding.make_mesh()
  writer = writers.create_writer(workdir)
  reports = rundir.reports_dir(workdir)
  class_names = list(config.data.class_names)
  num_classes = int(config.data.num_classes)

  train_ref = config.data.train
  real = FieldsSource(classify.load_split(config, train_ref, config.data.train_split))
  train_labels = pipeline.column(real, "label").astype(int)
  counts = extra_counts(train_labels, config.extra.per_class, num_classes)
  if len(config.data.eval) != 1:
    raise ValueError(f"config.data.eval={tuple(config.data.eval)}: expected one external site")
  eval_refs = {"val": (train_ref, "val"), "internal": (train_ref, config.data.test_split),
               "external": (config.data.eval[0], config.data.eval_split)}
  eval_raw = {name: classify.load_split(config, ref, split) for name, (ref, split) in eval_refs.items()}
  splits.assert_disjoint({"train": patient_ids(real), **{name: patient_ids(s) for name, s in eval_raw.items()
                                                       if eval_refs[name][0] == train_ref}})
  generators = resolve_generators(config, workdir, counts) if "synthetic" in arms and counts.sum() else []
  generator_data = generator_data_check(config, generators, eval_raw)
  eval_sets = {name: _eval_set(config, ref, split) for name, (ref, split) in eval_refs.items()}
  print(f"[augment] {train_ref}:train {len(real)} images {np.bincount(train_labels, minlength=num_classes).tolist()}, "
        f"extra per class {counts.tolist()}, arms {arms}, seeds {seeds}", flush=True)

  n_bins = int(config.calibration.num_bins)
  arm_records = {}
  runs = writers.Progress(len(arms) * len(seeds), every=1, name="augment", unit="run")
  for i, arm in enumerate(arms, 1):
    per_seed = {}
    for j, seed in enumerate(seeds, 1):
      run_config = _with_seed(config, seed)
      source = arm_training_source(arm, real, counts, run_config, generators, seed)
      run_dir = os.path.join(workdir, "arms", arm, f"seed_{seed}")
      arm_config = _arm_config(run_config, arm, seed)
      rundir.write_config(arm_config, run_dir)
      run_writer = writers.create_writer(run_dir)
      run_writer.write_hparams({"arm": arm, **arm_config.to_dict()})
      state, meta = cxr_recipes.fit_recipe(run_config, run_dir, source, FieldsSource(eval_raw["val"]),
                                           mesh=mesh, writer=run_writer, name=f"{arm}/seed{seed}")
      run_writer.close()
      metrics, logits = evaluate(state, eval_sets, run_config, mesh)
      np.savez(os.path.join(run_dir, "logits.npz"), **{f"{name}_{part}": array for name, (z, y) in logits.items()
                                                       for part, array in (("logits", z), ("labels", y))})
      per_seed[seed] = {"metrics": metrics, "calibration": calibrate(logits, n_bins, meta["model_dir"], class_names),
                        "best_step": meta.get("best_step"),
                        "train_labels": np.bincount(pipeline.column(source, "label").astype(int),
                                                    minlength=num_classes).tolist()}
      if seed == seeds[0]:
        reliability_diagrams(logits, per_seed[seed]["calibration"]["temperature"], class_names, n_bins, arm,
                              reports)
        gradcam_report(run_config, state, eval_sets, arm, reports, writer)
      runs((i - 1) * len(seeds) + j, what=f"arm {i}/{len(arms)} {arm!r} seed {seed} ({j}/{len(seeds)}) done")
    arm_records[arm] = arm_record(per_seed, class_names)

  results = {
      "class_names": class_names, "seeds": seeds, "arms": arm_records,
      "train": {"data": f"{train_ref}:{config.data.train_split}", "size": len(real),
                "per_class": np.bincount(train_labels, minlength=num_classes).tolist()},
      "extra_per_class": counts.tolist(), "extra_per_class_spec": list(config.extra.per_class),
      "classifier": f"{config.model.name} ×{config.model.width_multiplier} at {config.preprocess.image_size} px, "
                    f"{config.num_epochs} epochs (head-only {config.head_only_epochs}), "
                    f"{config.optim.name} lr {config.optim.learning_rate} ({config.optim.schedule})",
      "eval_sets": {name: {"data": f"{ref}:{split}", "n": len(eval_sets[name])}
                    for name, (ref, split) in eval_refs.items()},
      "generator_data": generator_data, "calibration_bins": n_bins,
      "classical_preset": config.classical.preset, "wall_time_s": time.time() - t0,
      "process_cpu_time_s": time.process_time() - cpu0}
  table = format_report(results)
  rundir.write_report(workdir, "augment_results", results)
  with open(os.path.join(reports, "augment_table.md"), "w") as f:
    f.write(table)
  writer.flush()
  print("\n" + table, flush=True)
  return results
