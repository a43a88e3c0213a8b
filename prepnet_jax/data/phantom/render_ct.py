"""CT acquisition (HU slices with a scanner's kernel, noise and couch) and 8-bit export.

Acquisition gives what a scanner stores (int16 HU, as in DICOM/NIfTI); export gives what a
dataset ships (windowed, resized, annotated, compressed uint8 images).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from prepnet_jax.data.phantom import anatomy, findings, overlays
from prepnet_jax.data.phantom.sites import CtStyle

HU_OUTSIDE_FOV = -1024


@dataclasses.dataclass(frozen=True)
class CtGeometry:
  """In-plane sampling of one scan: matrix size, field of view and patient placement."""
  size: int
  fov_mm: float
  shift: tuple[float, float]  # (y, x) mm of the patient off the scanner centre
  angle: float                # rad, in-plane patient rotation


@dataclasses.dataclass(frozen=True)
class CtSlices:
  hu: np.ndarray               # int16 (n, size, size)
  lung_pixels: np.ndarray      # int (n,)
  lesion_pixels: np.ndarray    # int (n,)
  lesion_fraction: np.ndarray  # float32 (n,): lesion share of the lung area in each slice
  lesion_center: np.ndarray    # float32 (n, 2): (row, col) in [0, 1] of the lesion centroid (nan if none)


def _points(geometry: CtGeometry, z_mm: np.ndarray):
  """Broadcastable (z, y, x) of every pixel of every slice: z (n, 1, 1), y and x (1, size, size)."""
  size = geometry.size
  coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * (geometry.fov_mm / size)
  rows, cols = np.meshgrid(coords, coords, indexing="ij")
  c, s = np.cos(geometry.angle), np.sin(geometry.angle)
  y = c * rows - s * cols - geometry.shift[0]
  x = s * rows + c * cols - geometry.shift[1]
  return np.asarray(z_mm, np.float32)[:, None, None], y[None], x[None]


def _couch(anat: anatomy.Anatomy, geometry: CtGeometry, z_mm: np.ndarray) -> np.ndarray:
  """HU of the patient table under the back (a curved carbon plate and its frame), NaN elsewhere."""
  size = geometry.size
  coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * (geometry.fov_mm / size)
  y, x = np.meshgrid(coords, coords, indexing="ij")
  _, back = anat.body_axes(np.float32(np.median(z_mm)))
  top = back + 4 + geometry.shift[0] - 0.0012 * x * x
  plate = (y > top) & (y < top + 5) & (np.abs(x) < 0.45 * geometry.fov_mm)
  frame = (y > top + 28) & (y < top + 34) & (np.abs(x) < 0.3 * geometry.fov_mm)
  return np.where(plate, 250.0, np.where(frame, 500.0, np.nan)).astype(np.float32)


def acquire(anat: anatomy.Anatomy, finding: findings.Finding, z_mm: np.ndarray, geometry: CtGeometry,
            style: CtStyle, noise_rngs: list[np.random.Generator], kernel: tuple[float, float]) -> CtSlices:
  """HU slices at heights z_mm; `kernel` = (blur sigma px, unsharp amount) of this scan."""
  z_mm = np.asarray(z_mm, np.float32)
  n, size = len(z_mm), geometry.size
  z, y, x = _points(geometry, z_mm)
  tissue = anatomy.evaluate(anat, z, y, x, fine=True)
  hu, lesion = findings.apply(finding, anat, tissue)
  hu = hu.reshape(n, size, size)
  lung = tissue.lung.reshape(n, size, size)
  lesion = lesion.reshape(n, size, size)
  lung_pixels, lesion_pixels = lung.sum((1, 2)), lesion.sum((1, 2))
  lesion_fraction = (lesion_pixels / np.maximum(lung_pixels, 1)).astype(np.float32)
  grid = np.linspace(0.0, 1.0, size, dtype=np.float32)
  counts = np.maximum(lesion.sum((1, 2)), 1)
  center = np.stack([(lesion.sum(2) * grid).sum(1) / counts, (lesion.sum(1) * grid).sum(1) / counts], 1)
  center[lesion_fraction == 0] = np.nan
  if style.table:
    couch = _couch(anat, geometry, z_mm)
    hu = np.where(np.isnan(couch)[None] | (hu > -900), hu, couch[None])
  blur, sharpen = kernel
  if blur > 0:
    hu = ndimage.gaussian_filter(hu, (0, blur, blur), mode="nearest")
  if sharpen > 0:
    hu = hu + sharpen * (hu - ndimage.gaussian_filter(hu, (0, 1.0, 1.0), mode="nearest"))
  for i, rng in enumerate(noise_rngs):
    white = rng.standard_normal((size, size)).astype(np.float32)
    grain = ndimage.gaussian_filter(white, style.noise_grain_px)
    hu[i] += grain * (rng.uniform(*style.noise_hu) / max(float(grain.std()), 1e-6))
  if style.circular_fov:
    r = np.hypot(*np.meshgrid(grid - 0.5, grid - 0.5, indexing="ij"))
    hu[:, r > 0.5] = HU_OUTSIDE_FOV
  hu = np.clip(np.rint(hu), -2048, 3071).astype(np.int16)
  return CtSlices(hu=hu, lung_pixels=lung_pixels, lesion_pixels=lesion_pixels, lesion_fraction=lesion_fraction,
                  lesion_center=center.astype(np.float32))


def export(hu: np.ndarray, lesion_center: np.ndarray, style: CtStyle, rng: np.random.Generator,
           image_size: int, channels: int, label3: int) -> np.ndarray:
  """One HU slice -> the dataset's uint8 image (H, W, channels)."""
  level, width = rng.uniform(*style.window_level), rng.uniform(*style.window_width)
  image = np.clip((hu.astype(np.float32) - (level - width / 2)) / width, 0, 1) ** rng.uniform(*style.gamma)
  center = lesion_center.copy()
  if style.flip_lr:
    image = image[:, ::-1]
    center[1] = 1 - center[1]
  top, bottom, left, right = style.crop
  h, w = image.shape
  r0, r1, c0, c1 = round(top * h), h - round(bottom * h), round(left * w), w - round(right * w)
  image = image[r0:r1, c0:c1]
  center = (center * (h, w) - (r0, c0)) / (r1 - r0, c1 - c0)
  image = overlays.resize(image, image_size)
  image = (image - 0.5) * rng.uniform(*style.contrast) + 0.5 + rng.uniform(*style.brightness)
  image = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
  rgb = np.repeat(image[..., None], 3, axis=2)
  rgb = overlays.annotate(rgb, rng, text_prob=style.text_prob, arrow_prob=style.arrow_prob[label3],
                          scale_bar_prob=style.scale_bar_prob, color=style.color_overlays and channels == 3,
                          target=center)
  return overlays.finish(rgb, rng, style.jpeg_quality, channels)
