"""Task 'predict': calibrated class probabilities and Grad-CAM for image files and folders.

Each input file is read by content (PNG/JPEG, DICOM, NIfTI; see `prepnet_jax.data.readers`,
whose `read_input` is the one input boundary and documents the rules for bad values), checked
against what the model was trained for (modality from its training data, size range) and
predicted on its own. The job never stops on one file: a file that cannot be used (`InputError`),
and any other failure while predicting or writing one file, is recorded with its reason and the
next file is read. In a folder, single-frame CT DICOM files that share a SeriesInstanceUID (two or
more) are one input: the series, read as a volume sorted by slice position and predicted like a
NIfTI volume (`readers.collect_dicom_series`); files named explicitly are always predicted one
by one.

Inputs: `config.inputs` (comma-separated files, folders, 'phantom:ct' / 'phantom:cxr') and
`config.inputs_file` (one path per line, used exactly as written apart from the line end, so names
may hold commas or spaces; empty lines are ignored). Folders are walked recursively without
following symbolic links to folders, and every entry is listed in summary.json: candidates by
name (image/DICOM/NIfTI extensions or none) are read (links followed; FIFOs, sockets, devices,
broken links and unreadable files are refused by the reader without being opened), and folders,
hidden entries (and all below a hidden folder), links to folders and other names are 'skipped'
with the reason.

Outputs in <workdir>/predictions, named after each input's file name (folder members: their path
below the folder, separators as '_'); when two inputs would write the same file (e.g. `x.nii.gz`
slice 10 and `x_slice10.png`), the later one's name gets a suffix `_2`, `_3`, ... (compared
ignoring case):
  <name>.json            probabilities per class (file level: the image, or the mean over a
                         volume's slices) plus per image/slice logits, probabilities, the reading
                         notes and warnings, and the temperature with where it came from
  <name>_gradcam.png     Grad-CAM over the model input (one per image; `_slice<k>` for volumes)
  <name>_prepnet.png     original | PrepNet-normalised image, for a PrepNet run or an AE in front
  predictions.csv        one row per image (and per failed file), with its warnings
  summary.json           counts (n_ok, n_failed, n_skipped, n_warned), the failures and warnings,
                         `entries`: every input and every folder entry as ok / failed / skipped
                         with its reason, warnings and output, and the model (which one of its
                         workdir) and the temperature used
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re
import traceback
from typing import NamedTuple, Sequence

import numpy as np

from prepnet_jax.data import image_folder, readers, transforms
from prepnet_jax.eval import inference
from prepnet_jax.runtime.writers import save_png

# Folder members that are tried (by content); explicitly named files are always tried.
INPUT_EXTENSIONS = tuple(image_folder.IMAGE_EXTENSIONS) + (".dcm", ".dicom", ".nii", ".nii.gz")
PHANTOM_PREFIX = "phantom:"
OUTPUT_FILES = ("summary.json", "predictions.csv")
MAX_STEM_BYTES = 120  # output names stay far below the usual 255-byte (UTF-8) file-name limit


# --- inputs --------------------------------------------------------------------------------------

class Input(NamedTuple):
  source: str | readers.DicomSeries  # a path, or a DICOM series of a folder
  name: str                            # display name: the path below its folder, or the file name


def _is_candidate(name: str) -> bool:
  """Image, DICOM and NIfTI extensions, and extensionless files (DICOM often has none)."""
  name = name.lower()
  return name.endswith(INPUT_EXTENSIONS) or "." not in name


def _entry(path: str, reason: str, status: str = "skipped") -> dict:
  return {"file": path, "status": status, "reason": reason}


def _folder_entries(root: str) -> tuple[list[str], list[dict]]:
  """(the candidate inputs below `root`, every other entry as a skipped or failed record), walking
  without opening a file or following a link to a folder (no loops)."""
  candidates: list[str] = []
  others: list[dict] = []

  def walk(folder: str) -> str | None:
    """Lists `folder` into candidates / others; why it cannot be listed, or None."""
    try:
      with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    except OSError as e:
      return f"cannot list this folder: {e.strerror or e}"
    for entry in entries:
      if entry.name.startswith("."):
        others.append(_entry(entry.path, "hidden (name starts with '.'); not read, nor anything below it"))
      elif entry.is_dir(follow_symlinks=False):
        problem = walk(entry.path)
        others.append(_entry(entry.path, problem, "failed") if problem else
                      _entry(entry.path, "folder: its entries are listed one by one"))
      elif entry.is_symlink() and os.path.isdir(entry.path):
        others.append(_entry(entry.path, f"symbolic link to the folder {os.readlink(entry.path)!r}: not "
                                         "followed (name the folder itself to predict it)"))
      elif not _is_candidate(entry.name):
        others.append(_entry(entry.path, f"not an input by its name: expected no extension or one of "
                                         f"{', '.join(INPUT_EXTENSIONS)}"))
      else:
        candidates.append(entry.path)
    return None

  problem = walk(root)
  if problem:
    others.append(_entry(root, problem, "failed"))
  return sorted(candidates), others


def _series_names(series: list[readers.DicomSeries], root: pathlib.Path) -> list[str]:
  """The series' folder below `root`, with its SeriesNumber (or UID tail) where a folder holds several."""
  folders = [pathlib.Path(s.folder).resolve().relative_to(root.resolve()).as_posix() for s in series]
  folders = [root.resolve().name if f == "." else f for f in folders]
  return [f if folders.count(f) == 1 else f"{f}/series_{s.number or s.uid.rsplit('.', 1)[-1]}"
          for f, s in zip(folders, series)]


