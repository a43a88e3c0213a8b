"""A random-access source over a user's own image folder (class sub-folders or a label file).

Every file is decoded once while the index is built, so a corrupt image is found before
training starts: with on_corrupt='skip' it is left out of the index (indices map to good
files only, labels never shift) and listed in `skipped`; with 'error' building fails naming
the file. grain's `MapDataset.source` accepts the object as it is.
"""

from __future__ import annotations

import csv
import pathlib
import re
from typing import Sequence

import numpy as np
from absl import logging
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
PATIENT_FROM = ("auto", "stem", "parent", "label_file", "regex")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_GRAY_MODES = ("1", "L", "LA", "La")


class CorruptImageError(ValueError):
  """An image file that cannot be decoded."""


def pil_to_uint8(im: Image.Image) -> np.ndarray:
  """Pillow image -> uint8 HxWxC with C=1 for grayscale modes and C=3 for everything else.

  Palette images go to RGB, alpha is dropped, 16-bit values map to 8 bit by /257 (65535 -> 255),
  which keeps absolute intensities comparable across images (no per-image min/max stretch).
  """
  if im.mode in _SIXTEEN_BIT_MODES:
    wide = np.clip(np.asarray(im, dtype=np.float64), 0, 65535)
    return np.rint(wide / 257.0).astype(np.uint8)[..., None]
  if im.mode in _GRAY_MODES:
    return np.asarray(im.convert("L"))[..., None]
  return np.asarray(im.convert("RGB"))


def decode_image(path: str | pathlib.Path) -> np.ndarray:
  """Decodes one file to uint8 HxWxC (see `pil_to_uint8`); raises CorruptImageError naming it."""
  try:
    with Image.open(path) as im:
      return pil_to_uint8(im)
  except Exception as e:  # Pillow raises many types (OSError, SyntaxError, struct.error, ...).
    raise CorruptImageError(f"cannot decode image {path}: {type(e).__name__}: {e}") from e


def check_image(path: str | pathlib.Path) -> str | None:
  """None for a good image; otherwise the reason (header/CRC check, then a full decode)."""
  try:
    with Image.open(path) as im:
      im.verify()
    with Image.open(path) as im:
      im.load()
  except Exception as e:  # any decoding failure means the file is unusable.
    return f"{type(e).__name__}: {e}"
  return None


