"""Training recipes of the chest-X-ray studies that `classifier.fit` alone does not cover.

- Early stopping (seed 003: stop when the validation metric has not improved for
  `early_stopping_patience` epochs). `fit` runs a fixed number of epochs, so the recipe calls it
  one epoch at a time: each call resumes from the previous call's checkpoint (model, optimizer,
  data-iterator position), which makes the run identical to an uninterrupted one, and the
  stopping rule reads the validation history `fit` keeps. Only schedules that do not depend on
  the total number of steps (constant, step, exponential, plateau) allow this.
- Head-only warm-up, then full fine-tuning (seed 004: 5 epochs training only the new final
  layer at a constant learning rate, then 30 epochs of one-cycle on every layer). Both phases
  are `fit` runs with their own configs and workdirs (`<workdir>/head_only`,
  `<workdir>/finetune`); the second starts from the first's best state through a step-0
  checkpoint written into its workdir before it starts (then `fit`'s auto-resume picks it up).
  During the head-only phase the frozen backbone's BatchNorm statistics still adapt, as in a
  PyTorch model in train() mode with requires_grad=False. Each phase directory gets its own
  `config.json` (the phase's config), so `finetune/` — where the model is — is a classifier
  workdir of its own (`eval.trained` serves it from the top-level workdir).

The selected model is then temperature-scaled on the validation split (`classifier.calibrate`)
in its own directory: `<workdir>/reports/calibration.json`, or `<workdir>/finetune/reports/` for
two phases.

Config fields (in every classifier config, off there): `head_only_epochs` (0 = one phase),
`head_only_learning_rate`, `early_stopping_patience` (0 = off). Task 'cxr_recipe' =
`train_and_evaluate` here: the classifier task's data, evaluation and reports with this fit.
"""

from __future__ import annotations

import os

import jax
import numpy as np

from prepnet_jax.data import datasets, pipeline
from prepnet_jax.eval import classify
from prepnet_jax.models import classifier_factory
from prepnet_jax.runtime import checkpointing, optimizers, rundir, sharding, writers
from prepnet_jax.tasks.classifier import train as classifier


def stopping_epoch(history: list[dict], metric_key: str, patience: int) -> int | None:
  """The epoch at which training stops: `patience` epochs after the best one, else None.

  The best epoch is the first with the maximal metric (the one `fit` keeps as its best state).
  """
  scores = [h[metric_key] for h in history]
  if not scores:
    return None
  finite = np.where(np.isfinite(scores), scores, -np.inf)
  best = int(np.argmax(finite))
  return history[best + patience]["epoch"] if len(scores) - 1 - best >= patience else None


def _with(config, **fields):
  """A copy of `config` with (possibly dotted) fields replaced."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.update_from_flattened_dict(fields)
  return config


def fit_with_early_stopping(config, workdir: str, train_source, val_source, *, mesh=None,
                            writer=None, name: str = "train"):
  """`classifier.fit` with early stopping on the validation `select_metric` (patience in epochs).

  Returns (best state, meta) like `fit`; meta['early_stopping'] records the patience and the
  epoch training stopped at (None when it ran all `num_epochs`).
  """
  patience = int(config.early_stopping_patience)
  if patience <= 0:
    return classifier.fit(config, workdir, train_source, val_source, mesh=mesh, writer=writer, name=name)
  schedule = config.optim.schedule
  if schedule in optimizers.TOTAL_STEP_SCHEDULES:
    raise ValueError(f"early_stopping_patience={patience} needs a schedule that does not depend on the "
                     f"total number of steps, got optim.schedule={schedule!r}; use constant, step, "
                     f"exponential or plateau, or set early_stopping_patience=0")
  mesh = mesh or sharding.make_mesh()
  writer = writer or writers.create_writer(workdir)
  metric_key = f"val_{config.select_metric}"
  steps_per_epoch = pipeline.steps_per_epoch(train_source, int(config.batch_size))
  latest = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints")).latest_step()
  first_epoch = max(1, (latest or 0) // steps_per_epoch)
  stopped = None
  for epoch in range(first_epoch, int(config.num_epochs) + 1):
    state, meta = classifier.fit(_with(config, num_epochs=epoch), workdir, train_source, val_source,
                                 mesh=mesh, writer=writer, name=name)
    stopped = stopping_epoch(meta["history"], metric_key, patience)
    if stopped is not None:
      print(f"[{name}] early stopping at epoch {stopped}: val {metric_key[4:]} has not improved for "
            f"{patience} epochs (best epoch {stopped - patience})", flush=True)
      break
  meta["early_stopping"] = {"patience": patience, "metric": metric_key, "stopped_at_epoch": stopped}
  return state, meta


def head_only_config(config):
  """Phase 1 of seed 004: backbone frozen, constant `head_only_learning_rate`, no early stopping."""
  return _with(config, num_epochs=int(config.head_only_epochs), **{
      "model.freeze_backbone": True, "optim.schedule": "constant",
      "optim.learning_rate": float(config.head_only_learning_rate), "early_stopping_patience": 0})


def finetune_config(config):
  """Phase 2 of seed 004: every layer trained with the config's own optimizer and schedule."""
  return _with(config, **{"model.freeze_backbone": False})


