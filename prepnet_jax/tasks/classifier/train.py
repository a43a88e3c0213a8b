"""COVID classifier training and evaluation (task 'classifier').

A linear script in the flax-examples style: sources → preprocessing → model and state →
auto-resume → jitted, data-parallel train/eval steps → model selection on the validation
metric → evaluation of the best checkpoint on every dataset (site) and split → reports.
The pieces (`build_model`, `create_state`, `train_step`, `predict`, `fit`, `evaluate_all`) are
reused by the augmentation experiment, the prediction job and PrepNet's E_cov.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from prepnet_jax.losses import classification as losses
from prepnet_jax import models
from prepnet_jax.data import datasets, pipeline, transforms
from prepnet_jax.eval import metrics as metrics_lib
from prepnet_jax.runtime import checkpointing, checks
from prepnet_jax.runtime import writers
from prepnet_jax.runtime import optimizers, sharding
from prepnet_jax.runtime.state import TrainState, create_train_state


# --- model and state -----------------------------------------------------------------------------

def num_outputs(config) -> int:
  """Binary tasks use one logit (BCE, as the studies do); K-class tasks K logits."""
  k = int(config.data.num_classes)
  return 1 if k == 2 and config.model.get("binary_single_logit", True) else k


def build_model(config):
  kwargs = dict(config.model.get("kwargs", {}) or {})
  if "width_multiplier" in config.model:
    kwargs.setdefault("width_multiplier", float(config.model.width_multiplier))
  if config.model.get("dropout_rate", None) is not None:
    kwargs.setdefault("dropout_rate", float(config.model.dropout_rate))
  return models.get_classifier(config.model.name, num_outputs(config), **kwargs)


def create_state(config, model, rng, steps_per_epoch: int, total_steps: int) -> TrainState:
  size, channels = int(config.preprocess.image_size), int(config.preprocess.channels)
  sample = jnp.zeros((1, size, size, channels), jnp.float32)
  variables = jax.eval_shape(lambda: model.init({"params": rng, "dropout": rng}, sample, train=False))
  mask = models.trainable_mask(variables["params"], bool(config.model.get("freeze_backbone", False)))
  tx = optimizers.make_optimizer(config.optim, steps_per_epoch, total_steps, trainable_mask=mask)
  state = create_train_state(model, tx, rng, sample)
  path = config.model.get("pretrained_path", "")
  if path:
    loaded = models.load_pretrained(config.model.name, state.variables, path,
                                    sha256=config.model.get("pretrained_sha256", "") or None)
    state = state.replace(params=loaded["params"], batch_stats=loaded.get("batch_stats", state.batch_stats),
                          opt_state=tx.init(loaded["params"]))
  else:
    logging.info("model %s: random initialisation (no pretrained_path given)", config.model.name)
  return state


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


@jax.jit
def logits_step(state: TrainState, images: jax.Array) -> jax.Array:
  return state.apply_fn(state.variables, images, train=False)




def predict_logits(state: TrainState, source, preprocess, batch_size: int, mesh) -> tuple[np.ndarray, np.ndarray]:
  """Logits and labels of every example of `source` (evaluation path, no augmentation)."""
  batch_size = _round_up(batch_size, mesh.devices.size)
  all_logits, all_labels = [], []
  for batch, valid in pipeline.eval_batches(source, preprocess, batch_size):
    images = sharding.shard_batch({"image": batch["image"]}, mesh)["image"]
    logits = np.asarray(jax.device_get(logits_step(state, images)))
    all_logits.append(logits[:valid])
    all_labels.append(np.asarray(batch["label"])[:valid])
  if not all_logits:
    return np.zeros((0, 1), np.float32), np.zeros((0,), np.int32)
  return np.concatenate(all_logits), np.concatenate(all_labels)


def logits_to_probs(logits: np.ndarray) -> np.ndarray:
  return np.asarray(losses.class_probabilities(jnp.asarray(logits)))


def _round_up(n: int, m: int) -> int:
  return ((n + m - 1) // m) * m


# --- data ----------------------------------------------------------------------------------------

def relabel(source, label_key: str):
  """Uses `label_key` (e.g. 'label3' for normal/pneumonia/COVID) as the example's `label`."""
  if label_key == "label":
    return source
  return _RelabelSource(source, label_key)


class _RelabelSource:
  def __init__(self, source, key):
    self.source, self.key = source, key

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    ex = dict(self.source[i])
    ex["label"] = ex[self.key]
    return ex

  def column(self, key):
    return pipeline.column(self.source, self.key if key == "label" else key)


def load_split(config, ref: str, split: str):
  return relabel(datasets.get_source(ref, split, config.data), config.data.get("label_key", "label"))


