"""DICOM files → 2-D uint8 images, grey levels through pydicom's own LUT functions
(`pydicom.pixels.apply_modality_lut`, `apply_voi_lut`); the notes say every step taken:

  CT     Modality CT, or Hounsfield units after the modality LUT (RescaleType or ModalityLUTType
         'HU'): the modality LUT (RescaleSlope/Intercept or the Modality LUT Sequence) gives HU,
         windowed with the window the model was trained with (`ReadOptions.ct_window`, set by
         `eval.inference.Predictor` from `training_ct_window`: its `preprocess.ct_window`, else the
         lung window of the project's CT loaders), or with `options.dicom_window`
         (config.dicom_window) when set, by `transforms.window_ct` (level ± width/2 → 0..255), the
         function training used. The header's windows and VOI LUTs are not used: they are a
         reading preference (often soft tissue), not what the model saw. MONOCHROME1 is not
         inverted (the HU window already shows dense tissue bright).
  other  CR/DX X-rays and the rest: the modality LUT, then the VOI LUT as `apply_voi_lut` does it:
         the VOI LUT Sequence when present (first item), else the first WindowCenter/Width with
         VOILUTFunction LINEAR, LINEAR_EXACT or SIGMOID; its output range [lo, hi] (the LUT's
         smallest and largest entries, or the window's range as pydicom defines it from
         BitsStored, PixelRepresentation and the rescale) → uint8 = rint(255·(v − lo)/(hi − lo)).
         Without a VOI LUT or window: the image's min–max range. `options.dicom_window` replaces
         the VOI step by that linear window. MONOCHROME1 is then inverted (255 − v), so that dense
         is bright as in MONOCHROME2.
  multi-frame  the middle frame, with a warning, and that frame's rescale and window from an
         enhanced file's shared / per-frame functional groups when it has them. 8-bit RGB: used
         as stored.
  header  a numeric field the reading uses (RescaleSlope/Intercept, an X-ray's WindowCenter/Width,
         NumberOfFrames, a series' positions, orientations, spacing, InstanceNumber) that is not a
         finite number is refused naming the field and its value, as is RescaleSlope 0; header
         windows the reading does not use (CT, config.dicom_window) only get a warning when
         unreadable.
  size   Rows × Columns per frame and frames × rows × columns × samples against the limits, from
         the header before the pixel data is decoded (`check_header` reads no pixel data at all).

Several single-frame CT files of one series are read together as one volume: `dicom_series`.
"""

from __future__ import annotations

import math

import numpy as np

from prepnet_jax.data.readers.common import (InputError, LoadedImage, ReadOptions, check_size, check_voxels,
                                             finite, to_uint8, warn)
from prepnet_jax.data.transforms import window_ct

# DICOM (0008,0060) Modality values of chest X-rays (computed / digital radiography).
CXR_DICOM_MODALITIES = ("CR", "DX", "DR", "RG")


def is_hounsfield(ds) -> bool:
  """CT, or a modality LUT that declares Hounsfield units (e.g. a CT saved as secondary capture)."""
  if str(ds.get("Modality", "")).upper() == "CT" or str(ds.get("RescaleType", "")).upper() == "HU":
    return True
  lut = ds.get("ModalityLUTSequence")
  return bool(lut) and str(lut[0].get("ModalityLUTType", "")).upper() == "HU"


def dcmread(path: str, stop_before_pixels: bool = False):
  import pydicom
  try:
    return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
  except Exception as e:  # pydicom raises InvalidDicomError, EOFError, struct errors, ...
    raise InputError(path, f"cannot read DICOM: {type(e).__name__}: {e}") from e


def _shown(value) -> str:
  text = repr(str(value))
  return text if len(text) <= 60 else text[:57] + "...'"


