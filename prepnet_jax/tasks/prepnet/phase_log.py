"""Console progress and TensorBoard scalars of a running PrepNet phase.

Console: a line per epoch (its losses) and, in long epochs, one every `PROGRESS_SECONDS`, each with
the phase's step count, steps/s, elapsed time and ETA. TensorBoard (`writer`: the row/seed's own
run): tags `<phase>/<metric>`, step = the row's epoch count across all its phases (kept in the
row's checkpointed metadata as `log_step`), so each phase's curves continue where the previous
phase's ended.
"""

from __future__ import annotations

import jax

from prepnet_jax.runtime import checks, writers

# Inside a phase, a progress line at most this often (besides the line of every epoch).
PROGRESS_SECONDS = 10.0


class PhaseLog:
  """The progress lines and TensorBoard scalars of one row/seed (`label` names it on the console)."""

  def __init__(self, writer, label: str):
    self.writer, self.label = writer, label
    self.progress: writers.Progress | None = None  # the running phase's console progress
    self.step = self.first_step = 0

  def write_scalars(self, meta: dict, curve: str, scalars: dict) -> None:
    """One epoch's scalars into the row's TensorBoard run, at the row's next epoch count."""
    step = meta["log_step"] = meta["log_step"] + 1
    checks.check_finite(scalars, step)
    self.writer.write_scalars(step, {f"{curve}/{k}": v for k, v in scalars.items()})

  def start(self, total: int, done: int) -> None:
    """The running phase's step count (`total` steps, `done` of them by a killed run)."""
    self.step = self.first_step = done
    self.progress = writers.Progress(total, every=0, name=f"prepnet {self.label}", first_step=done,
                                     every_seconds=PROGRESS_SECONDS)

  def tick(self, out, curve: str):
    """Counts one step of the running phase and returns its output `out`; prints a progress line
    when one is due, after waiting for `out`, so steps/s and ETA measure computed steps rather
    than dispatched ones. The rate leaves out the phase's first step, which also compiles."""
    self.step += 1
    if self.step == self.first_step + 1:
      jax.block_until_ready(out)
      self.progress.restart_rate(self.step)
    elif self.step < self.progress.total_steps and self.progress.due(self.step):
      jax.block_until_ready(out)
      print(self.progress.message(self.step, what=curve), flush=True)
    return out

  def epoch_line(self, what: str, scalars: dict) -> None:
    print(self.progress.message(self.step, scalars, what=what), flush=True)
