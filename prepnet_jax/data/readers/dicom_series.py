"""DICOM series: single-frame CT files of one SeriesInstanceUID read together as one HU volume.

`collect_dicom_series` groups ≥ 2 single-frame CT files of one SeriesInstanceUID (predict makes one
`DicomSeries` per series of a folder); `load_dicom_series` reads one as a volume: slices sorted by
ImagePositionPatient along the slice normal (the cross product of the ImageOrientationPatient
cosines), else by InstanceNumber (noted), each through the modality LUT of `dicom`, reoriented to
RAS+ as a NIfTI volume is; `read_series` then slices and crops it like a NIfTI volume
(`options.nifti_*`) and windows it with the CT window of `dicom` (`ReadOptions.window_for_ct`).
One unusable slice refuses the series, naming the slice.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import nibabel as nib
import numpy as np

from prepnet_jax.data.readers import nifti
from prepnet_jax.data.readers.common import (InputError, LoadedImage, ReadOptions, check_voxels, file_problem,
                                             finite, sniff_format)
from prepnet_jax.data.readers.dicom import (dcmread, header_numbers, is_hounsfield, modality_lut, modality_lut_note,
                                            pixel_array)


@dataclasses.dataclass(frozen=True)
class DicomSeries:
  """Single-frame CT DICOM files of one SeriesInstanceUID, read together as one volume."""
  uid: str
  files: tuple[str, ...]
  number: str = ""  # SeriesNumber, for display names

  @property
  def folder(self) -> str:
    return os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in self.files])

  @property
  def path(self) -> str:
    """What messages and records name: the folder, the series and its size."""
    return f"{self.folder} (DICOM series {self.uid}, {len(self.files)} files)"


def collect_dicom_series(paths: Sequence[str]) -> tuple[list[DicomSeries], list[str]]:
  """(CT series of ≥ 2 single-frame slices, the other paths in their order) by SeriesInstanceUID.

  Only headers of regular files are read. A file that is not a usable CT slice (or whose header
  cannot be read) is left to be read on its own, so it is predicted or reported as a single file.
  """
  import pydicom

  groups: dict[str, list[str]] = {}
  numbers: dict[str, str] = {}
  for path in paths:
    if file_problem(path) is not None:  # FIFOs are never opened: reading one blocks
      continue
    try:
      if sniff_format(path) != "dicom":
        continue
      ds = pydicom.dcmread(path, stop_before_pixels=True)
      uid = str(ds.get("SeriesInstanceUID", "") or "")
      single_grey_frame = int(ds.get("NumberOfFrames", 1) or 1) == 1 and int(ds.get("SamplesPerPixel", 1)) == 1
    except Exception:  # pydicom raises many types; read_input reports them when the file is read alone
      continue
    if uid and single_grey_frame and is_hounsfield(ds):
      groups.setdefault(uid, []).append(path)
      numbers.setdefault(uid, str(ds.get("SeriesNumber", "") or ""))
  series = [DicomSeries(uid, tuple(sorted(files)), numbers[uid]) for uid, files in groups.items() if len(files) > 1]
  in_series = {f for s in series for f in s.files}
  return series, [p for p in paths if p not in in_series]


def load_dicom_series(series: DicomSeries, options: ReadOptions, notes: list[str]) -> np.ndarray:
  """The series as an HU float32 (X, Y, Z) volume in RAS+ order, as `nifti.load_canonical` gives
  the same scan stored as NIfTI.

  Slices are sorted by their position along the slice normal (ImagePositionPatient · (row ×
  column cosines of ImageOrientationPatient)); without positions by InstanceNumber (then file
  name), assuming axial slices, which the notes say. Any unusable slice refuses the series.
  """
  slices, headers = [], []
  for path in series.files:
    try:
      problem = file_problem(path)
      if problem is not None:
        raise InputError(path, problem)
      ds = dcmread(path)
      pixels = pixel_array(path, ds, options)
      if pixels.ndim != 2:
        raise InputError(path, f"pixel array shape {pixels.shape}; expected 2-D")
      if slices and pixels.shape != slices[0].shape:
        raise InputError(path, f"slice is {pixels.shape[0]}×{pixels.shape[1]} px but {series.files[0]} is "
                               f"{slices[0].shape[0]}×{slices[0].shape[1]} px; a series volume needs one size")
      slices.append(np.asarray(modality_lut(path, pixels, ds), np.float32))
      headers.append(ds)
    except InputError as e:  # the slice's own reason, said to be about the series
      raise InputError(e.path, f"{e.reason} (a slice of {series.path}: the series is refused)") from e
    check_voxels(series.path, (len(slices), *slices[0].shape), options, "DICOM series (slices read so far)")
  lut_notes = sorted({modality_lut_note(ds) for ds in headers})
  notes.append(f"DICOM series {series.uid}: {len(slices)} slices; " + "; ".join(lut_notes) + " → Hounsfield units")

  geometry = [(header_numbers(p, ds, "ImagePositionPatient"), header_numbers(p, ds, "ImageOrientationPatient"))
              for p, ds in zip(series.files, headers)]
  if all(p is not None and len(p) == 3 and o is not None and len(o) == 6 for p, o in geometry):
    orientations = np.asarray([o for _, o in geometry], np.float64)
    if not np.allclose(orientations, orientations[0], atol=1e-4):
      odd = series.files[int(np.argmax(np.abs(orientations - orientations[0]).max(axis=1)))]
      raise InputError(odd, f"ImageOrientationPatient differs from {series.files[0]}'s within {series.path}; "
                            "a series volume needs parallel slices")
    row, column = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, column)
    if np.linalg.norm(normal) < 1e-3:
      raise InputError(series.files[0], f"ImageOrientationPatient {orientations[0].tolist()}: the row and column "
                                        f"directions are parallel or zero, so {series.path} has no slice normal")
    positions = np.asarray([p for p, _ in geometry], np.float64)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    gaps = np.diff(along[order])
    if gaps.min() < 1e-3:
      k = int(np.argmin(gaps))
      raise InputError(series.files[order[k]], f"this slice and {series.files[order[k + 1]]} of {series.path} "
                                               f"are at the same position ({along[order[k]]:g} mm along the "
                                               "normal); expected one volume")
    origin = positions[order[0]]
    step = (positions[order[-1]] - origin) / (len(order) - 1)
    notes.append(f"slices sorted by ImagePositionPatient along the slice normal {np.round(normal, 3).tolist()}: "
                 f"{along[order[0]]:g} to {along[order[-1]]:g} mm"
                 + ("" if np.ptp(gaps) < 0.01 * gaps.mean() + 1e-3 else
                    f"; spacing varies from {gaps.min():g} to {gaps.max():g} mm (slices taken by index)"))
  else:
    numbers = [header_numbers(p, ds, "InstanceNumber") for p, ds in zip(series.files, headers)]
    if all(n is not None for n in numbers):
      order = np.argsort([n[0] for n in numbers], kind="stable")
      how = "InstanceNumber"
    else:
      order, how = np.arange(len(headers)), "file name"
    row, column, normal = np.eye(3)
    origin = np.zeros(3)
    thickness = header_numbers(series.files[0], headers[0], "SliceThickness")
    step = normal * (thickness[0] if thickness and thickness[0] != 0 else 1.0)
    notes.append(f"no ImagePositionPatient/ImageOrientationPatient in every slice: slices sorted by {how}, "
                 "taken as axial with the first slice the most inferior")
  spacing = header_numbers(series.files[0], headers[0], "PixelSpacing") or [1.0, 1.0]
  if len(spacing) != 2 or min(spacing) <= 0:
    raise InputError(series.files[0], f"DICOM PixelSpacing {spacing}: expected two positive numbers (mm)")
  affine_lps = np.eye(4)
  # Array axis 0 runs along a row (PixelSpacing[1] apart), axis 1 down a column (PixelSpacing[0]).
  affine_lps[:3, 0], affine_lps[:3, 1] = row * float(spacing[1]), column * float(spacing[0])
  affine_lps[:3, 2], affine_lps[:3, 3] = step, origin
  affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps  # DICOM is LPS, NIfTI RAS
  volume = np.stack([slices[i] for i in order], axis=-1).transpose(1, 0, 2)
  try:
    canonical = nib.as_closest_canonical(nib.Nifti1Image(volume, affine_ras))
  except Exception as e:  # nibabel cannot reorient a degenerate affine (HeaderDataError, LinAlgError, ...)
    raise InputError(series.path, f"cannot orient the series volume from its headers: {type(e).__name__}: {e}") from e
  return np.asarray(canonical.get_fdata(dtype=np.float32))


def read_series(series: DicomSeries, options: ReadOptions, notes: list[str], warnings: list[str]) -> list[LoadedImage]:
  """The series' slices at `options.nifti_positions`, windowed with the CT window."""
  volume = load_dicom_series(series, options, notes)
  volume = finite(series.path, volume, "voxel values", notes, warnings)
  window, source = options.window_for_ct()
  indices = nifti.slice_indices(volume.shape[2], options.nifti_positions)
  try:
    slices = nifti.mosmed_slices(volume, options.nifti_positions, options.nifti_rotate_k, options.nifti_crop,
                                 window, options.nifti_flip_ud)
  except ValueError as e:
    raise InputError(series.path, str(e)) from e
  notes.append(f"series volume {tuple(volume.shape)} (RAS+): slices {indices} of {volume.shape[2]}, "
               f"crop {options.nifti_crop} (config.nifti); CT window level {window[0]:g} / width {window[1]:g} "
               f"from {source}; the headers' windows not used")
  return [LoadedImage(s[..., None], "ct", f"slice {i}") for i, s in zip(indices, slices)]



