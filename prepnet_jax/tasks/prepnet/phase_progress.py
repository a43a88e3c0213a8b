"""Epoch checkpoints inside a PrepNet phase: a killed run redoes at most `checkpoint_every_epochs`
epochs of the phase it was in, instead of the whole phase (50 adversarial epochs in the thesis).

A running phase saves the states it trains, its data iterators' positions, the row's metadata
(the curves so far) and its extra loop state (E_cov's best epoch) with the project's
`Checkpointer` in `<row>/checkpoints_<phase>/`, each save replacing the last; the phase-boundary
checkpoint in `<row>/checkpoints/` supersedes it, and the directory is then removed. The states
carry their RNG keys and step counters, so a resumed phase computes what an uninterrupted one does.
"""

from __future__ import annotations

import os
import shutil
import time

import jax

from prepnet_jax.runtime import checkpointing


def directory(row_directory: str, phase: str) -> str:
  return os.path.join(row_directory, f"checkpoints_{phase}")


def remove(row_directory: str, phase: str) -> None:
  """Deletes the epoch checkpoint of `phase` (once its phase-boundary checkpoint exists)."""
  if jax.process_index() == 0:
    shutil.rmtree(directory(row_directory, phase), ignore_errors=True)


class PhaseProgress:
  """The epoch checkpoint of one running phase; `every` = 0 saves and restores nothing.

  `started` is when the phase started, earlier by the time a killed run spent in it.
  """

  def __init__(self, row_directory: str, phase: str, every: int):
    self.directory = directory(row_directory, phase)
    self.every = every
    self.started = time.time()
    self._ckpt = checkpointing.Checkpointer(self.directory, 1) if every else None

  def restore(self, states: dict, iterators: list) -> tuple[int, dict, dict, dict]:
    """(epochs done, states, row metadata, the loop's extra metadata) as last saved, with the
    iterators moved to their saved positions; (0, `states`, {}, {}) when nothing was saved.
    `states` (the loop's fresh states, None where absent) is the restore template."""
    if self._ckpt is None or self._ckpt.latest_step() is None:
      return 0, states, {}, {}
    tree, meta = self._ckpt.restore(jax.device_get(states))
    saved = meta.pop("progress")
    for it, position in zip(iterators, saved["iterators"]):
      it.set_state(position)
    self.started = time.time() - saved["seconds"]
    return saved["epoch"], tree, meta, saved["extra"]

  def save(self, epoch: int, n_epochs: int, states: dict, iterators: list, row_meta: dict,
           extra: dict | None = None) -> None:
    """Saves after every `every`-th epoch but the last, which the phase-boundary checkpoint covers."""
    if self._ckpt is None or epoch == n_epochs or epoch % self.every:
      return
    saved = {"epoch": epoch, "iterators": [it.get_state() for it in iterators],
             "seconds": time.time() - self.started, "extra": extra or {}}
    self._ckpt.save(epoch, jax.device_get(states), {**row_meta, "progress": saved})

  def close(self) -> None:
    if self._ckpt is not None:
      self._ckpt.close()
