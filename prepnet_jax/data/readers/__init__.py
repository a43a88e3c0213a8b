"""The one input-reading boundary: training folders, predict and serve read files here.

  loaded = read_input(path, ReadOptions())          # LoadedFile, or InputError(path, reason)
  reason = header_size_problem(path, options)       # None, or why read_input would refuse it
                                                    # before decoding (serve, before a slot)

`read_input` reads named files, folder members, uploads saved to a temporary file and DICOM
series. Every failure of a decoder or header parser (Pillow, pydicom, nibabel, numpy on their
values) and every refusal below becomes `InputError(path, reason)`; the library calls are wrapped
one by one, so a fault in this package's own code still raises as itself. Every result carries
`notes` (each step taken) and `warnings` (the steps that changed values or need a person's
attention; they are in `notes` too). The training-folder reader (`image_folder`) decodes its
images with the same image rules and limits (`images.read_image`, `images.decode`). The rules:

  what is read   a regular, non-empty file (a symbolic link is followed). FIFOs, sockets and devices
                 are refused without being opened (reading a FIFO blocks); so are broken links, link
                 loops and unreadable files. The format comes from the content, never from the name.
  limits         sides in [MIN_SIDE, MAX_SIDE] = [32, 8192] px (config.min_side/max_side), at most
                 MAX_PIXELS = 25·10⁶ decoded pixels per image or DICOM frame (config.max_pixels) and
                 MAX_VOXELS = 512³ values per volume or multi-frame DICOM (config.max_voxels). All are
                 read from the header (Pillow's size, DICOM Rows/Columns/NumberOfFrames, NIfTI dims)
                 before anything is decoded; `header_size_problem` runs that stage alone.
  non-finite     NaN and −Inf become the lowest finite value of the image or volume, +Inf the
                 highest, with a warning giving the counts; a file with no finite value is refused.
  constant       an image (or a volume's slice) whose pixels are all equal after reading is still
                 read, with a warning that a prediction says nothing about its content.
  aspect         a longer side more than ASPECT_WARNING = 4 times the shorter: a warning that the
                 model input squeezes it to a square (evaluation resizes straight to its size).
  bit depth, alpha, frames, orientation: `images` (16-bit by the declared significant bits or the
                 value range, and the warning says which).

The format, by content:
  DICOM          'DICM' at byte 128 → `dicom` (pydicom's modality and VOI LUTs, the CT window).
  DICOM series   a `DicomSeries` (`collect_dicom_series`) → one HU volume → slices: `dicom_series`.
  NIfTI          'n+1' / 'n+2' header (gzip or not) → `nifti` (RAS+, the MosMed loader's slices).
  image          anything Pillow decodes (PNG, JPEG, TIFF, GIF, BMP, WebP, ...) → `images`.
A gzip file that holds no NIfTI volume is refused.
"""

from __future__ import annotations

import os
import zlib

from prepnet_jax.data.readers import dicom, images, nifti
from prepnet_jax.data.readers.common import (ASPECT_WARNING, LUNG_WINDOW, MAX_PIXELS, MAX_SIDE, MAX_VOXELS,
                                             MIN_SIDE, THESIS_POSITIONS, InputError, LoadedFile, LoadedImage,
                                             ReadOptions, check_size, file_problem, sniff_format, warn)
from prepnet_jax.data.readers.dicom_series import DicomSeries, collect_dicom_series, load_dicom_series, read_series

__all__ = ["ASPECT_WARNING", "LUNG_WINDOW", "MAX_PIXELS", "MAX_SIDE", "MAX_VOXELS", "MIN_SIDE", "THESIS_POSITIONS",
           "DicomSeries", "InputError", "LoadedFile", "LoadedImage", "ReadOptions", "collect_dicom_series",
           "file_problem", "header_size_problem", "load_dicom_series", "read_input"]
# Each format's header stage: what read_input checks before decoding, raising InputError.
_HEADER_CHECKS = {"dicom": dicom.check_header, "nifti": nifti.check_header, "image": images.header}


def _format_of(path: str) -> str:
  """'dicom', 'nifti' or 'image' of a regular file; InputError for anything else."""
  problem = file_problem(path)
  if problem is not None:
    raise InputError(path, problem)
  try:
    kind = sniff_format(path)
  except (OSError, EOFError, zlib.error) as e:
    raise InputError(path, f"cannot read the start of the file: {type(e).__name__}: {e}") from e
  if kind == "gzip":
    raise InputError(path, "gzip-compressed, but not a NIfTI volume (no 'n+1'/'n+2' header); expected "
                           "PNG, JPEG, DICOM or NIfTI (.nii / .nii.gz)")
  return kind


def header_size_problem(path: str, options: ReadOptions) -> str | None:
  """Why `read_input` would refuse `path` before decoding anything, None when it would go on: the
  file kind, the format and the header, with the side, pixel and voxel limits read from it. The
  reason is the one `read_input` gives; serve asks this before an upload takes a prediction slot."""
  path = os.fspath(path)
  try:
    kind = _format_of(path)
    _HEADER_CHECKS[kind](path, options)
  except InputError as e:
    return e.reason
  return None


def read_input(source: str | DicomSeries, options: ReadOptions) -> LoadedFile:
  """The 2-D uint8 images of one file or DICOM series (one, or a volume's slices) with notes and
  warnings, by the rules of the module docstring; InputError(path, reason) if unusable."""
  notes: list[str] = []
  warnings: list[str] = []
  if isinstance(source, DicomSeries):
    loaded = LoadedFile(source.path, "dicom_series", read_series(source, options, notes, warnings), notes, warnings)
    return _finished(loaded, options)
  path = os.fspath(source)
  kind = _format_of(path)
  if kind == "image":
    read = [LoadedImage(images.read_image(path, options, notes, warnings), None)]
  else:
    read = {"dicom": dicom.read_dicom, "nifti": nifti.read_nifti}[kind](path, options, notes, warnings)
  return _finished(LoadedFile(path, kind, read, notes, warnings), options)


def _finished(loaded: LoadedFile, options: ReadOptions) -> LoadedFile:
  """The checks every read image passes, whatever its format: the side and pixel limits, then the
  aspect and constant-image warnings."""
  for image in loaded.images:
    height, width = image.image.shape[:2]
    check_size(f"{loaded.path} ({image.label})" if image.label else loaded.path, height, width, options)
    where = f"{image.label}: " if image.label else ""
    if max(height, width) > ASPECT_WARNING * min(height, width):
      warn(loaded.notes, loaded.warnings,
           f"{where}{height}×{width} px, an aspect ratio above {ASPECT_WARNING:g}:1; the model input "
           "squeezes it to a square (evaluation resizes straight to the model's size)")
    low, high = int(image.image.min()), int(image.image.max())
    if low == high:
      warn(loaded.notes, loaded.warnings,
           f"{where}constant image (every pixel is {low} after reading): the prediction says nothing "
           "about its content")
  return loaded