def input_items(config) -> list[str]:
  """The items of config.inputs (comma-separated, trimmed) and of config.inputs_file (one per line,
  exact apart from the line end, so names may hold commas and spaces)."""
  items = [s.strip() for s in config.inputs.split(",") if s.strip()]
  if config.inputs_file:
    try:
      with open(config.inputs_file, encoding="utf-8", errors="surrogateescape") as f:
        items += [line.rstrip("\r\n") for line in f if line.rstrip("\r\n")]
    except OSError as e:
      raise ValueError(f"config.inputs_file = {config.inputs_file!r} cannot be read: {e.strerror or e}; "
                       "expected a text file with one input path per line") from e
  return items


def expand_inputs(items: str | Sequence[str], workdir: str, phantom_seed: int,
                  not_read: list[dict] | None = None) -> list[Input]:
  """The inputs of a comma-separated string or a list of files, folders and phantom:<m>; folder
  entries that are not read are appended to `not_read` (`_folder_entries`)."""
  if isinstance(items, str):
    items = [s.strip() for s in items.split(",")]
  not_read = [] if not_read is None else not_read
  inputs: list[Input] = []
  for item in (i for i in items if i):
    if item.startswith(PHANTOM_PREFIX):
      folder = export_phantom_inputs(os.path.join(workdir, "phantom_inputs"), item[len(PHANTOM_PREFIX):],
                                     seed=phantom_seed)
      inputs += [Input(str(p), p.name) for p in sorted(folder.iterdir())]
    elif os.path.isdir(item):
      root = pathlib.Path(item)
      members, others = _folder_entries(item)
      not_read += others
      if not members and not any(o["file"] == item for o in others):  # a listed folder without inputs:
        inputs.append(Input(item, item))  # read_input reports it
      regular = [p for p in members if os.path.isfile(p)]  # FIFOs are never opened for the series scan
      series, _ = readers.collect_dicom_series(regular)
      first_files = {s.files[0]: Input(s, name) for s, name in zip(series, _series_names(series, root))}
      in_series = {f for s in series for f in s.files}
      for path in members:  # a series takes the place of its first file
        if path in first_files:
          inputs.append(first_files[path])
        elif path not in in_series:
          inputs.append(Input(path, pathlib.Path(path).relative_to(root).as_posix()))
    else:
      inputs.append(Input(item, os.path.basename(item.rstrip("/")) or item))
  if not inputs:
    raise ValueError("config.inputs is empty (and config.inputs_file lists nothing); expected comma-separated "
                     "files/folders (PNG/JPEG, DICOM, NIfTI), 'phantom:ct' / 'phantom:cxr', or a file listing "
                     "one path per line")
  return inputs


def output_stem(name: str) -> str:
  """A file-system-safe output name for an input's display name (extension dropped)."""
  stem = re.sub(r"\.(nii\.gz|[A-Za-z0-9]{1,5})$", "", name)
  stem = re.sub(r"[^\w.-]+", "_", stem).strip("._") or "input"  # letters of any script stay
  return stem.encode()[:MAX_STEM_BYTES].decode(errors="ignore")


class OutputNames:
  """The file names written to one folder: each input's files are claimed together, so no two
  inputs share a file. Names are compared ignoring case (macOS and Windows file systems)."""

  def __init__(self, reserved: Sequence[str] = OUTPUT_FILES):
    self.used = {n.casefold() for n in reserved}

  def claim(self, stem: str, suffixes: Sequence[str]) -> str:
    """The first of stem, stem_2, stem_3, ... whose stem + suffix names are all free; claims them."""
    k = 1
    while True:
      candidate = stem if k == 1 else f"{stem}_{k}"
      names = {(candidate + s).casefold() for s in suffixes}
      if not names & self.used:
        self.used |= names
        return candidate
      k += 1