def header_numbers(path: str, ds, keyword: str) -> list[float] | None:
  """A numeric header element as finite floats (several for a multi-valued one), None when absent or
  empty; InputError naming the field and value when one is not a finite number."""
  from pydicom.multival import MultiValue

  try:
    value = ds.get(keyword)
  except Exception as e:  # pydicom converts raw values on access; malformed ones raise many types
    raise InputError(path, f"DICOM {keyword} cannot be read: {type(e).__name__}: {e}") from e
  items = [] if value is None else list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]
  blank = [v is None or str(v).strip() == "" for v in items]
  if all(blank):
    return None
  try:
    numbers = [float(v) for v in items]
  except (TypeError, ValueError):
    raise InputError(path, f"DICOM {keyword} = {_shown(value)} is not a number") from None
  if not all(math.isfinite(v) for v in numbers):
    raise InputError(path, f"DICOM {keyword} = {_shown(value)} is not a finite number")
  return numbers


def _header_int(path: str, ds, keyword: str, default: int) -> int:
  numbers = header_numbers(path, ds, keyword)
  if numbers is None:
    return default
  if len(numbers) != 1 or not numbers[0].is_integer():
    raise InputError(path, f"DICOM {keyword} = {_shown(ds.get(keyword))} is not a whole number")
  return int(numbers[0])


def _checked_rescale(path: str, ds) -> None:
  """RescaleSlope/Intercept, when present, must be finite numbers and the slope non-zero."""
  slope = header_numbers(path, ds, "RescaleSlope")
  header_numbers(path, ds, "RescaleIntercept")
  if slope is not None and slope[0] == 0:
    raise InputError(path, "DICOM RescaleSlope is 0: every pixel would become the intercept")


def _frames_and_samples(path: str, ds) -> tuple[int, int]:
  """NumberOfFrames and SamplesPerPixel (1 when absent); InputError unless whole numbers ≥ 1."""
  frames = _header_int(path, ds, "NumberOfFrames", 1)
  samples = _header_int(path, ds, "SamplesPerPixel", 1)
  if frames < 1 or samples < 1:
    raise InputError(path, f"DICOM NumberOfFrames {frames}, SamplesPerPixel {samples}: expected at least 1 each")
  return frames, samples


def _check_pixel_size(path: str, ds, options: ReadOptions, frames: int, samples: int) -> None:
  """Rows × Columns against the side and pixel limits, and the whole pixel data against the voxel limit."""
  rows, columns = _header_int(path, ds, "Rows", 0), _header_int(path, ds, "Columns", 0)
  check_size(path, rows, columns, options)
  check_voxels(path, (frames, rows, columns, samples), options, "DICOM pixel data (frames × rows × columns × samples)")


def check_header(path: str, options: ReadOptions) -> None:
  """The size limits from the header alone (read without the pixel data); a header without Rows and
  Columns is left to `read_dicom`, which says that the file holds no image."""
  ds = dcmread(path, stop_before_pixels=True)
  if "Rows" in ds or "Columns" in ds:
    _check_pixel_size(path, ds, options, *_frames_and_samples(path, ds))


def pixel_array(path: str, ds, options: ReadOptions, frames: int = 1, samples: int = 1) -> np.ndarray:
  """The stored values (frames first for multi-frame), refused before decoding if too large."""
  if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
    raise InputError(path, "DICOM file has no pixel data (truncated, or a DICOMDIR or report)")
  _check_pixel_size(path, ds, options, frames, samples)
  try:
    return ds.pixel_array
  except Exception as e:  # missing decoders for compressed transfer syntaxes, bad lengths, ...
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    raise InputError(path, f"cannot decode DICOM pixel data (transfer syntax "
                           f"{getattr(syntax, 'name', syntax)}): {type(e).__name__}: {e}") from e


def _use_frame_groups(ds, frame: int) -> list[str]:
  """Copies an enhanced multi-frame file's rescale and window for `frame` (shared, then per-frame
  functional groups) to the top level, where pydicom's LUT functions read them; their names."""
  copied = []
  shared, per_frame = ds.get("SharedFunctionalGroupsSequence"), ds.get("PerFrameFunctionalGroupsSequence")
  groups = ([shared[0]] if shared else []) + ([per_frame[frame]] if per_frame and frame < len(per_frame) else [])
  for group in groups:  # the per-frame group comes last: it wins over the shared one
    for name in ("PixelValueTransformationSequence", "FrameVOILUTSequence"):
      if group.get(name):
        for element in group[name][0]:
          ds[element.tag] = element
          copied.append(element.keyword)
  return sorted(set(copied))


