"""NIfTI CT volumes -> Hounsfield units in one fixed orientation -> 2D slices (thesis §5.2).

Volumes are reoriented to the closest RAS+ canonical form first (array axes x: left->right,
y: posterior->anterior, z: inferior->superior), so a study stored with flipped or permuted
axes gives the same slices as one stored in canonical order (MONAI #1711-style bugs).
NIfTI has no window (nibabel#890): the HU window is always an explicit argument.
"""

from __future__ import annotations

import pathlib
import re
from typing import Sequence

import nibabel as nib
import numpy as np

from prepnet_jax.data.transforms import window_ct

THESIS_POSITIONS = ("n//4", "n//2", "3n//4")
LUNG_WINDOW = (-600.0, 1500.0)
_POSITION_PATTERN = re.compile(r"^\s*(\d*)\s*\*?\s*n\s*//\s*(\d+)\s*$")


def load_canonical(path: str | pathlib.Path) -> tuple[np.ndarray, tuple[float, float, float]]:
  """Reads a .nii/.nii.gz volume -> (HU float32 (X, Y, Z) in RAS+ order, voxel spacing in mm).

  `get_fdata` applies the header's scl_slope/scl_inter, so stored integers become HU.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"NIfTI file {path} does not exist")
  try:
    image = nib.squeeze_image(nib.load(str(path)))
  except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib errors, ...
    raise ValueError(f"cannot read NIfTI file {path}: {type(e).__name__}: {e}") from e
  if len(image.shape) != 3:
    raise ValueError(f"{path}: expected a 3D volume, got shape {image.shape}")
  canonical = nib.as_closest_canonical(image)
  hu = np.asarray(canonical.get_fdata(dtype=np.float32))
  spacing = tuple(float(z) for z in canonical.header.get_zooms()[:3])
  return hu, spacing


def slice_index(position: int | float | str, num_slices: int) -> int:
  """One slice position -> index: an int index, a fraction in [0, 1], or 'n//2' / '3n//4'."""
  if isinstance(position, str):
    match = _POSITION_PATTERN.match(position)
    if match is None:
      raise ValueError(f"slice position {position!r} is not of the form 'n//b' or 'a*n//b'")
    index = int(match.group(1) or 1) * num_slices // int(match.group(2))
  elif isinstance(position, (float, np.floating)):
    if not 0.0 <= position <= 1.0:
      raise ValueError(f"fractional slice position must be in [0, 1], got {position}")
    index = int(position * num_slices)
  else:
    index = int(position)
  index = min(index, num_slices - 1)
  if not 0 <= index < num_slices:
    raise ValueError(f"slice position {position!r} -> index {index} is outside a volume of "
                     f"{num_slices} slices")
  return index


def slice_indices(num_slices: int, positions: Sequence[int | float | str] = THESIS_POSITIONS) -> list[int]:
  return [slice_index(p, num_slices) for p in positions]


def mosmed_slices(volume: np.ndarray, positions: Sequence[int | float | str] = THESIS_POSITIONS,
                  rotate_k: int = 1, crop: tuple[int, int] = (25, 45),
                  window: tuple[float, float] = LUNG_WINDOW, flip_ud: bool = False) -> list[np.ndarray]:
  """Axial uint8 slices of an (X, Y, Z) RAS+ HU volume, as the thesis made its MosMed PNGs.

  Each slice is windowed (level, width), rotated by `rotate_k` quarter turns (np.rot90, +1 =
  counter-clockwise), flipped upside down if `flip_ud`, then cropped by crop=(left/right,
  top/bottom) pixels. The thesis turned the *stored* arrays 90° clockwise; for DICOM-order
  (LPS) storage that shows anterior up with the patient's left on the image left, which on a
  RAS+ array is rotate_k=+1 (the default, and the view the phantom's 'mosmed' site imitates).
  rotate_k=-1 with flip_ud=True gives the radiological view (patient's right on the left).
  """
  volume = np.asarray(volume)
  if volume.ndim != 3:
    raise ValueError(f"expected an (X, Y, Z) volume, got shape {volume.shape}")
  side, top = crop
  out = []
  for index in slice_indices(volume.shape[2], positions):
    image = np.rot90(window_ct(volume[:, :, index], *window), k=rotate_k)
    if flip_ud:
      image = image[::-1]
    height, width = image.shape
    if side < 0 or top < 0 or height - 2 * top <= 0 or width - 2 * side <= 0:
      raise ValueError(f"crop {crop} (left/right, top/bottom) leaves nothing of a {height}x{width} slice")
    out.append(np.ascontiguousarray(image[top:height - top, side:width - side]))
  return out
