"""NIfTI CT volumes -> Hounsfield units in one fixed orientation -> 2D slices (thesis §5.2).

Volumes are reoriented to the closest RAS+ canonical form first (array axes x: left->right,
y: posterior->anterior, z: inferior->superior), so a study stored with flipped or permuted
axes gives the same slices as one stored in canonical order (MONAI #1711-style bugs).
NIfTI has no window (nibabel#890): the HU window is always an explicit argument.

The same functions serve the CT datasets (`ct_datasets`: MosMed) and the input boundary
(`readers.read_input`, `read_nifti`): an 'n+1' / 'n+2' header (gzip or not) → `load_canonical`
→ the slices of `mosmed_slices` with the MosMed loader's settings (`options.nifti_*`). The
boundary's header rules: dims below 1 or more than one 3-D volume are refused, as are slices or a
volume over the limits (all from the header, before the data is read); data shorter than the dims
declare is refused, longer gets a warning (only the declared voxels are read). A scl_slope of 0,
NaN or ±Inf means "no scaling" to nibabel, which writes NaN itself for unscaled data: values as
stored, no warning. Non-finite voxels follow `common.finite`.
"""

from __future__ import annotations

import contextlib
import math
import os
import pathlib
import re
import struct
import tempfile
from typing import Iterator, Sequence

import nibabel as nib
import numpy as np

from prepnet_jax.data.readers.common import (LUNG_WINDOW, THESIS_POSITIONS, InputError, LoadedImage, ReadOptions,
                                             check_voxels, finite, warn)
from prepnet_jax.data.transforms import window_ct

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


# --- the input boundary (readers.read_input) ---------------------------------------------------

def _is_gzip(path: str) -> bool:
  with open(path, "rb") as f:
    return f.read(2) == b"\x1f\x8b"


@contextlib.contextmanager
def _readable(path: str, compressed: bool) -> Iterator[str]:
  """A name nibabel reads `path` by: nibabel picks its reader from the file name, and uploads and
  extensionless files have none, so those get a symbolic link named .nii / .nii.gz."""
  suffix = ".nii.gz" if compressed else ".nii"
  if path.endswith(suffix):
    yield path
    return
  with tempfile.TemporaryDirectory(prefix="prepnet_nifti_") as tmp:
    readable = os.path.join(tmp, "volume" + suffix)
    os.symlink(os.path.abspath(path), readable)
    yield readable


def _header(path: str, readable: str, options: ReadOptions) -> tuple[tuple[int, ...], int]:
  """(the header's dims, the bytes they declare with the data offset), checked against the limits."""
  try:
    header_image = nib.load(readable)  # the header only; the data is read later
    shape = tuple(int(n) for n in header_image.shape)
    declared_bytes = (int(header_image.dataobj.offset)  # the loaded header's own offset is reset to 0
                      + math.prod(shape) * header_image.header.get_data_dtype().itemsize)
  except Exception as e:  # nibabel raises ImageFileError, HeaderDataError, EOFError, zlib errors, ...
    raise InputError(path, f"cannot read the NIfTI header: {type(e).__name__}: {e}") from e
  _check_dims(path, shape, options)
  return shape, declared_bytes


def check_header(path: str, options: ReadOptions) -> None:
  """The header rules and size limits from the header alone."""
  compressed = _is_gzip(path)
  with _readable(path, compressed) as readable:
    _header(path, readable, options)


def read_nifti(path: str, options: ReadOptions, notes: list[str], warnings: list[str]) -> list[LoadedImage]:
  """One NIfTI file's slices by the rules of the module docstring."""
  compressed = _is_gzip(path)
  with _readable(path, compressed) as readable:
    shape, declared_bytes = _header(path, readable, options)
    extra = _stored_bytes(path, compressed) - declared_bytes
    if extra > 0:
      warn(notes, warnings, f"the file holds {extra} bytes more than its header's dims {shape} declare: "
                            "only the declared voxels are read")
    try:
      volume, _ = load_canonical(readable)
    except Exception as e:  # nibabel on bad data: OSError (short data), EOFError, zlib.error, OverflowError, ...
      raise InputError(path, f"cannot read the NIfTI volume: {type(e).__name__}: {e}") from e
  volume = finite(path, volume, "voxel values", notes, warnings)
  indices = slice_indices(volume.shape[2], options.nifti_positions)
  # The model's training window unless config.nifti.window names one: the same rule as CT DICOM.
  window, source = ((options.nifti_window, "config.nifti.window") if options.nifti_window
                    else (options.ct_window, options.ct_window_source))
  try:
    slices = mosmed_slices(volume, options.nifti_positions, options.nifti_rotate_k, options.nifti_crop,
                           window, options.nifti_flip_ud)
  except ValueError as e:
    raise InputError(path, str(e)) from e
  notes.append(f"NIfTI volume {tuple(volume.shape)} (RAS+): slices {indices} of {volume.shape[2]}, "
               f"window {window} ({source}), crop {options.nifti_crop}")
  return [LoadedImage(s[..., None], "ct", f"slice {i}") for i, s in zip(indices, slices)]


def _check_dims(path: str, shape: tuple[int, ...], options: ReadOptions) -> None:
  """One 3-D volume within the limits, from the header's dims (trailing dims of 1 are dropped, as
  `nib.squeeze_image` does)."""
  dims = list(shape)
  while len(dims) > 3 and dims[-1] == 1:
    dims.pop()
  if len(dims) != 3 or min(dims) < 1:
    what = f"{len(dims)}-D data" if min(dims, default=1) >= 1 else "a dimension below 1"
    raise InputError(path, f"NIfTI header dims {shape}: {what}; expected one 3-D volume")
  check_voxels(path, dims, options, "NIfTI volume")
  if max(dims[:2]) > options.max_side or dims[0] * dims[1] > options.max_pixels:
    raise InputError(path, f"NIfTI slices of {dims[0]}×{dims[1]} px; expected sides up to {options.max_side} px "
                           f"and at most {options.max_pixels} pixels (config.max_side/max_pixels)")


def _stored_bytes(path: str, compressed: bool) -> int:
  """The file's size, or for gzip the uncompressed size its trailer records (ISIZE, modulo 2³²)."""
  if not compressed:
    return os.path.getsize(path)
  with open(path, "rb") as f:
    f.seek(-4, os.SEEK_END)
    return struct.unpack("<I", f.read(4))[0]