def modality_lut_note(ds) -> str:
  if ds.get("ModalityLUTSequence"):
    return "modality LUT: the Modality LUT Sequence"
  if "RescaleSlope" in ds and "RescaleIntercept" in ds:
    return f"modality LUT: RescaleSlope {float(ds.RescaleSlope):g}, RescaleIntercept {float(ds.RescaleIntercept):g}"
  return "modality LUT: none in the header (stored values used as they are)"


def modality_lut(path: str, pixels: np.ndarray, ds) -> np.ndarray:
  """pydicom's `apply_modality_lut` after the rescale fields were checked."""
  from pydicom.pixels import apply_modality_lut

  _checked_rescale(path, ds)
  try:
    return apply_modality_lut(pixels, ds)
  except Exception as e:  # a malformed Modality LUT Sequence: ValueError, IndexError, KeyError, ...
    raise InputError(path, f"cannot apply the DICOM modality LUT: {type(e).__name__}: {e}") from e


def _header_voi(path: str, ds, notes: list[str], warnings: list[str]) -> str:
  """The header's VOI LUT / windows as text for a note saying they were not used ('' when it has
  none); an unreadable window gets a warning instead."""
  parts = []
  if ds.get("VOILUTSequence"):
    parts.append(f"VOI LUT Sequence ({len(ds.VOILUTSequence)} item(s))")
  try:
    centers, widths = header_numbers(path, ds, "WindowCenter"), header_numbers(path, ds, "WindowWidth")
  except InputError as e:
    warn(notes, warnings, f"the header's window is unreadable ({e.reason}); it is not used here either")
    centers = widths = None
  if centers and widths:
    windows = ", ".join(f"{c:g}/{w:g}" for c, w in zip(centers, widths))
    parts.append(f"window(s) level/width {windows} ({ds.get('VOILUTFunction', 'LINEAR')})")
  return " and ".join(parts)


def _voi_to_uint8(path: str, values: np.ndarray, ds, notes: list[str]) -> np.ndarray:
  """pydicom's `apply_voi_lut` (VOI LUT Sequence first, else the first window), then its output
  range → 0..255; without either the image's min–max range."""
  from pydicom.pixels import apply_voi_lut

  lut_items = ds.get("VOILUTSequence")
  # pydicom's own test of a usable LUT item; with one it wins over the window (prefer_lut).
  use_lut = bool(lut_items) and all(lut_items[0].get(k) is not None for k in ("LUTDescriptor", "LUTData"))
  has_window = ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None
  if use_lut:
    if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
      values = values.astype(np.int64)  # LUT indices: integral rescale outputs are exact ints
    try:
      entries, first = int(lut_items[0].LUTDescriptor[0]) or 2**16, int(lut_items[0].LUTDescriptor[1])
      lut = apply_voi_lut(np.arange(first, first + entries, dtype=np.int64), ds)  # the LUT's entries
      out = apply_voi_lut(values, ds)
    except Exception as e:  # a malformed descriptor or LUT data: ValueError, IndexError, TypeError, ...
      raise InputError(path, f"cannot apply the DICOM VOI LUT Sequence: {type(e).__name__}: {e}") from e
    low, high = float(lut.min()), float(lut.max())
    notes.append(f"VOI LUT: the header's VOI LUT Sequence (first of {len(lut_items)}; {entries} entries, "
                 f"first mapped {first}), output range [{low:g}, {high:g}] of its entries → 0..255")
  elif has_window:
    fix = "; config.dicom_window = (level, width) replaces it"
    try:
      centers, widths = header_numbers(path, ds, "WindowCenter"), header_numbers(path, ds, "WindowWidth")
    except InputError as e:
      raise InputError(path, f"{e.reason}: the X-ray's grey levels come from this window{fix}") from None
    if not (centers and widths):
      raise InputError(path, f"DICOM WindowCenter/WindowWidth are empty: the X-ray's grey levels come from them{fix}")
    try:
      out = apply_voi_lut(values, ds)
      # The window's output range as pydicom defines it: where -inf and +inf land.
      low, high = sorted(float(v) for v in apply_voi_lut(np.array([-np.inf, np.inf]), ds))
    except Exception as e:  # a width below 1, an unknown VOILUTFunction, ...
      raise InputError(path, f"cannot apply the DICOM window: {type(e).__name__}: {e}{fix}") from e
    notes.append(f"VOI LUT: the header's window (first of {len(centers)}), level {centers[0]:g} / "
                 f"width {widths[0]:g}, function {ds.get('VOILUTFunction', 'LINEAR')} "
                 f"(pydicom apply_voi_lut), output range [{low:g}, {high:g}] → 0..255")
  else:
    out = values
    low, high = float(values.min()), float(values.max())
    notes.append(f"no VOI LUT or window in the header: full range [{low:g}, {high:g}] → 0..255")
  return to_uint8(out, low, high)


