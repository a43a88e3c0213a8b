"""Orbax checkpoints of a whole run: the state pytree plus JSON metadata.

A rerun with the same workdir restores the latest step (model, optimizer, RNG, step) and the
metadata (data-iterator position, epoch, best validation metric, ...). Saves are synchronous
and orbax finalises a step directory atomically, so a run killed with SIGKILL mid-save leaves
the previous checkpoint intact and restorable.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from prepnet_jax.runtime import sharding


class Checkpointer:
  """Step-indexed checkpoints in `directory`; `max_to_keep=None` keeps every step."""

  def __init__(self, directory: str, max_to_keep: int | None = 2):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict | None = None) -> None:
    if int(step) in self._manager.all_steps():  # a resumed run re-reaching a saved step
      self._manager.delete(int(step))
    self._manager.save(
        int(step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(_globally_placed(state)),
                                meta=ocp.args.JsonSave(meta or {})),
        force=True)
    self._manager.wait_until_finished()

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores into the structure of `abstract_state` (from `jax.eval_shape` or a real state)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    if step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                              f"available steps: {self.all_steps()}")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                      meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta or {})

  def restore_tree(self, step: int | None = None) -> tuple[dict, dict]:
    """The state of `step` (None = latest) as saved, nested dicts of numpy arrays keyed by field
    name, with no template: for readers that need one part of a state (a trained generator's
    weights) without building the networks and optimizers of the rest."""
    step = self.latest_step() if step is None else step
    if step is None or step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                              f"available steps: {self.all_steps()}")
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta or {})

  def read_meta(self, step: int | None = None) -> dict:
    """Only the JSON metadata of a step (e.g. to build the restore template)."""
    step = self.latest_step() if step is None else step
    if step is None:
      return {}
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta or {})

  def close(self) -> None:
    self._manager.close()


def _globally_placed(tree: Any) -> Any:
  """With several processes orbax writes each array once, from the process holding replica 0, so
  an array on one process's own device (a PRNG key after `jax.device_get`) must first become a
  replicated global array; numpy arrays and global arrays are saved as they are."""
  if jax.process_count() == 1:
    return tree
  mesh = sharding.make_mesh()

  def place(x):
    if isinstance(x, jax.Array) and x.is_fully_addressable:
      return sharding.replicate(x, mesh)
    return x

  return jax.tree_util.tree_map(place, tree)


def resume(ckpt: Checkpointer, template: Any, workdir: str, *, resume_workdir: str = "",
           resume_step: int = -1) -> tuple[Any, dict, str]:
  """The one resume rule of every job: (state, meta, how) from `ckpt`, a branch point, or fresh.

  Own checkpoints win: a rerun with the same workdir continues where it stopped. Without any,
  `resume_step` (−1 = latest) of `resume_workdir` is restored (the thesis's "second wind": the
  original run keeps every checkpoint). In place, `resume_step` must be the latest step, since
  training on from an earlier one would overwrite the later checkpoints. `template` is the
  fresh state (or its `jax.eval_shape`); it is returned as is when nothing is restored.
  """
  branching = bool(resume_workdir) and os.path.abspath(resume_workdir) != os.path.abspath(workdir)
  latest = ckpt.latest_step()
  if latest is not None and (branching or resume_step < 0):
    state, meta = ckpt.restore(template)
    return state, meta, f"resumed from step {latest} in {ckpt.directory}"
  if branching:
    source = Checkpointer(os.path.join(resume_workdir, "checkpoints"), None)
    state, meta = source.restore(template, None if resume_step < 0 else resume_step)
    return state, meta, f"restarted from step {int(jax.device_get(state.step))} of {source.directory}"
  if resume_step >= 0:
    if latest is None or resume_step not in ckpt.all_steps():
      raise FileNotFoundError(f"resume_step={resume_step}: no such checkpoint in {ckpt.directory} "
                              f"(available: {ckpt.all_steps()})")
    if resume_step != latest:
      raise ValueError(f"resume_step={resume_step} is earlier than the latest checkpoint {latest} "
                       f"of {workdir}; to restart from it keep this run intact and branch: "
                       f"--config.resume_workdir={workdir} --config.resume_step={resume_step} "
                       f"--workdir=<new directory>")
    state, meta = ckpt.restore(template, resume_step)
    return state, meta, f"resumed from step {resume_step} in {ckpt.directory}"
  return template, {}, "fresh start"
