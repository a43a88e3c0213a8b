"""COVID classifier training and evaluation (task 'classifier').

A linear script in the flax-examples style: sources → preprocessing → model and state →
auto-resume → jitted, data-parallel train/eval steps → model selection on the validation
metric → temperature scaling of the best checkpoint on its validation split (`calibrate`:
`reports/calibration.json`, which `predict`/`serve` apply) → evaluation of the best checkpoint
on every dataset (site) and split → reports.
`train_step` and `fit` are reused by the CXR recipes, the augmentation experiment and PrepNet's
diagnostics, `calibrate` by the CXR recipes; the model and state come from
`models.classifier_factory`, the evaluation path (`predict_logits`, `evaluate_all`,
`load_split`) from `eval.classify`.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from prepnet_jax.data import datasets, pipeline, transforms
from prepnet_jax.eval import calibration, metrics as metrics_lib
from prepnet_jax.eval.classify import (evaluate_all, load_split, logits_to_probs, predict_logits,
                                       write_metrics_report)
from prepnet_jax.losses import classification as losses
from prepnet_jax.models.classifier_factory import build_classifier, create_classifier_state
from prepnet_jax.runtime import checkpointing, checks, optimizers, sharding, writers
from prepnet_jax.runtime.state import TrainState

# --- steps ---------------------------------------------------------------------------------------

@functools.partial(jax.jit, donate_argnums=0)
def train_step(state: TrainState, batch: dict, class_weights: jax.Array | None):
  """One SGD step on the global batch; BatchNorm statistics are over the global batch."""
  dropout_rng = jax.random.fold_in(state.rng, state.step)

  def loss_fn(params):
    out, updates = state.apply_fn(state.variables_with(params), batch["image"], train=True,
                                  rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    return losses.classification_loss(out, batch["label"], class_weights), (out, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads, batch_stats=updates.get("batch_stats", state.batch_stats))
  preds = (logits[:, 0] > 0).astype(jnp.int32) if logits.shape[-1] == 1 else logits.argmax(-1)
  accuracy = (preds == batch["label"].astype(jnp.int32)).mean()
  return state, {"loss": loss, "accuracy": accuracy}


# --- data ----------------------------------------------------------------------------------------

def training_inputs(config, train_source):
  """(source, preprocess) for training: augmented examples are preprocessed on every read; without
  augmentation they are kept preprocessed in memory when they fit in `config.data.cache_mb`."""
  augment = dict(config.preprocess.augment)
  if transforms.augments(augment):
    return train_source, transforms.make_preprocess(config.preprocess, training=True)
  eval_pre = transforms.make_preprocess(config.preprocess, training=False)
  return pipeline.cache_if_small(train_source, eval_pre, float(config.data.cache_mb), seed=int(config.seed))


# --- training ------------------------------------------------------------------------------------

def fit(config, workdir: str, train_source, val_source, *, mesh=None, writer=None,
        name: str = "train") -> tuple[TrainState, dict]:
  """Trains with auto-resume from `workdir/checkpoints`; returns the best-on-validation state.

  Model selection: after every epoch the validation `config.select_metric` is computed and the
  best state is kept in `workdir/best`. A finished run (all steps done) is not retrained.
  """
  mesh = mesh or sharding.make_mesh()
  writer = writer or writers.create_writer(workdir)
  batch_size = int(config.batch_size)
  sharding.local_batch_size(batch_size, mesh)
  source, preprocess = training_inputs(config, train_source)
  balance = config.data.balance
  balance = ("label", int(balance[0]), float(balance[1])) if balance else None
  dataset = pipeline.train_dataset(source, preprocess, batch_size, seed=int(config.seed), balance=balance)
  steps_per_epoch = pipeline.steps_per_epoch(source, batch_size)
  total_steps = steps_per_epoch * int(config.num_epochs)
  labels = pipeline.column(source, "label")
  weights_spec = config.class_weights
  class_weights = None if weights_spec == "none" else jnp.asarray(
      pipeline.class_weights(labels, int(config.data.num_classes), weights_spec))

  model = build_classifier(config)
  rng = jax.random.key(int(config.seed))
  state = create_classifier_state(config, model, rng, steps_per_epoch, total_steps)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), int(config.keep_checkpoints))
  best_ckpt = checkpointing.Checkpointer(os.path.join(workdir, "best"), 1)
  state, restored_meta, how = checkpointing.resume(ckpt, state, workdir)
  meta = {"iterator": None, "history": [], "best_metric": None, "best_step": None, "plateau": {},
          **restored_meta}
  if restored_meta:
    logging.info("%s: %s", workdir, how)
    print(f"[{name}] resuming from checkpoint step {int(state.step)} in {ckpt.directory}", flush=True)
  state = sharding.replicate(state, mesh)
  plateau = None
  if config.optim.schedule == "plateau":
    plateau = optimizers.PlateauScheduler(config.optim.plateau_factor, config.optim.plateau_patience,
                                          config.optim.plateau_min_lr, mode="max")
    plateau.load_state_dict(meta.get("plateau", {}))

  eval_pre = transforms.make_preprocess(config.preprocess, training=False)
  select = config.select_metric
  start = int(jax.device_get(state.step))
  loader = pipeline.loader_options(config.data)
  iterator = pipeline.make_iterator(dataset, meta.get("iterator"), loader)
  progress = writers.Progress(total_steps, int(config.log_every_steps), name, first_step=start)
  history = meta.get("history", [])
  step_losses = meta.get("step_losses", [])
  t0 = time.time()
  for step in range(start + 1, total_steps + 1):
    batch = sharding.shard_batch(next(iterator), mesh)
    state, scalars = train_step(state, batch, class_weights)
    if step == start + 1:  # the first step also compiled: no guide to the speed of the others
      jax.block_until_ready(state)
      progress.restart_rate(step)
    if step % int(config.log_every_steps) == 0 or step % steps_per_epoch == 0:
      scalars = jax.device_get(scalars)
      checks.check_finite(scalars, step)
      step_losses.append([step, float(scalars["loss"])])
      writer.write_scalars(step, {f"{name}/{k}": v for k, v in scalars.items()})
      progress(step, scalars, batch_size)
    if step % steps_per_epoch == 0:
      epoch = step // steps_per_epoch
      val_logits, val_labels = predict_logits(state, val_source, eval_pre, batch_size, mesh, loader)
      val = metrics_lib.classification_metrics(val_labels, logits_to_probs(val_logits),
                                               list(config.data.class_names))
      score = val[select]
      lr = optimizers.current_learning_rate(jax.device_get(state.opt_state))
      history.append({"epoch": epoch, "step": step, f"val_{select}": score, "val_auc": val["auc"], "lr": lr})
      writer.write_scalars(step, {f"{name}/val_{select}": score, f"{name}/val_auc": val["auc"], f"{name}/lr": lr})
      print(f"[{name}] epoch {epoch}/{config.num_epochs} val {select}={score:.4f} auc={val['auc']:.4f}", flush=True)
      if plateau is not None:
        state = state.replace(opt_state=sharding.replicate(plateau.step(score, jax.device_get(state.opt_state)), mesh))
      if meta.get("best_metric") is None or (np.isfinite(score) and score > meta["best_metric"]):
        meta["best_metric"], meta["best_step"] = float(score), step
        best_ckpt.save(step, jax.device_get(state), {"epoch": epoch, select: float(score)})
      if epoch % int(config.checkpoint_every_epochs) == 0 or step == total_steps:
        meta.update(iterator=iterator.get_state(), history=history, step_losses=step_losses,
                    plateau=plateau.state_dict() if plateau else {})
        ckpt.save(step, jax.device_get(state), meta)
  iterator.close()  # its loader threads end with the training, not when the collector runs
  if start < total_steps:
    logging.info("%s: trained %d steps in %.1fs", name, total_steps - start, time.time() - t0)
  if best_ckpt.latest_step() is not None:
    state, _ = best_ckpt.restore(jax.device_get(state))
    state = sharding.replicate(state, mesh)
  meta["step_losses"] = step_losses
  meta["history"] = history
  return state, meta


def calibrate(config, state, model_dir: str, val_source, test_source=None, *, mesh=None) -> dict | None:
  """Fits the temperature of the selected model on its validation logits, reports it on the test
  split and writes both into `model_dir` (`calibration.write_model_calibration`); None (and a
  note) when there is no validation example."""
  mesh = mesh or sharding.make_mesh()
  eval_pre = transforms.make_preprocess(config.preprocess, training=False)
  val = predict_logits(state, val_source, eval_pre, int(config.batch_size), mesh)
  if not len(val[1]):
    print(f"[calibration] {model_dir}: no validation examples, no temperature fitted (T = 1)", flush=True)
    return None
  test = None
  if test_source is not None and len(test_source):
    test = predict_logits(state, test_source, eval_pre, int(config.batch_size), mesh)
  report = calibration.write_model_calibration(model_dir, val, config.data.class_names, test)
  v = report["val"]
  print(f"[calibration] T = {report['temperature']:.4f} fitted on {v['n']} validation examples "
        f"(NLL {v['nll_before']:.4f} → {v['nll_after']:.4f}): "
        f"{os.path.join(model_dir, calibration.CALIBRATION_FILE)}", flush=True)
  return report


def calibration_summary(report: dict | None, model_dir: str) -> dict | None:
  """The temperature and where its report is, for a job's metrics report."""
  if report is None:
    return None
  return {"temperature": report["temperature"], "file": os.path.join(model_dir, calibration.CALIBRATION_FILE)}


