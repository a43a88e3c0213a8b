"""TensorBoard writers, progress reporting and image grids shared by every task."""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging
from PIL import Image


def create_writer(workdir: str):
  """clu writer: TensorBoard event files (process 0) plus absl logging of scalars.

  clu (and through it TensorFlow) is imported here, not at module level, so image helpers
  below stay cheap to import for the prediction job and the web server.
  """
  from clu import metric_writers
  return metric_writers.create_default_writer(
      logdir=workdir, just_logging=jax.process_index() > 0, asynchronous=False)


class Progress:
  """Prints step, throughput and ETA every `every` steps (and at the last step)."""

  def __init__(self, total_steps: int, every: int = 10, name: str = "train", first_step: int = 0):
    self.total_steps, self.every, self.name = total_steps, max(1, every), name
    self._t0, self._s0 = time.time(), first_step

  def __call__(self, step: int, scalars: dict | None = None, batch_size: int | None = None) -> None:
    if step % self.every and step != self.total_steps:
      return
    elapsed = max(time.time() - self._t0, 1e-9)
    done = step - self._s0
    rate = done / elapsed
    eta = (self.total_steps - step) / rate if rate > 0 else float("nan")
    parts = [f"[{self.name}] step {step}/{self.total_steps}", f"{rate:.2f} steps/s"]
    if batch_size:
      parts.append(f"{rate * batch_size:.1f} img/s")
    parts.append(f"ETA {_fmt_seconds(eta)}")
    for key, value in (scalars or {}).items():
      parts.append(f"{key}={float(value):.4g}")
    message = " | ".join(parts)
    logging.info(message)
    print(message, flush=True)


def _fmt_seconds(seconds: float) -> str:
  if not np.isfinite(seconds):
    return "?"
  seconds = int(seconds)
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
