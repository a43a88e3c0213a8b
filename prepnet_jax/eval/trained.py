"""The one way to load a trained classifier from its run directory.

A classifier run (task 'classifier' or 'cxr_recipe') leaves `config.json`, the
best-on-validation state in `best/` and the training checkpoints in `checkpoints/`. The model
and a restore template are rebuilt from the run's own config (`models.classifier_factory`),
with `pretrained_path` cleared because the weights come from the checkpoint.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import ml_collections

from prepnet_jax.models import classifier_factory
from prepnet_jax.runtime import checkpointing, rundir


class TrainedClassifier(NamedTuple):
  config: ml_collections.ConfigDict  # the run's training config
  model: Any                         # the flax module
  state: Any                         # the restored TrainState
  checkpoint: str                    # 'best' or 'step <n>'

  @property
  def variables(self) -> dict:
    return self.state.variables


def load_classifier(workdir: str, step: int | None = None, *, require_best: bool = False) -> TrainedClassifier:
  """The best-on-validation state of a classifier run (step None), or `checkpoints/` step `step`.

  Without a `best/` checkpoint, step None falls back to the latest training checkpoint unless
  `require_best` (prediction on patients uses only the selected model, never a stray state).
  """
  config = rundir.read_config(workdir, "classifier")
  template_config = ml_collections.ConfigDict(config.to_dict())
  template_config.model.pretrained_path = ""  # the weights come from the checkpoint
  model = classifier_factory.build_classifier(template_config)
  # Schedule lengths do not change the optimizer-state structure that the restore needs.
  template = jax.eval_shape(lambda: classifier_factory.create_classifier_state(
      template_config, model, jax.random.key(0), 1, 1))
  best = os.path.join(workdir, "best")
  use_best = (step is None and os.path.isdir(best)
              and checkpointing.Checkpointer(best, 1).latest_step() is not None)
  if require_best and not use_best:
    raise FileNotFoundError(f"no checkpoint in {best}; expected the best-on-validation checkpoint "
                            "that the classifier task writes after its first epoch")
  ckpt = checkpointing.Checkpointer(best if use_best else os.path.join(workdir, "checkpoints"), None)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {best} or {ckpt.directory}; expected the workdir of a "
                            "classifier run (it writes best/ after its first epoch)")
  state, _ = ckpt.restore(template, None if use_best else step)
  which = "best" if use_best else f"step {ckpt.latest_step() if step is None else step}"
  return TrainedClassifier(config, model, state, which)
