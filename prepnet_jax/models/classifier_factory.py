"""A classifier and its train state from a config's `model` and `optim` sections.

The one place that turns `config.model` (name, width, dropout, kwargs, optional local ImageNet
weights, frozen backbone), `config.half_precision` (bfloat16 compute, `runtime.precision`) and
`config.optim` into a flax module and a `TrainState`; the
classifier task trains what it builds, and `eval.trained` rebuilds the same structure to
restore a finished run. Module and optimizer come from `compile_cache.build_once`, so every
seed, arm, epoch-wise refit (early stopping) or reload with an equal setting gets the same
objects and reuses the compiled train/eval steps instead of compiling them again.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from absl import logging

from prepnet_jax import models
from prepnet_jax.runtime import compile_cache, optimizers, precision
from prepnet_jax.runtime.state import TrainState, create_train_state


def num_outputs(config) -> int:
  """Binary tasks use one logit (BCE, as the studies do); K-class tasks K logits."""
  k = int(config.data.num_classes)
  return 1 if k == 2 and config.model.binary_single_logit else k


def _module(name: str, outputs: int, kwargs: tuple):
  return models.get_classifier(name, outputs, **dict(kwargs))


def build_classifier(config):
  """The flax module of `config.model` with `num_outputs(config)` logits (one object per setting)."""
  kwargs = dict(config.model.kwargs or {})
  kwargs.setdefault("width_multiplier", float(config.model.width_multiplier))
  kwargs.setdefault("dropout_rate", float(config.model.dropout_rate))
  kwargs.setdefault("dtype", precision.compute_dtype(config))  # compute dtype; params stay float32
  setting = (config.model.name, num_outputs(config), tuple(sorted(kwargs.items())))
  try:
    return compile_cache.build_once(_module, *setting)
  except TypeError:  # an unhashable keyword value (a list): a module of its own
    return _module(*setting)


def _optimizer(model, input_shape: tuple, freeze_backbone: bool, optim, steps_per_epoch: int, total_steps: int):
  variables = jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                                jnp.zeros(input_shape, jnp.float32), train=False))
  mask = models.trainable_mask(variables["params"], freeze_backbone)
  return optimizers.make_optimizer(optim, steps_per_epoch, total_steps, trainable_mask=mask)


def create_classifier_state(config, model, rng, steps_per_epoch: int, total_steps: int) -> TrainState:
  """Initialised state (or local pretrained weights) with the optimizer of `config.optim`."""
  size, channels = int(config.preprocess.image_size), int(config.preprocess.channels)
  sample = jnp.zeros((1, size, size, channels), jnp.float32)
  # Only cosine / one-cycle schedules depend on the total length, and only epoch-counting ones on the
  # epoch length: other runs of any length share one optimizer (and its compiled steps).
  total = total_steps if config.optim.schedule in optimizers.TOTAL_STEP_SCHEDULES else 0
  steps_per_epoch = optimizers.schedule_steps_per_epoch(config.optim, steps_per_epoch)
  try:
    tx = compile_cache.build_once(_optimizer, model, sample.shape, bool(config.model.freeze_backbone),
                                  config.optim, steps_per_epoch, total)
  except TypeError:  # an unhashable module field: build without the cache
    tx = _optimizer(model, sample.shape, bool(config.model.freeze_backbone), config.optim, steps_per_epoch, total)
  state = create_train_state(model, tx, rng, sample)
  path = config.model.pretrained_path
  if path:
    if config.preprocess.value_range != "imagenet":  # the 'torch' input convention of the import
      logging.warning("model %s: ImageNet weights take RGB in [0, 1] normalised by the ImageNet "
                      "mean/std (preprocess.value_range='imagenet'); this config feeds %r inputs",
                      config.model.name, config.preprocess.value_range)
    loaded = models.load_pretrained(config.model.name, state.variables, path,
                                    sha256=config.model.pretrained_sha256 or None)
    state = state.replace(params=loaded["params"], batch_stats=loaded.get("batch_stats", state.batch_stats),
                          opt_state=tx.init(loaded["params"]))
  else:
    logging.info("model %s: random initialisation (no pretrained_path given)", config.model.name)
  return state
