"""`config.task` → the module that runs it.

Training tasks expose `train_and_evaluate(config, workdir)`; other jobs expose
`run(config, workdir)`. Modules are imported lazily so a job only pays for what it uses.
"""

from __future__ import annotations

import importlib

TASKS = {
    "classifier": "prepnet_jax.train.classifier",
    "prepnet": "prepnet_jax.train.prepnet",
    "gan": "prepnet_jax.train.gan",
    "vae": "prepnet_jax.train.vae",
    "vaegan": "prepnet_jax.train.vaegan",
    "stylegan2": "prepnet_jax.train.stylegan2",
    "sample": "prepnet_jax.train.sample",
    "gen_metrics": "prepnet_jax.eval.gen_metrics_job",
    "augment_experiment": "prepnet_jax.train.augment_experiment",
    "cxr_recipe": "prepnet_jax.train.cxr_recipes",
    "predict": "prepnet_jax.train.predict",
    "serve": "prepnet_jax.serve.app",
}


def get_runner(task: str):
  """The callable that runs `task`; an unknown task lists the known ones."""
  if task not in TASKS:
    raise ValueError(f"unknown config.task={task!r}; known tasks: {', '.join(sorted(TASKS))}")
  module = importlib.import_module(TASKS[task])
  runner = getattr(module, "train_and_evaluate", None) or getattr(module, "run", None)
  if runner is None:
    raise AttributeError(f"{TASKS[task]} defines neither train_and_evaluate nor run")
  return runner
