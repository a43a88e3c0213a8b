"""What every reader shares: the error type, the options and limits, the result types, the file
and format checks, and the value rules (non-finite values, size limits, the uint8 mapping).

The rules themselves are documented once, in the package docstring (`prepnet_jax.data.readers`).
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import os
import stat
from typing import Sequence

import numpy as np

# The limits of the package docstring, one set for training folders, predict and serve, so a model
# is never trained on images it would then refuse to predict (1×1 icons, 9000² scans). 25·10⁶ px
# holds every chest X-ray detector (≤ 4320² ≈ 18.7·10⁶) and keeps a decoded RGB image under
# 100 MB, while an 8000² PNG of zeros (60 kB on disk) is refused; 512³ voxels (0.5 GiB as float32)
# hold a CT volume of 512 slices of 512².
MIN_SIDE, MAX_SIDE = 32, 8192
MAX_PIXELS = 25_000_000
MAX_VOXELS = 512**3
ASPECT_WARNING = 4.0
# The project's CT conventions, shared by the NIfTI, DICOM-series and CT-dataset readers: the lung
# window (level, width) in HU and the thesis's three axial slice positions of a volume.
LUNG_WINDOW = (-600.0, 1500.0)
THESIS_POSITIONS = ("n//4", "n//2", "3n//4")
_NIFTI1_MAGIC, _NIFTI2_MAGIC = b"n+1\0", b"n+2\0"
_OTHER_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                     (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class InputError(ValueError):
  """A file this model cannot use: `path` names it, `reason` says what is wrong and what was expected."""

  def __init__(self, path, reason: str):
    super().__init__(str(path), reason)  # both in args: the error pickles and compares as it reads
    self.path, self.reason = str(path), reason

  def __str__(self) -> str:
    return f"{self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class ReadOptions:
  """How files become 2-D uint8 images; `from_config` reads the predict/serve config fields.

  `ct_window` is the model's training window (`eval.inference.Predictor` sets it, with where it
  came from); `dicom_window` (config.dicom_window) overrides it and the X-ray VOI LUTs.
  """
  dicom_window: tuple[float, float] | None = None
  ct_window: tuple[float, float] = LUNG_WINDOW
  ct_window_source: str = "the project's lung window (no model's training config given)"
  nifti_positions: tuple = THESIS_POSITIONS
  nifti_window: tuple[float, float] | None = None  # None: the CT window (`ct_window`), as DICOM CT
  nifti_rotate_k: int = 1
  nifti_crop: tuple[int, int] = (25, 45)
  nifti_flip_ud: bool = False
  min_side: int = MIN_SIDE
  max_side: int = MAX_SIDE
  max_pixels: int = MAX_PIXELS
  max_voxels: int = MAX_VOXELS

  @classmethod
  def from_config(cls, config) -> "ReadOptions":
    window = tuple(float(v) for v in config.dicom_window) if config.dicom_window else None
    if window is not None and (len(window) != 2 or not window[1] > 0):
      raise ValueError(f"config.dicom_window must be () or (level, width > 0), got {config.dicom_window!r}")
    for field in ("max_pixels", "max_voxels"):
      value = config[field]
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config.{field} = {value!r}: must be a positive integer")
    n = config.nifti
    return cls(dicom_window=window, nifti_positions=tuple(n.positions),
               nifti_window=tuple(float(v) for v in n.window) or None, nifti_rotate_k=int(n.rotate_k),
               nifti_crop=tuple(int(v) for v in n.crop), nifti_flip_ud=bool(n.flip_ud),
               min_side=int(config.min_side), max_side=int(config.max_side),
               max_pixels=int(config.max_pixels), max_voxels=int(config.max_voxels))

  def window_for_ct(self) -> tuple[tuple[float, float], str]:
    """The HU window of CT DICOM (files and series), with where it came from."""
    if self.dicom_window is not None:
      return self.dicom_window, "config.dicom_window"
    return self.ct_window, self.ct_window_source


@dataclasses.dataclass
class LoadedImage:
  """One 2-D image of a file: uint8 H×W×C, with the modality the file declares (None: unknown)."""
  image: np.ndarray
  modality: str | None
  label: str = ""  # which part of the file, e.g. 'slice 21' of a volume


@dataclasses.dataclass
class LoadedFile:
  path: str
  format: str  # 'dicom', 'dicom_series', 'nifti' or 'image'
  images: list[LoadedImage]
  notes: list[str]     # every step taken, in order
  warnings: list[str]  # the steps that changed values or need attention (also in notes)


def warn(notes: list[str], warnings: list[str], text: str) -> None:
  """A warning is a step taken too: `notes` stays the complete account, in order."""
  notes.append(text)
  warnings.append(text)


def file_problem(path: str) -> str | None:
  """Why `path` is not a regular, non-empty file (links followed), found without opening it; None
  when it is one."""
  try:
    status = os.stat(path)
  except FileNotFoundError:
    if os.path.islink(path):
      return f"broken symbolic link: its target {os.readlink(path)!r} does not exist"
    return "no such file or folder"
  except OSError as e:  # ELOOP (a link cycle), EACCES on a parent folder, a name too long, ...
    return f"cannot look it up: {e.strerror or e}"
  mode = status.st_mode
  if stat.S_ISREG(mode):
    return "empty file (0 bytes)" if status.st_size == 0 else None
  if stat.S_ISDIR(mode):
    return "a folder without image, DICOM or NIfTI files"
  kind = next((name for is_kind, name in _OTHER_FILE_KINDS if is_kind(mode)), "a special file")
  return f"{kind}, not a regular file: not opened (reading it could block or never end)"


def sniff_format(path: str) -> str:
  """'dicom', 'nifti', 'gzip' (compressed, not NIfTI) or 'image' (left to Pillow) from the first
  bytes of the file. A gzip start that cannot be decompressed raises (OSError, EOFError, zlib.error)."""
  with open(path, "rb") as f:
    head = f.read(544)
  if head[128:132] == b"DICM":
    return "dicom"
  compressed = head[:2] == b"\x1f\x8b"
  if compressed:
    with gzip.open(path, "rb") as f:
      head = f.read(544)
  if head[344:348] == _NIFTI1_MAGIC or head[4:8] == _NIFTI2_MAGIC:
    return "nifti"
  return "gzip" if compressed else "image"


def check_size(name: str, height: int, width: int, options: ReadOptions) -> None:
  """The side and pixel limits of one 2-D image or frame, from its header's size."""
  if min(height, width) < options.min_side or max(height, width) > options.max_side:
    raise InputError(name, f"image is {height}×{width} px; expected sides between {options.min_side} and "
                           f"{options.max_side} px (config.min_side/max_side)")
  if height * width > options.max_pixels:
    raise InputError(name, f"image is {height}×{width} = {height * width} px; at most {options.max_pixels} "
                           "pixels are decoded (config.max_pixels)")