def train_and_evaluate(config, workdir: str) -> dict:
  mesh = sharding.make_mesh()
  writer = writers.create_writer(workdir)
  train_ref = config.data.train
  datasets.record_folder_labels(config, workdir)  # folder datasets: label mapping and skipped files
  train_source = load_split(config, train_ref, config.data.train_split)
  val_source = load_split(config, train_ref, "val")
  print(f"[classifier] {config.model.name} on {train_ref}: {len(train_source)} train / "
        f"{len(val_source)} val examples, {jax.device_count()} device(s)", flush=True)
  _log_example_images(writer, config, train_source)
  state, meta = fit(config, workdir, train_source, val_source, mesh=mesh, writer=writer)
  report = calibrate(config, state, workdir, val_source, load_split(config, train_ref, "test"), mesh=mesh)
  refs = list(config.data.eval)
  results = evaluate_all(config, state, mesh, refs, figures_workdir=workdir, calibration_report=report)
  table = write_metrics_report(workdir, "metrics", results, {
      "best_step": meta.get("best_step"), "best_val_metric": meta.get("best_metric"),
      "select_metric": config.select_metric, "calibration": calibration_summary(report, workdir),
      "history": meta.get("history"), "step_losses": meta.get("step_losses")})
  print(f"\nBest checkpoint: step {meta.get('best_step')} (val {config.select_metric}"
        f" = {meta.get('best_metric')})\n{table}\n", flush=True)
  writer.flush()
  return results


def _log_example_images(writer, config, source, n: int = 16) -> None:
  pre = transforms.make_preprocess(config.preprocess, training=False)
  rows = [pre(dict(source[i]), np.random.default_rng(i)) for i in range(min(n, len(source)))]
  if not rows:
    return
  images = np.stack([transforms.denormalize(r["image"], config.preprocess.value_range) for r in rows])
  writer.write_images(0, {"inputs": writers.image_grid(images, ncols=8)[None]})
