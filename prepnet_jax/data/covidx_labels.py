"""COVIDx label files (versions 2, 7B, 8B), parsed without trusting the spaces.

COVIDx label lines are space separated (`patientid filename label` in V2, `patientid filename
label source` in V7B/V8B), but some patient ids (`COVID 72 COVID(72).png positive sirm`) and
some filenames contain spaces themselves, so `line.split()` shifts the fields of ~8 % of the
V7B lines (xray_gan_thesis.md §2.2). Fields are therefore found by anchoring on what is known:
the label vocabulary, the source vocabulary and the image file extension. The one remaining
ambiguity, where the patient id ends and the filename starts, is settled in this order:

1. the files present in the image folder, when given;
2. a filename whose stem starts with the patient id, compared on letters and digits only
   (`COVID 72` / `COVID(72).png`, `ANON12`/`ANON12.png`, rsna uuids);
3. otherwise a single-token patient id (the COVIDx V2 files put spaces in filenames only).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

from prepnet_jax.data.image_folder import IMAGE_EXTENSIONS

VERSIONS = ("2", "7b", "8b")
LABEL_NAMES = {
    "2": ("normal", "pneumonia", "COVID-19"),
    "7b": ("negative", "positive"),
    "8b": ("negative", "positive"),
}
SOURCES = {
    "2": (),
    "7b": ("cohen", "fig1", "actmed", "sirm", "rsna"),
    "8b": ("cohen", "fig1", "actmed", "sirm", "rsna", "ricord"),
}
_VERSION_IN_NAME = re.compile(r"COVIDx(\d+[AB]?)", re.IGNORECASE)


class LabelFileError(ValueError):
  """A COVIDx label file that cannot be read as the expected format."""


@dataclasses.dataclass(frozen=True)
class LabelRecord:
  """One line of a COVIDx label file."""
  patient: str
  filename: str
  label: int
  label_name: str
  source: str  # '' for V2, whose lines carry no source
  line_number: int


def label_file_name(split: str, version: str) -> str:
  """Official file name, e.g. ('train', '7b') -> 'train_COVIDx7B.txt'."""
  return f"{split}_COVIDx{version.upper()}.txt"


def version_from_file_name(path: str | os.PathLike) -> str | None:
  """'2', '7b' or '8b' from a name like `test_COVIDx8B.txt`; None if the name does not say."""
  match = _VERSION_IN_NAME.search(os.path.basename(os.fspath(path)))
  if match is None:
    return None
  version = match.group(1).lower()
  if version not in VERSIONS:
    raise LabelFileError(f"{path}: COVIDx version {match.group(1)!r} is not supported; "
                         f"expected one of {VERSIONS}")
  return version


def _alnum(text: str) -> str:
  return re.sub(r"[^0-9a-z]", "", text.lower())


def _normalise_spaces(name: str) -> str:
  return " ".join(name.split())


def _split_patient_and_filename(body: Sequence[str],
                                folder: tuple[str, dict[str, str]] | None) -> tuple[str, str]:
  """Chooses where the patient id ends among the tokens that precede the label.

  `folder` is (folder path, {file name with runs of spaces collapsed: real file name}).
  """
  candidates = [(" ".join(body[:j]), " ".join(body[j:])) for j in range(1, len(body))]
  if folder is not None:
    folder_path, names = folder
    on_disk = [(patient, names[filename]) for patient, filename in candidates if filename in names]
    if not on_disk:
      tried = ", ".join(repr(filename) for _, filename in candidates)
      raise ValueError(f"no image file named any of {tried} exists in {folder_path}")
    candidates = on_disk
  if len(candidates) == 1:
    return candidates[0]
  stem_matches = [(patient, filename) for patient, filename in candidates
                  if _alnum(os.path.splitext(filename)[0]).startswith(_alnum(patient))]
  if stem_matches:
    return max(stem_matches, key=lambda pair: len(pair[0]))
  return candidates[0]


def _folder_listing(image_folder: str | os.PathLike) -> tuple[str, dict[str, str]]:
  if not os.path.isdir(image_folder):
    raise FileNotFoundError(f"COVIDx image folder {image_folder} does not exist")
  return os.fspath(image_folder), {_normalise_spaces(name): name for name in os.listdir(image_folder)}


def parse_label_line(line: str, version: str, image_folder: str | os.PathLike | None = None,
                     line_number: int = 0) -> LabelRecord:
  """Parses one non-empty label line; raises ValueError saying what is wrong with it."""
  listing = None if image_folder is None else _folder_listing(image_folder)
  return _parse_line(line, version, listing, line_number)


def _parse_line(line: str, version: str, listing: tuple[str, dict[str, str]] | None,
                line_number: int) -> LabelRecord:
  if version not in VERSIONS:
    raise ValueError(f"COVIDx version {version!r} is not supported; expected one of {VERSIONS}")
  tokens = line.split()
  has_source = bool(SOURCES[version])
  n_tail = 2 if has_source else 1
  if len(tokens) < 2 + n_tail:
    expected = "patientid filename label" + (" source" if has_source else "")
    raise ValueError(f"expected at least {2 + n_tail} space-separated fields ({expected}), "
                     f"got {len(tokens)}")
  source = tokens[-1] if has_source else ""
  if has_source and source not in SOURCES[version]:
    raise ValueError(f"last field {source!r} is not a COVIDx{version.upper()} source "
                     f"{SOURCES[version]}")
  label_token = tokens[-n_tail]
  names_lower = [name.lower() for name in LABEL_NAMES[version]]
  if label_token.lower() not in names_lower:
    raise ValueError(f"label field {label_token!r} is not one of {LABEL_NAMES[version]}")
  label = names_lower.index(label_token.lower())
  body = tokens[:-n_tail]
  if not body[-1].lower().endswith(IMAGE_EXTENSIONS):
    raise ValueError(f"the filename must end with an image extension {IMAGE_EXTENSIONS}, "
                     f"got {body[-1]!r}")
  patient, filename = _split_patient_and_filename(body, listing)
  return LabelRecord(patient=patient, filename=filename, label=label,
                     label_name=LABEL_NAMES[version][label], source=source,
                     line_number=line_number)


def detect_version(path: str | os.PathLike, lines: Sequence[str]) -> str:
  """Version from the file name, else from the content (3 classes -> '2'; ricord -> '8b')."""
  from_name = version_from_file_name(path)
  if from_name is not None:
    return from_name
  last_tokens = {line.split()[-1] for line in lines if line.strip()}
  if last_tokens and all(t.lower() in ("normal", "pneumonia", "covid-19") for t in last_tokens):
    return "2"
  if last_tokens and last_tokens <= set(SOURCES["8b"]):
    return "8b" if "ricord" in last_tokens else "7b"
  raise LabelFileError(f"{path}: cannot tell the COVIDx version: neither the file name "
                       f"(e.g. train_COVIDx7B.txt) nor the last fields ({sorted(last_tokens)[:5]}) "
                       f"match version 2 labels {LABEL_NAMES['2']} or 7B/8B sources {SOURCES['8b']}")


def parse_label_file(path: str | os.PathLike, version: str | None = None,
                     image_folder: str | os.PathLike | None = None) -> list[LabelRecord]:
  """Reads every record of a COVIDx label file; a bad line raises LabelFileError naming it.

  `version` is '2', '7b' or '8b' (detected when None). With `image_folder` (the train/ or
  test/ folder) every filename is checked to exist there and ambiguous lines resolve.
  """
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  version = detect_version(path, lines) if version is None else version.lower()
  if version not in VERSIONS:
    raise LabelFileError(f"{path}: COVIDx version {version!r} is not supported; expected {VERSIONS}")
  listing = None if image_folder is None else _folder_listing(image_folder)
  records = []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      records.append(_parse_line(line, version, listing, number))
    except ValueError as e:
      raise LabelFileError(f"{path}, line {number}: {e}; line: {line!r}") from None
  if not records:
    raise LabelFileError(f"{path}: no label lines; expected lines like "
                         f"'patientid filename label{'' if version == '2' else ' source'}'")
  return records
