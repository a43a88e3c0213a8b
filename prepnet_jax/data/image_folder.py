"""A random-access source over a user's own image folder (class sub-folders or a label file).

Every file is decoded once while the index is built, so a corrupt image is found before
training starts: with on_corrupt='skip' it is left out of the index (indices map to good
files only, labels never shift) and listed in `skipped`; with 'error' building fails naming
the file. grain's `MapDataset.source` accepts the object as it is. Files are checked and decoded
by the image rules and limits of predict and serve (`data.readers`: bit depth, alpha, frames,
sides and pixels from the header), so training sees the pixels predict sees, and a skipped
file's reason is the one predict gives.

Labels of class sub-folders follow the order of the given `class_names`, never the sorted
folder names: `resolve_class_folders` matches folders to class names (rule in its docstring)
and refuses a folder set that does not fit them.
"""

from __future__ import annotations

import csv
import pathlib
import re
import sys
from typing import Mapping, Sequence

import numpy as np
from absl import logging

from prepnet_jax.data import readers
from prepnet_jax.data.readers import images

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp")
PATIENT_FROM = ("auto", "stem", "parent", "label_file", "regex")
# No limit on sides or pixels: what `read_options=None` means (the decompression-bomb limit of
# Pillow still applies).
_ANY_SIZE = readers.ReadOptions(min_side=1, max_side=sys.maxsize, max_pixels=sys.maxsize)


class CorruptImageError(ValueError):
  """An image file that cannot be decoded."""


class ClassFolderError(ValueError):
  """Class sub-folders that do not match the configured class names."""


def decode_image(path: str | pathlib.Path) -> np.ndarray:
  """Decodes one file to uint8 H×W×C by the image rules of predict and serve (`readers.images`:
  channels, bit depth, alpha, first frame); raises CorruptImageError naming it."""
  try:
    return images.decode(str(path), [], [])
  except readers.InputError as e:
    raise CorruptImageError(f"cannot decode image {path}: {e.reason}") from e


def check_image(path: str | pathlib.Path, read_options: readers.ReadOptions | None = None) -> str | None:
  """None for a good image; otherwise the reason, the one predict gives for the same file: not a
  regular file, sides or pixels outside `read_options`' limits (read from the header before
  anything is decoded; None: any size), a header/CRC check, then a full decode by the image rules."""
  problem = readers.file_problem(str(path))
  if problem is not None:
    return problem
  try:
    images.read_image(str(path), read_options or _ANY_SIZE, [], [])
  except readers.InputError as e:
    return e.reason
  return None