# --- phantom example files -----------------------------------------------------------------------

def write_dicom(path: str | os.PathLike, stored: np.ndarray, modality: str, *, slope: float = 1.0,
                intercept: float = 0.0, window: tuple | None = None,
                photometric: str = "MONOCHROME2", bits_stored: int = 16, **attributes) -> None:
  """A minimal uncompressed single-frame grayscale DICOM file of `stored` (uint16/int16 values).

  `window` = (centers, widths): two numbers or two equal-length lists (multi-valued window).
  `attributes`: further elements by keyword (VOILUTFunction, SeriesInstanceUID,
  ImagePositionPatient, VOILUTSequence, ...), set last.
  """
  import pydicom
  from pydicom.dataset import FileMetaDataset
  from pydicom.uid import (CTImageStorage, DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian,
                           generate_uid)

  stored = np.asarray(stored)
  if stored.ndim != 2 or stored.dtype not in (np.uint16, np.int16):
    raise ValueError(f"write_dicom: expected a 2-D uint16/int16 array, got {stored.dtype} {stored.shape}")
  sop_class = CTImageStorage if modality == "CT" else DigitalXRayImageStorageForPresentation
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = sop_class
  meta.MediaStorageSOPInstanceUID = generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = pydicom.Dataset()
  ds.file_meta = meta
  ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
  ds.Modality = modality
  ds.PatientID = "PHANTOM"
  ds.Rows, ds.Columns = stored.shape
  ds.SamplesPerPixel = 1
  ds.PhotometricInterpretation = photometric
  ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
  ds.PixelRepresentation = int(stored.dtype == np.int16)
  ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
  if window is not None:
    ds.WindowCenter, ds.WindowWidth = window
  for keyword, value in attributes.items():
    setattr(ds, keyword, value)
  ds.PixelData = np.ascontiguousarray(stored).tobytes()
  ds.save_as(str(path), enforce_file_format=True)


