"""TensorBoard writers, progress reporting and image grids shared by every task."""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from PIL import Image


def create_writer(workdir: str):
  """clu writer of TensorBoard event files in `workdir` on process 0; on the others one that
  writes nothing. No absl logging writer: the jobs print one line per event themselves (progress
  with ETA), which clu's logging copy of every scalar would repeat.

  clu (and through it TensorFlow) is imported here, not at module level, so image helpers
  below stay cheap to import for the prediction job and the web server.
  """
  from clu import metric_writers
  if jax.process_index() > 0:
    return metric_writers.MultiWriter([])
  return metric_writers.SummaryWriter(workdir)


class Progress:
  """One console line with progress, throughput, elapsed time and ETA for a loop of `total_steps`
  steps (`unit`s: steps, runs, ...).

  `__call__` prints it when due: every `every` steps (0 = never by count), at least every
  `every_seconds` seconds when that is > 0, and at the last step. The rate counts only the steps
  after `first_step` (a resumed loop), so the ETA is for what this process still has to do.
  """

  def __init__(self, total_steps: int, every: int = 10, name: str = "train", first_step: int = 0,
               every_seconds: float = 0.0, unit: str = "step"):
    self.total_steps, self.every, self.name = total_steps, max(0, every), name
    self.every_seconds, self.unit = every_seconds, unit
    self._t0, self._first, self._s0 = time.time(), first_step, first_step
    self._rate_t0 = self._last_line = self._t0

  def restart_rate(self, step: int) -> None:
    """Measures the rate from `step` on (e.g. after a first step that also compiled, no guide to
    the others' speed); the elapsed time still counts from the start."""
    self._rate_t0 = self._last_line = time.time()
    self._s0 = step

  def due(self, step: int) -> bool:
    if step == self.total_steps or (self.every and step % self.every == 0):
      return True
    return self.every_seconds > 0 and time.time() - self._last_line >= self.every_seconds

  def __call__(self, step: int, scalars: dict | None = None, batch_size: int | None = None,
               what: str = "") -> None:
    if self.due(step):
      print(self.message(step, scalars, batch_size, what), flush=True)

  def message(self, step: int, scalars: dict | None = None, batch_size: int | None = None,
              what: str = "") -> str:
    """'[name] what | step s/T | rate | elapsed | ETA | k=v ...'; restarts the `every_seconds` clock."""
    now = time.time()
    self._last_line = now
    elapsed = now - self._t0
    if step > self._s0:
      rate = (step - self._s0) / max(now - self._rate_t0, 1e-9)
    else:  # no step since `restart_rate`: all of them, the first one included
      rate = (step - self._first) / max(elapsed, 1e-9)
    if step >= self.total_steps:
      eta = 0.0
    else:
      eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
    head = f"[{self.name}] {what} | " if what else f"[{self.name}] "
    # Slow loops (a run of an experiment, a big network's step on CPU) read better as s/unit.
    speed = f"{rate:.2f} {self.unit}s/s" if rate >= 1 or rate <= 0 else f"{1 / rate:.3g} s/{self.unit}"
    parts = [f"{head}{self.unit} {step}/{self.total_steps}", speed]
    if batch_size:
      parts.append(f"{rate * batch_size:.1f} img/s")
    parts += [f"elapsed {_fmt_seconds(elapsed)}", f"ETA {_fmt_seconds(eta)}"]
    parts += [f"{key}={float(value):.4g}" for key, value in (scalars or {}).items()]
    return " | ".join(parts)


def _fmt_seconds(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def to_uint8(images: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
  """Maps float images in `value_range` (or uint8) to uint8 for display."""
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images
  lo, hi = value_range
  scaled = (images.astype(np.float32) - lo) / max(hi - lo, 1e-12)
  return np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
  """(N,H,W,C) uint8 → one (H', W', C) uint8 mosaic with `pad` px black borders."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[..., None]
  n, h, w, c = images.shape
  ncols = ncols or int(np.ceil(np.sqrt(n)))
  nrows = int(np.ceil(n / ncols))
  grid = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), images.dtype)
  for i, img in enumerate(images):
    r, col = divmod(i, ncols)
    grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
  return grid


def save_png(path: str, image: np.ndarray) -> str:
  """Writes an (H,W), (H,W,1) or (H,W,3) uint8 array as PNG, creating folders."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  Image.fromarray(image).save(path)
  return path