def list_images(folder: pathlib.Path) -> list[pathlib.Path]:
  """Entries with an image file name below `folder` (recursive, sorted, hidden files ignored).

  Not only regular files: a broken link or a FIFO named like an image is listed too, so that
  `check_image` refuses it with the reason (without opening it) and the skip is accounted for."""
  return sorted(p for p in folder.rglob("*")
                if not p.is_dir() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def class_folders_in(root: pathlib.Path) -> list[str]:
  """The sub-folder names of `root` (sorted, hidden folders ignored)."""
  return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _loose_name(name: str) -> str:
  return re.sub(r"[-_\s]+", "", name).casefold()


def resolve_class_folders(folders: Sequence[str], class_names: Sequence[str],
                          class_folders: Mapping[str, str] | None = None,
                          root: str | pathlib.Path = "") -> dict[str, str]:
  """{folder: class name, or '' for a folder left out} for every folder in `folders`.

  Without `class_folders`, each class name takes the one folder whose name equals it ignoring
  case; a class still without a folder then takes the one remaining folder that equals it also
  ignoring '-', '_' and spaces ('NonCOVID', 'non_covid' -> 'non-COVID'). With `class_folders`
  (folder -> class name, '' = leave the folder out) every folder must be listed and several may
  share a class; listed names this root lacks are ignored, so one mapping serves a training and
  an evaluation folder. Either way every class needs a folder; a class with two candidate
  folders, a folder without a class or a class without a folder raises ClassFolderError naming
  the folders found, the class names and the fix.
  """
  class_names = [str(c) for c in class_names]
  if class_folders is None:
    mapping, problems = _match_by_name(folders, class_names)
  else:
    class_folders = {str(k): str(v) for k, v in class_folders.items()}
    mapping = {f: class_folders.get(f, "") for f in folders}
    problems = [f"class_folders maps folder {f!r} to {c!r}, which is not one of the class names"
                for f, c in class_folders.items() if c and c not in class_names]
    problems += [f"folder {f!r} is not in class_folders" for f in folders if f not in class_folders]
    problems += [f"no folder for class {c!r}" for c in class_names if c not in mapping.values()]
  if problems:
    raise ClassFolderError(_mismatch_message(root, folders, class_names, mapping, problems,
                                                     explicit=class_folders is not None))
  return mapping


def _match_by_name(folders: Sequence[str], class_names: list[str]) -> tuple[dict[str, str], list[str]]:
  """The automatic rule of `resolve_class_folders`: (mapping, what does not fit)."""
  mapping: dict[str, str] = {}
  problems: list[str] = []
  unclear_classes: set[str] = set()  # already named in a problem: not reported twice
  unclear_folders: set[str] = set()
  for key in (str.casefold, _loose_name):
    for name in class_names:
      if name in unclear_classes or name in mapping.values():
        continue
      hits = [f for f in folders if f not in mapping and f not in unclear_folders and key(f) == key(name)]
      rivals = [c for c in class_names
                if c not in unclear_classes and c not in mapping.values() and key(c) == key(name)]
      if len(hits) > 1:
        problems.append(f"class {name!r} matches several folders {hits}")
        unclear_classes.add(name)
        unclear_folders.update(hits)
      elif hits and len(rivals) > 1:
        problems.append(f"folder {hits[0]!r} matches several classes {rivals}")
        unclear_classes.update(rivals)
        unclear_folders.add(hits[0])
      elif hits:
        mapping[hits[0]] = name
  problems += [f"folder {f!r} matches no class name" for f in folders
               if f not in mapping and f not in unclear_folders]
  problems += [f"no folder for class {c!r}" for c in class_names
               if c not in mapping.values() and c not in unclear_classes]
  return {f: mapping.get(f, "") for f in folders}, problems


def _mismatch_message(root, folders, class_names, mapping, problems, explicit: bool) -> str:
  # The example maps folders that found no class to the classes still without a folder, in order:
  # a starting point to correct, not a guess the loader would act on.
  valid = {f: c for f, c in mapping.items() if c in class_names}
  missing = iter(c for c in class_names if c not in valid.values())
  example = {f: valid.get(f) or next(missing, "") for f in folders}
  where = f"{root}: " if str(root) else ""
  layout = "" if folders else " (expected <root>/<class>/<images>)"
  rule = ("config.data.class_folders must list every folder with a class name ('' leaves it out)"
          if explicit else "Folders match class names ignoring case, then also ignoring '-', '_' and "
          "spaces. Rename the folders, or map every folder to a class name ('' leaves it out)")
  return (f"{where}the class folders do not match config.data.class_names:\n"
          + "".join(f"  - {p}\n" for p in problems)
          + f"Folders found: {list(folders)}{layout}; class_names (label order): {class_names}.\n"
          f"{rule}, e.g.\n  --config.data.class_folders=\"{example}\"")


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

  Layout: `root/<class folder>/**/<image>` (label = index in `class_names` of the folder's class,
  matched by `resolve_class_folders` with the optional `class_folders` mapping; without
  `class_names` each sorted sub-folder is a class), or `label_file` (CSV with a header naming
  filename,label[,patient], or `patient filename label` lines; file names relative to root).
  `read_options`: images outside its side and pixel limits are skipped like corrupt ones (None:
  any size; the jobs' `folder:` datasets use `readers.ReadOptions()`, predict's default limits).
  Patient id (`patient_from`): 'auto' = the label file's patient column if any, else the file
  stem; 'stem'; 'parent' (per-patient folders); 'label_file'; 'regex' = `patient_regex` searched
  in the path relative to root (named group 'patient', else group 1).
  """

  def __init__(self, root: str | pathlib.Path, class_names: Sequence[str] | None = None,
               label_file: str | pathlib.Path | None = None, on_corrupt: str = "skip",
               patient_from: str = "auto", patient_regex: str | None = None, domain: int = 0,
               name: str | None = None, class_folders: Mapping[str, str] | None = None,
               read_options: readers.ReadOptions | None = None):
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
    if class_folders is not None and (label_file or class_names is None):
      raise ValueError("class_folders maps class sub-folders to class_names: it needs class_names "
                       "and no label_file")
    self.class_names: list[str] = []
    self.class_folders: dict[str, str] = {}  # folder -> class name ('' = left out); folder layout only
    if label_file:
      candidates = self._index_label_file(label_file, class_names)
    else:
      candidates = self._index_folders(class_names, class_folders)
    regex = re.compile(patient_regex) if patient_regex else None
    self.files: list[str] = []
    self.labels: list[int] = []
    self.patients: list[str] = []
    self.skipped: list[tuple[str, str]] = []
    for path, label, listed_patient in candidates:
      reason = check_image(path, read_options)
      if reason is not None:
        if on_corrupt == "error":
          raise CorruptImageError(f"unusable image {path} (corrupt, unreadable or outside the size "
                                  f"limits): {reason}")
        self.skipped.append((str(path), reason))
        continue
      relative = path.relative_to(self.root).as_posix()
      self.files.append(relative)
      self.labels.append(label)
      self.patients.append(self._patient(patient_from, regex, path, relative, listed_patient))
    if self.skipped:
      # One line per index; the files and reasons are in `report()` and a training job's
      # reports/skipped_files.json (`datasets.record_folder_labels`).
      logging.warning("%s: %d of %d image files skipped (corrupt, unreadable or outside the size limits)",
                      self.root, len(self.skipped), len(candidates))

  def _index_folders(self, class_names, class_folders):
    folders = class_folders_in(self.root)
    if class_names is None:
      if not folders:
        raise FileNotFoundError(f"{self.root} has no class sub-folders (expected root/<class>/<images>)")
      class_names = folders
    self.class_names = [str(c) for c in class_names]
    self.class_folders = resolve_class_folders(folders, self.class_names, class_folders, self.root)
    candidates = []
    for label, class_name in enumerate(self.class_names):
      for folder in (f for f, c in self.class_folders.items() if c == class_name):
        candidates += [(path, label, None) for path in list_images(self.root / folder)]
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