def read_dicom(path: str, options: ReadOptions, notes: list[str], warnings: list[str]) -> list[LoadedImage]:
  """One DICOM file by the rules of the module docstring."""
  ds = dcmread(path)
  frames, samples = _frames_and_samples(path, ds)
  pixels = pixel_array(path, ds, options, frames, samples)
  if frames > 1:
    pixels = pixels[frames // 2]
    try:
      copied = _use_frame_groups(ds, frames // 2)
    except Exception as e:  # malformed functional-group sequences surface in pydicom's accessors
      raise InputError(path, f"cannot read the DICOM functional groups: {type(e).__name__}: {e}") from e
    warn(notes, warnings, f"multi-frame DICOM ({frames} frames): used the middle frame {frames // 2}"
                          + (f", with its functional-group {', '.join(copied)}" if copied else ""))
  hounsfield = is_hounsfield(ds)
  dicom_modality = str(ds.get("Modality", "")).upper()
  modality = "ct" if hounsfield else "cxr" if dicom_modality in CXR_DICOM_MODALITIES else None
  if samples == 3:
    if pixels.dtype != np.uint8 or pixels.shape[-1:] != (3,):
      raise InputError(path, f"colour DICOM with {pixels.dtype} samples of shape {pixels.shape}; expected 8-bit RGB")
    notes.append("RGB DICOM: used as stored (no modality or VOI LUT)")
    return [LoadedImage(np.ascontiguousarray(pixels), modality)]
  if samples != 1 or pixels.ndim != 2:
    raise InputError(path, f"expected a single-frame grayscale or RGB DICOM image, got "
                           f"SamplesPerPixel={samples}, pixel array shape {pixels.shape}")
  photometric = str(ds.get("PhotometricInterpretation", "")).upper()
  if photometric not in ("MONOCHROME1", "MONOCHROME2"):
    raise InputError(path, f"grayscale DICOM with PhotometricInterpretation {photometric or '(none)'}; "
                           "expected MONOCHROME1 or MONOCHROME2 (or 8-bit RGB)")
  values = modality_lut(path, pixels, ds)
  notes.append(modality_lut_note(ds) + (" → Hounsfield units" if hounsfield else ""))
  values = finite(path, np.asarray(values), "values after the modality LUT", notes, warnings)
  if hounsfield:
    (level, width), source = options.window_for_ct()
    ignored = _header_voi(path, ds, notes, warnings)
    notes.append(f"CT window level {level:g} / width {width:g} from {source}"
                 + (f"; the header's {ignored} not used" if ignored else ""))
    if photometric == "MONOCHROME1":
      notes.append("MONOCHROME1 CT: not inverted (the HU window already shows dense tissue bright)")
    return [LoadedImage(window_ct(values, level, width)[..., None], modality)]
  if options.dicom_window is not None:
    level, width = options.dicom_window
    image = window_ct(values, level, width)
    _header_voi(path, ds, notes, warnings)  # an unreadable header window: a warning, not a refusal
    notes.append(f"window level {level:g} / width {width:g} from config.dicom_window (the header's VOI "
                 "LUT not used)")
  else:
    image = _voi_to_uint8(path, values, ds, notes)
  if photometric == "MONOCHROME1":
    image = 255 - image  # MONOCHROME1: the minimum value is white
    notes.append("MONOCHROME1: inverted (255 − v) so that dense is bright, as in MONOCHROME2")
  return [LoadedImage(image[..., None], modality)]