def export_phantom_inputs(out_dir: str, modality: str, seed: int = 1) -> pathlib.Path:
  """A few phantom images in every input format, named after their site and true label.

  ct: sars PNGs, a ucsd JPEG, a mosmed NIfTI volume stored in DICOM order (non-canonical) and
  one of its slices as a CT DICOM (12-bit HU + 1024 with intercept −1024, lung window).
  cxr: covidx PNGs, a pediatric JPEG and an ulm DX DICOM (12-bit, MONOCHROME1, multi-valued
  window). A folder that exists already is reused.
  """
  from prepnet_jax.data import export_ct, phantom
  if modality not in ("ct", "cxr"):
    raise ValueError(f"phantom inputs: expected 'phantom:ct' or 'phantom:cxr', got 'phantom:{modality}'")
  folder = pathlib.Path(out_dir) / modality
  if folder.is_dir() and any(folder.iterdir()):
    return folder
  folder.mkdir(parents=True, exist_ok=True)

  def first_of_each_label(arrays):
    return [int(np.flatnonzero(arrays["label"] == label)[0]) for label in (1, 0) if (arrays["label"] == label).any()]

  def name(site, arrays, i, suffix):
    label = "covid" if int(arrays["label"][i]) == 1 else "non-covid"
    return folder / f"{site}_{label}_{arrays['patient'][i].split('-')[-1]}{suffix}"

  def save(image, path, **kwargs):
    from PIL import Image
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(path, **kwargs)

  if modality == "ct":
    sars = phantom.generate_site("ct", "sars", seed=seed, num_patients=6)
    for i in first_of_each_label(sars):
      save(sars["image"][i], name("sars", sars, i, ".png"))
    ucsd = phantom.generate_site("ct", "ucsd", seed=seed, num_patients=4)
    i = first_of_each_label(ucsd)[0]
    save(ucsd["image"][i], name("ucsd", ucsd, i, ".jpg"), quality=92)
    study = phantom.generate_volumes("mosmed", seed=seed, num_patients=1, volume_size=256)[0]
    label = "covid" if study["label"] == 1 else "non-covid"
    stem = f"mosmed_{label}_{study['patient'].split('-')[-1]}"
    image = export_ct.volume_to_nifti(study["volume_hu"], study["spacing"], orientation="flipped")
    image.to_filename(str(folder / f"{stem}.nii.gz"))
    hu = np.asarray(study["volume_hu"][len(study["volume_hu"]) // 2], np.int32)
    write_dicom(folder / f"{stem}_slice.dcm", np.clip(hu + 1024, 0, 4095).astype(np.uint16), "CT",
                intercept=-1024.0, window=readers.LUNG_WINDOW, bits_stored=12)
  else:
    covidx = phantom.generate_site("cxr", "covidx", seed=seed, num_patients=8)
    for i in first_of_each_label(covidx):
      save(covidx["image"][i], name("covidx", covidx, i, ".png"))
    pediatric = phantom.generate_site("cxr", "pediatric", seed=seed, num_patients=4)
    i = first_of_each_label(pediatric)[0]
    save(pediatric["image"][i], name("pediatric", pediatric, i, ".jpg"), quality=92)
    ulm = phantom.generate_site("cxr", "ulm", seed=seed, num_patients=4)
    i = first_of_each_label(ulm)[0]
    gray = transforms.set_channels(ulm["image"][i], 1)[..., 0].astype(np.uint16)
    # 12-bit detector values, stored inverted (MONOCHROME1); the first window maps them back.
    write_dicom(name("ulm", ulm, i, ".dcm"), (255 - gray) * 16, "DX", photometric="MONOCHROME1",
                window=([2040.0, 1000.0], [4080.0, 2000.0]), bits_stored=12)
  return folder


# --- outputs -------------------------------------------------------------------------------------

def _image_record(predictor: inference.Predictor, prediction: inference.ImagePrediction,
                  files: dict) -> dict:
  probabilities = inference.probabilities_by_class(predictor.class_names, prediction.probabilities)
  return {"image": prediction.label or "image", "probabilities": probabilities,
          "predicted_class": predictor.class_names[int(np.argmax(prediction.probabilities))],
          "logits": [float(v) for v in np.ravel(prediction.logits)], **files}


def write_file_outputs(out_dir: str, names: OutputNames, stem: str, predictor: inference.Predictor,
                       result: inference.FileResult) -> dict:
  """Grad-CAM (and PrepNet) PNGs and the JSON record of one predicted file, under names claimed
  from `names` (`stem`, or `stem_<k>` when one of its files is taken); the record's `output` is
  its JSON file."""
  image_suffixes = ["_" + p.label.replace(" ", "") if p.label else "" for p in result.predictions]
  kinds = ["gradcam"] + (["prepnet"] if any(p.normalised is not None for p in result.predictions) else [])
  stem = names.claim(stem, [".json"] + [f"{s}_{k}.png" for s in image_suffixes for k in kinds])
  records = []
  for prediction, suffix in zip(result.predictions, image_suffixes):
    files = {"gradcam_png": f"{stem}{suffix}_gradcam.png"}
    save_png(os.path.join(out_dir, files["gradcam_png"]), prediction.overlay)
    if prediction.normalised is not None:
      files["prepnet_png"] = f"{stem}{suffix}_prepnet.png"
      save_png(os.path.join(out_dir, files["prepnet_png"]), side_by_side(prediction.original, prediction.normalised))
    records.append(_image_record(predictor, prediction, files))
  probabilities = result.probabilities
  record = {"file": result.path, "status": "ok", "format": result.format, "modality": result.modality,
            "probabilities": inference.probabilities_by_class(predictor.class_names, probabilities),
            "predicted_class": predictor.class_names[int(np.argmax(probabilities))],
            "aggregation": "mean over slices" if len(records) > 1 else "single image",
            "temperature": predictor.temperature, "calibrated": predictor.calibrated,
            "temperature_source": predictor.temperature_source, "images": records, "notes": result.notes,
            "warnings": result.warnings}
  with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
    json.dump(record, f, indent=2)
  return {**record, "output": f"{stem}.json"}


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 4) -> np.ndarray:
  """Two uint8 images resized to a common height, next to each other (RGB)."""
  height = max(left.shape[0], right.shape[0])
  panels = []
  for image in (left, right):
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    panels.append(transforms.set_channels(transforms.resize(image, (height, width)), 3))
  gap_panel = np.zeros((height, gap, 3), np.uint8)
  return np.concatenate([panels[0], gap_panel, panels[1]], axis=1)


def _csv_rows(record: dict, class_names: list[str]) -> list[dict]:
  if record["status"] != "ok":
    return [{"file": record["file"], "image": "", "status": "failed", "predicted_class": "",
             **{f"p_{c}": "" for c in class_names}, "message": record["reason"], "warnings": ""}]
  return [{"file": record["file"], "image": image["image"], "status": "ok",
           "predicted_class": image["predicted_class"],
           **{f"p_{c}": f"{image['probabilities'][c]:.6f}" for c in class_names}, "message": "",
           "warnings": " | ".join(record["warnings"])}
          for image in record["images"]]


def _predict_one(predictor: inference.Predictor, out_dir: str, names: OutputNames, source, name: str) -> dict:
  """The record of one input. Every failure is recorded, never raised: the job goes on."""
  path = source.path if isinstance(source, readers.DicomSeries) else source
  try:
    result = predictor.predict_file(source)
    record = write_file_outputs(out_dir, names, output_stem(name), predictor, result)
  except readers.InputError as e:
    print(f"[predict] FAILED {e}", flush=True)
    return {"file": path, "status": "failed", "reason": str(e)}
  except Exception as e:  # not a refusal of the reader: a library or this program failed on this
    # file. One file must not end the job, so it is recorded with its traceback, which is printed.
    trace = traceback.format_exc()
    print(f"[predict] FAILED {path}: unexpected {type(e).__name__}: {e}\n{trace}", flush=True)
    return {"file": path, "status": "failed", "traceback": trace,
            "reason": f"{path}: unexpected {type(e).__name__} while predicting this file: {e}"}
  text = ", ".join(f"{c}={p:.3f}" for c, p in record["probabilities"].items())
  flags = f"; {len(record['warnings'])} warning(s)" if record["warnings"] else ""
  print(f"[predict] {name}: {record['predicted_class']} ({text}){flags}", flush=True)
  return record


def _entries(inputs: list[Input], records: list[dict], not_read: list[dict]) -> list[dict]:
  """Every input and folder entry with its status: a series' record stands for each of its files."""
  entries = list(not_read)
  for (source, name), record in zip(inputs, records):
    series = isinstance(source, readers.DicomSeries)
    for path in source.files if series else (source,):
      entry = {"file": path, "input": name, "status": record["status"]}
      if series:
        entry["series"] = source.path
      if os.path.islink(path):
        entry["link_to"] = os.readlink(path)
      if record["status"] == "ok":
        entry.update(output=record["output"], warnings=record["warnings"])
      else:
        entry["reason"] = record["reason"]
      entries.append(entry)
  return sorted(entries, key=lambda e: e["file"])


def run(config, workdir: str) -> dict:
  """Predicts every input; returns the summary written to predictions/summary.json."""
  predictor = inference.Predictor.from_config(config)
  out_dir = os.path.join(workdir, "predictions")
  os.makedirs(out_dir, exist_ok=True)
  not_read: list[dict] = []
  inputs = expand_inputs(input_items(config), workdir, int(config.data.phantom_seed), not_read)
  calibrated = "calibrated" if predictor.calibrated else "uncalibrated"
  print(f"[predict] {len(inputs)} input(s); model {predictor.model_name}: {predictor.served.description} "
        f"({predictor.modality or 'unknown'} modality, {predictor.image_size}² input), {calibrated}, "
        f"T = {predictor.temperature:g} ({predictor.temperature_source})", flush=True)
  names = OutputNames()
  records = [_predict_one(predictor, out_dir, names, source, name) for source, name in inputs]
  class_names = predictor.class_names
  with open(os.path.join(out_dir, "predictions.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, ["file", "image", "status", "predicted_class",
                                *(f"p_{c}" for c in class_names), "message", "warnings"])
    writer.writeheader()
    for record in records:
      writer.writerows(_csv_rows(record, class_names))
  failed = [{"file": r["file"], "reason": r["reason"]} for r in records + not_read if r["status"] == "failed"]
  warned = [{"file": r["file"], "warnings": r["warnings"]} for r in records if r["status"] == "ok" and r["warnings"]]
  summary = {"n_inputs": len(records), "n_ok": sum(r["status"] == "ok" for r in records),
             "n_failed": len(failed), "n_skipped": sum(e["status"] == "skipped" for e in not_read),
             "n_warned": len(warned), "failed": failed, "warned": warned,
             "entries": _entries(inputs, records, not_read), **predictor.describe()}
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(f"[predict] done: {summary['n_ok']} ok ({summary['n_warned']} with warnings), {summary['n_failed']} "
        f"failed, {summary['n_skipped']} folder entries skipped; outputs in {out_dir}", flush=True)
  for failure in failed:
    print(f"  failed: {failure['reason']}", flush=True)
  return summary