def list_images(folder: pathlib.Path) -> list[pathlib.Path]:
  """Image files below `folder` (recursive, sorted, hidden files ignored)."""
  return sorted(p for p in folder.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def patient_from_regex(pattern: re.Pattern, relative_path: str) -> str:
  """The named group 'patient', else group 1, else the whole match of `pattern` in the path."""
  match = pattern.search(relative_path)
  if match is None:
    raise ValueError(f"patient regex {pattern.pattern!r} does not match file {relative_path!r}")
  if "patient" in pattern.groupindex:
    return match.group("patient")
  return match.group(1) if pattern.groups else match.group(0)


def _read_label_file(path: pathlib.Path) -> list[tuple[str | None, str, str]]:
  """(patient or None, filename, label) rows from a CSV (header optional) or whitespace file."""
  if not path.is_file():
    raise FileNotFoundError(f"label file {path} does not exist")
  rows = []
  if path.suffix.lower() == ".csv":
    with open(path, newline="") as f:
      lines = [r for r in csv.reader(f) if r and not r[0].startswith("#")]
    header = [c.strip().lower() for c in lines[0]] if lines else []
    if "filename" in header and "label" in header:
      col = {name: header.index(name) for name in ("patient", "filename", "label") if name in header}
      for row in lines[1:]:
        rows.append((row[col["patient"]].strip() if "patient" in col else None,
                     row[col["filename"]].strip(), row[col["label"]].strip()))
      return rows
  else:
    with open(path) as f:
      lines = [line.split() for line in f if line.strip() and not line.lstrip().startswith("#")]
  for number, row in enumerate(lines, start=1):
    if len(row) != 3:
      raise ValueError(f"{path} row {number}: expected 'patient filename label' (3 fields), got {row}")
    rows.append((row[0].strip(), row[1].strip(), row[2].strip()))
  return rows


def _labels_from_strings(values: Sequence[str], class_names: Sequence[str] | None,
                         source: pathlib.Path) -> tuple[list[int], list[str]]:
  """Label strings -> ints: class names (given, or sorted unique names) or integer literals."""
  if class_names is None:
    if all(v.isdigit() for v in values):
      class_names = [str(i) for i in range(max(int(v) for v in values) + 1)] if values else []
    else:
      class_names = sorted(set(values))
  class_names = list(class_names)
  labels = []
  for v in values:
    if v in class_names:
      labels.append(class_names.index(v))
    elif v.isdigit() and int(v) < len(class_names):
      labels.append(int(v))
    else:
      raise ValueError(f"{source}: label {v!r} is neither a class name in {class_names} nor a valid index")
  return labels, class_names


class ImageFolderSource:
  """Random-access source of example dicts over `root`.

  Layout: `root/<class>/**/<image>` (label = index of the class in `class_names`, default the
  sorted sub-folder names), or `label_file` (CSV with a header naming filename,label[,patient],
  or `patient filename label` lines; file names relative to root).
  Patient id (`patient_from`): 'auto' = the label file's patient column if any, else the file
  stem; 'stem'; 'parent' (per-patient folders); 'label_file'; 'regex' = `patient_regex` searched
  in the path relative to root (named group 'patient', else group 1).
  """

  def __init__(self, root: str | pathlib.Path, class_names: Sequence[str] | None = None,
               label_file: str | pathlib.Path | None = None, on_corrupt: str = "skip",
               patient_from: str = "auto", patient_regex: str | None = None, domain: int = 0,
               name: str | None = None):
    if on_corrupt not in ("skip", "error"):
      raise ValueError(f"on_corrupt must be 'skip' or 'error', got {on_corrupt!r}")
    if patient_from not in PATIENT_FROM:
      raise ValueError(f"patient_from must be one of {PATIENT_FROM}, got {patient_from!r}")
    if (patient_from == "regex") != (patient_regex is not None):
      raise ValueError("patient_regex is required with patient_from='regex' and only used with it")
    self.root = pathlib.Path(root)
    if not self.root.is_dir():
      raise FileNotFoundError(f"image folder {self.root} does not exist")
    self.domain = domain
    self.name = name or self.root.name
    self.class_names: list[str] = []
    if label_file:
      candidates = self._index_label_file(label_file, class_names)
    else:
      candidates = self._index_folders(class_names)
    regex = re.compile(patient_regex) if patient_regex else None
    self.files: list[str] = []
    self.labels: list[int] = []
    self.patients: list[str] = []
    self.skipped: list[tuple[str, str]] = []
    for path, label, listed_patient in candidates:
      reason = check_image(path) if path.is_file() else "file not found"
      if reason is not None:
        if on_corrupt == "error":
          raise CorruptImageError(f"corrupt or unreadable image {path}: {reason}")
        self.skipped.append((str(path), reason))
        continue
      relative = path.relative_to(self.root).as_posix()
      self.files.append(relative)
      self.labels.append(label)
      self.patients.append(self._patient(patient_from, regex, path, relative, listed_patient))
    if self.skipped:
      logging.warning("%s", self.report())

  def _index_folders(self, class_names):
    if class_names is None:
      class_names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
      if not class_names:
        raise FileNotFoundError(f"{self.root} has no class sub-folders (expected root/<class>/<images>)")
    self.class_names = list(class_names)
    candidates = []
    for label, class_name in enumerate(self.class_names):
      folder = self.root / class_name
      if not folder.is_dir():
        raise FileNotFoundError(f"class folder {folder} does not exist (class_names={self.class_names})")
      candidates += [(path, label, None) for path in list_images(folder)]
    return candidates

  def _index_label_file(self, label_file, class_names):
    label_path = pathlib.Path(label_file)
    if not label_path.is_absolute() and not label_path.exists():
      label_path = self.root / label_path
    rows = _read_label_file(label_path)
    outside = [f for _, f, _ in rows
               if pathlib.PurePosixPath(f).is_absolute() or ".." in pathlib.PurePosixPath(f).parts]
    if outside:
      raise ValueError(f"{label_path}: file names must be relative to {self.root}, got e.g. {outside[0]!r}")
    labels, self.class_names = _labels_from_strings([r[2] for r in rows], class_names, label_path)
    return [(self.root / filename, label, patient) for (patient, filename, _), label in zip(rows, labels)]

  def _patient(self, patient_from, regex, path, relative, listed_patient):
    if patient_from == "regex":
      return patient_from_regex(regex, relative)
    if patient_from == "label_file" or (patient_from == "auto" and listed_patient is not None):
      if listed_patient is None:
        raise ValueError(f"patient_from='label_file' but the label file has no patient for {relative}")
      return listed_patient
    if patient_from == "parent":
      return path.parent.name
    return path.stem

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> dict:
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} images in {self.root}")
    return {
        "image": decode_image(self.root / self.files[index]),
        "label": self.labels[index],
        "patient": self.patients[index],
        "filename": self.files[index],
        "domain": self.domain,
        "source": self.name,
    }

  def column(self, key: str) -> np.ndarray:
    """One metadata field of every example without decoding images (for splits and filters)."""
    values = {"label": self.labels, "patient": self.patients, "filename": self.files,
              "domain": [self.domain] * len(self), "source": [self.name] * len(self)}
    if key not in values:
      raise KeyError(f"column {key!r} is not metadata; expected one of {sorted(values)}")
    return np.asarray(values[key])

  def report(self) -> str:
    """Human-readable summary: images kept per class and every skipped file with its reason."""
    counts = np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.class_names))
    per_class = ", ".join(f"{name}={int(n)}" for name, n in zip(self.class_names, counts))
    lines = [f"{self.name} ({self.root}): {len(self)} images ({per_class}), "
             f"{len(set(self.patients))} patients, {len(self.skipped)} skipped"]
    lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
    return "\n".join(lines)