def initialise_from(config, workdir: str, train_source, source_state) -> bool:
  """Writes a step-0 checkpoint into `workdir` holding `source_state`'s weights and a fresh
  optimizer of `config`, so `fit` starts from them; False (and nothing written) when `workdir`
  already has checkpoints (a resumed run)."""
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  if ckpt.latest_step() is not None:
    return False
  steps_per_epoch = pipeline.steps_per_epoch(train_source, int(config.batch_size))
  model = classifier_factory.build_classifier(config)
  fresh = classifier_factory.create_classifier_state(config, model, jax.random.key(int(config.seed)), steps_per_epoch,
                                  steps_per_epoch * int(config.num_epochs))
  source_state = jax.device_get(source_state)
  state = fresh.replace(params=source_state.params, batch_stats=source_state.batch_stats,
                        opt_state=fresh.tx.init(source_state.params))
  ckpt.save(0, state, {"iterator": None, "history": [], "best_metric": None, "best_step": None,
                       "plateau": {}})
  return True


def fit_recipe(config, workdir: str, train_source, val_source, *, mesh=None, writer=None,
               name: str = "train"):
  """The recipe of `config`: optional head-only phase, then training with optional early stopping.

  Returns (best state, meta); meta['model_dir'] is the directory of the best state: `workdir`,
  or with a head-only phase `<workdir>/finetune`, where the final phase runs (meta['head_only']
  then holds the first phase's meta).
  """
  mesh = mesh or sharding.make_mesh()
  writer = writer or writers.create_writer(workdir)
  if int(config.head_only_epochs) <= 0:
    state, meta = fit_with_early_stopping(config, workdir, train_source, val_source, mesh=mesh,
                                          writer=writer, name=name)
    return state, {**meta, "model_dir": workdir}
  head_only, head_dir = head_only_config(config), os.path.join(workdir, "head_only")
  rundir.write_config(head_only, head_dir)
  head_state, head_meta = classifier.fit(head_only, head_dir, train_source, val_source, mesh=mesh,
                                         writer=writer, name=f"{name}/head_only")
  finetune = finetune_config(config)
  finetune_dir = os.path.join(workdir, "finetune")
  rundir.write_config(finetune, finetune_dir)
  if initialise_from(finetune, finetune_dir, train_source, head_state):
    print(f"[{name}/finetune] starts from the head-only phase's best state (step "
          f"{head_meta.get('best_step')})", flush=True)
  state, meta = fit_with_early_stopping(finetune, finetune_dir, train_source, val_source, mesh=mesh,
                                        writer=writer, name=f"{name}/finetune")
  meta["head_only"] = {k: head_meta.get(k) for k in ("history", "best_step", "best_metric")}
  return state, {**meta, "model_dir": finetune_dir}


def train_and_evaluate(config, workdir: str) -> dict:
  """Task 'cxr_recipe': the classifier task with `fit_recipe` in place of `fit`."""
  mesh = sharding.make_mesh()
  writer = writers.create_writer(workdir)
  train_ref = config.data.train
  datasets.record_folder_labels(config, workdir)  # folder datasets: label mapping and skipped files
  train_source = classify.load_split(config, train_ref, config.data.train_split)
  val_source = classify.load_split(config, train_ref, "val")
  print(f"[cxr_recipe] {config.model.name} on {train_ref}: {len(train_source)} train / "
        f"{len(val_source)} val examples, head-only epochs {config.head_only_epochs}, "
        f"early-stopping patience {config.early_stopping_patience}", flush=True)
  state, meta = fit_recipe(config, workdir, train_source, val_source, mesh=mesh, writer=writer)
  model_dir = meta["model_dir"]
  report = classifier.calibrate(config, state, model_dir, val_source,
                                classify.load_split(config, train_ref, "test"), mesh=mesh)
  results = classify.evaluate_all(config, state, mesh, list(config.data.eval), figures_workdir=workdir,
                                  calibration_report=report)
  select = config.select_metric
  extra = {"best_step": meta.get("best_step"), "best_val_metric": meta.get("best_metric"),
           "select_metric": select, "model_dir": model_dir,
           "calibration": classifier.calibration_summary(report, model_dir), "history": meta.get("history"),
           "early_stopping": meta.get("early_stopping"), "head_only": meta.get("head_only")}
  table = classify.write_metrics_report(workdir, "metrics", results, extra)
  print(f"\nBest checkpoint: step {meta.get('best_step')} (val {select} = {meta.get('best_metric')})\n"
        f"{table}\n", flush=True)
  writer.flush()
  return results
