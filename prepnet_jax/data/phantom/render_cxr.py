"""Chest X-rays from the same phantom: Beer-Lambert line integrals along diverging rays,
then a detector (quantum noise, scatter, blur) and a vendor's image processing.

A point source at distance SID from the detector projects each depth plane with its own
magnification SID / (SID - distance to detector). In a PA film the heart lies next to the
detector; in an AP (bedside) film it lies far from it and the source is closer, so the heart
looks larger - the classic AP pitfall.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from prepnet_jax.data.phantom import anatomy, findings, overlays
from prepnet_jax.data.phantom.sites import CxrStyle

SOURCE_TO_DETECTOR_MM = {"PA": 1800.0, "AP": 1000.0}
MU_WATER_PER_MM = 0.02      # ~60 keV effective energy
BONE_BOOST = 1.0            # extra (photoelectric) attenuation of bone at radiographic energies
VISIBLE_CHORD_MM = 10.0     # lung / lesion thickness along a ray that counts as seen


@dataclasses.dataclass(frozen=True)
class CxrGeometry:
  view: str            # 'PA' or 'AP'
  render_size: int     # detector samples per side (the export is resized from these)
  field_mm: float      # detector field width
  center_z: float      # patient z on the central ray
  shift_x: float       # mm
  tilt: float          # rad, patient rotation in the detector plane


@dataclasses.dataclass(frozen=True)
class Projection:
  path: np.ndarray        # float32 (R, R): line integral of attenuation
  lesion_fraction: float  # lesion share of the projected lung field
  lesion_center: np.ndarray  # (row, col) in [0, 1], NaN without lesion


def attenuation(hu: np.ndarray) -> np.ndarray:
  """Linear attenuation (1/mm) from HU; bone is boosted over its CT value."""
  mu = np.maximum(1.0 + hu / 1000.0, 0.0)
  mu = mu + BONE_BOOST * np.maximum(hu - 100.0, 0.0) / 1000.0
  return MU_WATER_PER_MM * mu


def magnification(view: str, y: np.ndarray, half_depth: float) -> np.ndarray:
  """Detector magnification of the patient plane at depth y (mm, anterior negative). The
  detector touches the chest (front for PA, back for AP); the source is SID away."""
  sid = SOURCE_TO_DETECTOR_MM[view]
  detector_y = -1.08 * half_depth - 10 if view == "PA" else 1.08 * half_depth + 10
  return sid / (sid - np.abs(np.asarray(y, np.float32) - detector_y))


def acquire(anat: anatomy.Anatomy, finding: findings.Finding, geometry: CxrGeometry,
            rng: np.random.Generator) -> Projection:
  """Line integrals through the patient; depth samples are jittered per ray so thin
  structures alias into noise rather than into moire."""
  size = geometry.render_size
  b_max = 1.08 * anat.half_depth
  spacing = max(3.5, 7.0 * anat.scale)
  depth_count = int(np.ceil(2 * b_max / spacing))
  jitter = rng.uniform(0, 1, size=(1, size, size)).astype(np.float32)
  y = -b_max + spacing * (np.arange(depth_count, dtype=np.float32)[:, None, None] + jitter)  # (D, R, R)
  inv_magnification = 1.0 / magnification(geometry.view, y, anat.half_depth)
  coords = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * (geometry.field_mm / size)
  z = geometry.center_z + coords[None, :, None] * inv_magnification  # rows are heights
  x = geometry.shift_x + coords[None, None, :] * inv_magnification   # columns: patient right -> left
  tissue = anatomy.evaluate(anat, z, y, x, fine=False)
  hu, lesion = findings.apply(finding, anat, tissue)
  path = attenuation(hu).reshape(depth_count, size, size).sum(0) * spacing
  lung_px = tissue.lung.reshape(depth_count, size, size).sum(0) * spacing >= VISIBLE_CHORD_MM
  lesion_px = (lesion.reshape(depth_count, size, size).sum(0) * spacing >= VISIBLE_CHORD_MM) & lung_px
  if geometry.tilt:
    degrees = np.rad2deg(geometry.tilt)
    path = ndimage.rotate(path, degrees, reshape=False, order=1, mode="nearest")
    lung_px = ndimage.rotate(lung_px, degrees, reshape=False, order=0)
    lesion_px = ndimage.rotate(lesion_px, degrees, reshape=False, order=0)
  fraction = float(lesion_px.sum() / max(lung_px.sum(), 1))
  center = np.full(2, np.nan, np.float32)
  if lesion_px.any():
    rows, cols = np.nonzero(lesion_px)
    center = np.array([rows.mean(), cols.mean()], np.float32) / max(size - 1, 1)
  return Projection(path=path.astype(np.float32), lesion_fraction=fraction, lesion_center=center)


def export(projection: Projection, view: str, style: CxrStyle, rng: np.random.Generator,
           image_size: int, channels: int, label3: int) -> np.ndarray:
  """Detector and processing: noise, scatter, collimation, tone curve, edge enhancement,
  burned-in marker and prints -> uint8 (H, W, channels)."""
  render_size = projection.path.shape[0]
  scatter = rng.uniform(*style.scatter) * ndimage.gaussian_filter(np.exp(-projection.path), render_size / 8)
  scatter = overlays.resize(scatter, image_size)
  path = overlays.resize(projection.path, image_size)
  primary = np.exp(-ndimage.gaussian_filter(path, rng.uniform(*style.detector_blur_px)))
  photons = rng.uniform(*style.exposure)
  counts = rng.poisson((primary + scatter) * photons).astype(np.float32)
  signal = -np.log(np.maximum(counts, 0.5) / photons)
  margin = rng.uniform(*style.collimation, size=4)
  rows = np.arange(image_size)[:, None] / image_size
  cols = np.arange(image_size)[None, :] / image_size
  field = (rows >= margin[0]) & (rows < 1 - margin[1]) & (cols >= margin[2]) & (cols < 1 - margin[3])
  lo, hi = np.percentile(signal[field], (0.5, 99.5))
  image = (signal - lo) / max(hi - lo, 1e-3)
  slope = rng.uniform(*style.contrast)
  image = 1.0 / (1.0 + np.exp(-slope * (image - 0.5)))
  ends = 1.0 / (1.0 + np.exp(slope * np.array([0.5, -0.5])))
  image = np.clip((image - ends[0]) / (ends[1] - ends[0]), 0, 1) ** rng.uniform(*style.gamma)
  image = image + rng.uniform(*style.edge_enhance) * (image - ndimage.gaussian_filter(image, image_size / 40))
  image = np.where(field, image, 0.92)
  rgb = np.repeat(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
  if rng.uniform() < style.marker_prob:
    letter = style.marker[rng.integers(len(style.marker))]
    rgb = overlays.stamp(rgb, letter, corner=int(rng.integers(2)), height_frac=0.11, boxed=bool(rng.integers(2)))
  if view == "AP" and rng.uniform() < style.view_text_prob:
    rgb = overlays.stamp(rgb, ("AP", "PORTABLE", "AP SUPINE")[rng.integers(3)], corner=2 + int(rng.integers(2)),
                         height_frac=0.08)
  rgb = overlays.annotate(rgb, rng, text_prob=style.text_prob, arrow_prob=style.arrow_prob[label3],
                          scale_bar_prob=0.0, color=channels == 3, target=projection.lesion_center)
  return overlays.finish(rgb, rng, style.jpeg_quality, channels)
