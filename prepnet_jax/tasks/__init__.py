"""`config.task` → the module that runs it (the top layer: jobs, never imported by libraries).

Training tasks expose `train_and_evaluate(config, workdir)`; other jobs expose
`run(config, workdir)`. Modules are imported lazily so a job only pays for what it uses.
`TENSORFLOW_FREE` names the jobs that never touch TFDS or TensorBoard files, so `main.py`
does not start TensorFlow for them (≈7 s on 2 CPU cores).
"""

from __future__ import annotations

import importlib

TASKS = {
    "classifier": "prepnet_jax.tasks.classifier.train",
    "cxr_recipe": "prepnet_jax.tasks.classifier.recipes",
    "prepnet": "prepnet_jax.tasks.prepnet.job",
    "gan": "prepnet_jax.tasks.generative.gan",
    "vae": "prepnet_jax.tasks.generative.vae",
    "vaegan": "prepnet_jax.tasks.generative.vaegan",
    "sample": "prepnet_jax.tasks.generative.sample",
    "stylegan2": "prepnet_jax.tasks.stylegan2.train",
    "gen_metrics": "prepnet_jax.tasks.gen_metrics",
    "augment_experiment": "prepnet_jax.tasks.augment_experiment.job",
    "study": "prepnet_jax.tasks.study.job",
    "predict": "prepnet_jax.tasks.predict.job",
    "serve": "prepnet_jax.tasks.serve.app",
}
TENSORFLOW_FREE = frozenset({"predict", "serve"})


def get_runner(task: str):
  """The callable that runs `task`; an unknown task lists the known ones."""
  if task not in TASKS:
    raise ValueError(f"unknown config.task={task!r}; known tasks: {', '.join(sorted(TASKS))}")
  module = importlib.import_module(TASKS[task])
  runner = getattr(module, "train_and_evaluate", None) or getattr(module, "run", None)
  if runner is None:
    raise AttributeError(f"{TASKS[task]} defines neither train_and_evaluate nor run")
  return runner