def training_inputs(config, train_source):
  """(source, preprocess) for training: materialised once when there is no augmentation."""
  eval_pre = transforms.make_preprocess(config.preprocess, training=False)
  augment = dict(config.preprocess.get("augment", {}) or {})
  if not any(bool(v) for v in augment.values()):
    return pipeline.materialize(train_source, eval_pre, seed=config.seed), lambda ex, rng: ex
  return train_source, transforms.make_preprocess(config.preprocess, training=True)


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
  balance = config.data.get("balance", None)
  balance = ("label", int(balance[0]), float(balance[1])) if balance else None
  dataset = pipeline.train_dataset(source, preprocess, batch_size, seed=int(config.seed), balance=balance)
  steps_per_epoch = pipeline.steps_per_epoch(source, batch_size)
  total_steps = steps_per_epoch * int(config.num_epochs)
  labels = pipeline.column(source, "label")
  weights_spec = config.get("class_weights", "none")
  class_weights = None if weights_spec == "none" else jnp.asarray(
      pipeline.class_weights(labels, int(config.data.num_classes), weights_spec))

  model = build_model(config)
  rng = jax.random.key(int(config.seed))
  state = create_state(config, model, rng, steps_per_epoch, total_steps)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), int(config.get("keep_checkpoints", 2)))
  best_ckpt = checkpointing.Checkpointer(os.path.join(workdir, "best"), 1)
  meta = {"iterator": None, "history": [], "best_metric": None, "best_step": None, "plateau": {}}
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    logging.info("resumed %s from step %d", workdir, int(state.step))
    print(f"[{name}] resuming from checkpoint step {int(state.step)} in {ckpt.directory}", flush=True)
  state = sharding.replicate(state, mesh)
  plateau = None
  if config.optim.get("schedule", "constant") == "plateau":
    plateau = optimizers.PlateauScheduler(config.optim.get("plateau_factor", 0.1),
                                          config.optim.get("plateau_patience", 5),
                                          config.optim.get("plateau_min_lr", 0.0), mode="max")
    plateau.load_state_dict(meta.get("plateau", {}))

  eval_pre = transforms.make_preprocess(config.preprocess, training=False)
  select = config.get("select_metric", "balanced_accuracy")
  start = int(jax.device_get(state.step))
  iterator = pipeline.make_iterator(dataset, meta.get("iterator"))
  progress = writers.Progress(total_steps, int(config.get("log_every", 10)), name, first_step=start)
  history = meta.get("history", [])
  step_losses = meta.get("step_losses", [])
  t0 = time.time()
  for step in range(start + 1, total_steps + 1):
    batch = sharding.shard_batch(next(iterator), mesh)
    state, scalars = train_step(state, batch, class_weights)
    if step % int(config.get("log_every", 10)) == 0 or step % steps_per_epoch == 0:
      scalars = jax.device_get(scalars)
      checks.check_finite(scalars, step)
      step_losses.append([step, float(scalars["loss"])])
      writer.write_scalars(step, {f"{name}/{k}": v for k, v in scalars.items()})
      progress(step, scalars, batch_size)
    if step % steps_per_epoch == 0:
      epoch = step // steps_per_epoch
      val_logits, val_labels = predict_logits(state, val_source, eval_pre, batch_size, mesh)
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
      if epoch % int(config.get("checkpoint_every_epochs", 1)) == 0 or step == total_steps:
        meta.update(iterator=iterator.get_state(), history=history, step_losses=step_losses,
                    plateau=plateau.state_dict() if plateau else {})
        ckpt.save(step, jax.device_get(state), meta)
  if start < total_steps:
    logging.info("%s: trained %d steps in %.1fs", name, total_steps - start, time.time() - t0)
  if best_ckpt.latest_step() is not None:
    state, _ = best_ckpt.restore(jax.device_get(state))
    state = sharding.replicate(state, mesh)
  meta["step_losses"] = step_losses
  meta["history"] = history
  return state, meta


def evaluate_all(config, state, mesh, refs: list[str], splits=("train", "val", "test"),
                 transform_logits=None) -> dict[str, dict]:
  """Metrics of `state` on every dataset reference × split, keyed 'ref:split'."""
  eval_pre = transforms.make_preprocess(config.preprocess, training=False)
  results = {}
  for ref in refs:
    for split in splits:
      source = load_split(config, ref, split)
      if len(source) == 0:
        continue
      logits, labels = predict_logits(state, source, eval_pre, int(config.batch_size), mesh)
      if transform_logits is not None:
        logits = transform_logits(logits)
      results[f"{ref}:{split}"] = metrics_lib.classification_metrics(
          labels, logits_to_probs(logits), list(config.data.class_names))
  return results


def write_reports(workdir: str, name: str, results: dict, extra: dict | None = None) -> str:
  reports = os.path.join(workdir, "reports")
  os.makedirs(reports, exist_ok=True)
  with open(os.path.join(reports, f"{name}.json"), "w") as f:
    json.dump({"results": results, **(extra or {})}, f, indent=2)
  table = metrics_lib.format_metrics_table(results)
  with open(os.path.join(reports, f"{name}.md"), "w") as f:
    f.write(f"# {name}\n\n{table}\n")
  return table


def train_and_evaluate(config, workdir: str) -> dict:
  mesh = sharding.make_mesh()
  writer = writers.create_writer(workdir)
  train_ref = config.data.train
  train_source = load_split(config, train_ref, "train")
  val_source = load_split(config, train_ref, "val")
  print(f"[classifier] {config.model.name} on {train_ref}: {len(train_source)} train / "
        f"{len(val_source)} val examples, {jax.device_count()} device(s)", flush=True)
  _log_example_images(writer, config, train_source)
  state, meta = fit(config, workdir, train_source, val_source, mesh=mesh, writer=writer)
  refs = list(config.data.get("eval", [train_ref]))
  results = evaluate_all(config, state, mesh, refs)
  table = write_reports(workdir, "metrics", results, {
      "best_step": meta.get("best_step"), "best_val_metric": meta.get("best_metric"),
      "select_metric": config.get("select_metric", "balanced_accuracy"),
      "history": meta.get("history"), "step_losses": meta.get("step_losses")})
  print(f"\nBest checkpoint: step {meta.get('best_step')} (val {config.get('select_metric', 'balanced_accuracy')}"
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