def check_voxels(name: str, shape: Sequence[int], options: ReadOptions, what: str) -> None:
  count = math.prod(shape)
  if count > options.max_voxels:
    raise InputError(name, f"{what} of {'×'.join(str(int(n)) for n in shape)} = {count} values; at most "
                           f"{options.max_voxels} are decoded (config.max_voxels)")


def finite(name: str, values: np.ndarray, what: str, notes: list[str], warnings: list[str]) -> np.ndarray:
  """The non-finite rule: NaN and −Inf → the lowest finite value, +Inf → the highest, warned; a
  file without a finite value is refused."""
  is_finite = np.isfinite(values)
  if is_finite.all():
    return values
  if not is_finite.any():
    raise InputError(name, f"no finite {what}: every one is NaN or infinite")
  low, high = values[is_finite].min(), values[is_finite].max()
  nan = np.isnan(values)
  counts = {"NaN": int(nan.sum()), "+Inf": int(np.count_nonzero(values == np.inf)),
            "−Inf": int(np.count_nonzero(values == -np.inf))}
  found = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
  warn(notes, warnings, f"{values.size - int(is_finite.sum())} of {values.size} {what} not finite ({found}): "
                        f"NaN and −Inf set to the lowest finite value {float(low):g}, +Inf to the highest "
                        f"{float(high):g}")
  return np.where(nan, low, np.clip(values, low, high))


def to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
  """rint(255 · (v − low) / (high − low)), clipped: an output range → the display range."""
  scaled = (np.asarray(values, np.float64) - low) * (255.0 / max(high - low, 1e-12))
  return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)
