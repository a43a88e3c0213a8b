"""Logits, probabilities and metric tables of a classifier state on dataset splits.

The evaluation path (no augmentation, the run's own preprocessing) shared by the classifier
task, its recipes, the augmentation experiment and PrepNet's diagnostics.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from prepnet_jax.data import datasets, pipeline, transforms
from prepnet_jax.eval import metrics as metrics_lib
from prepnet_jax.losses import classification as losses
from prepnet_jax.runtime import rundir, sharding
from prepnet_jax.runtime.state import TrainState

# --- data ----------------------------------------------------------------------------------------

def relabel(source, label_key: str):
  """Uses `label_key` (e.g. 'label3' for normal/pneumonia/COVID) as the example's `label`."""
  if label_key == "label":
    return source
  return RelabelSource(source, label_key)


class RelabelSource:
  """`source` with the field `key` served as `label`."""

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
  """Split `split` of dataset `ref`, labelled by `config.data.label_key`."""
  return relabel(datasets.get_source(ref, split, config.data), config.data.label_key)


# --- logits --------------------------------------------------------------------------------------

@jax.jit
def logits_step(state: TrainState, images: jax.Array) -> jax.Array:
  return state.apply_fn(state.variables, images, train=False)


def predict_logits(state: TrainState, source, preprocess, batch_size: int, mesh,
                   options: pipeline.LoaderOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Logits and labels of every example of `source` (evaluation path, no augmentation).

  Each process feeds its slice of every batch; the logits and labels are gathered, so every
  process returns the whole result."""
  batch_size = round_up(batch_size, mesh.devices.size)
  all_logits, all_labels = [], []
  for batch, valid in pipeline.eval_batches(source, preprocess, batch_size, options):
    arrays = sharding.shard_batch({"image": batch["image"], "label": batch["label"]}, mesh)
    logits, labels = sharding.to_host((logits_step(state, arrays["image"]), arrays["label"]))
    all_logits.append(np.asarray(logits)[:valid])
    all_labels.append(np.asarray(labels)[:valid])
  if not all_logits:
    return np.zeros((0, 1), np.float32), np.zeros((0,), np.int32)
  return np.concatenate(all_logits), np.concatenate(all_labels)


def logits_to_probs(logits: np.ndarray) -> np.ndarray:
  return np.asarray(losses.class_probabilities(jnp.asarray(logits)))


def round_up(n: int, m: int) -> int:
  """`n` rounded up to a multiple of `m` (a global batch divisible by the device count)."""
  return ((n + m - 1) // m) * m


# --- metric tables -------------------------------------------------------------------------------

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


def write_metrics_report(workdir: str, name: str, results: dict, extra: dict | None = None) -> str:
  """`reports/<name>.json` ({'results': ..., **extra}) and its markdown table; returns the table."""
  table = metrics_lib.format_metrics_table(results)
  rundir.write_report(workdir, name, {"results": results, **(extra or {})}, f"# {name}\n\n{table}\n")
  return table
