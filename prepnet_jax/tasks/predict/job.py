"""Task 'predict': calibrated class probabilities and Grad-CAM for image files and folders.

Each input file is read by content (PNG/JPEG, DICOM, NIfTI; see `prepnet_jax.eval.inference`),
checked against what the model was trained for (modality from its training data, size range)
and predicted on its own: a bad file gets a message naming it and the reason, and every other
file is still processed. Outputs in <workdir>/predictions:
  <name>.json            probabilities per class (file level: the image, or the mean over a
                         volume's slices) plus per image/slice logits, probabilities and notes,
                         and the temperature with where it came from (`temperature_source`)
  <name>_gradcam.png     Grad-CAM over the model input (one per image; `_slice<k>` for volumes)
  <name>_prepnet.png     original | PrepNet-normalised image, for a PrepNet run or an AE in front
  predictions.csv        one row per image (and per failed file)
  summary.json           n ok / n failed, the reasons, the model (which one of its workdir) and
                         the temperature used (fitted T from the model's reports/calibration.json)
"""

from __future__ import annotations

import csv
import json
import os
import pathlib
import re

import numpy as np

from prepnet_jax.data import image_folder, nifti, transforms
from prepnet_jax.eval import inference
from prepnet_jax.runtime.writers import save_png

# Folder members that are tried (by content); explicitly named files are always tried.
INPUT_EXTENSIONS = tuple(image_folder.IMAGE_EXTENSIONS) + (".dcm", ".dicom", ".nii", ".nii.gz")
PHANTOM_PREFIX = "phantom:"


# --- inputs --------------------------------------------------------------------------------------

def _is_candidate(path: pathlib.Path) -> bool:
  """Image, DICOM and NIfTI extensions, and extensionless files (DICOM often has none)."""
  name = path.name.lower()
  return not name.startswith(".") and (name.endswith(INPUT_EXTENSIONS) or "." not in name)


def expand_inputs(spec: str, workdir: str, phantom_seed: int) -> list[tuple[str, str]]:
  """(path, display name) per file of a comma-separated list of files, folders and phantom:<m>."""
  files = []
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    if item.startswith(PHANTOM_PREFIX):
      folder = export_phantom_inputs(os.path.join(workdir, "phantom_inputs"), item[len(PHANTOM_PREFIX):],
                                     seed=phantom_seed)
      files += [(str(p), p.name) for p in sorted(folder.iterdir())]
    elif os.path.isdir(item):
      root = pathlib.Path(item)
      members = sorted(p for p in root.rglob("*") if p.is_file() and _is_candidate(p))
      if not members:
        files.append((item, item))  # predict_file reports it: a folder without input files
      files += [(str(p), p.relative_to(root).as_posix()) for p in members]
    else:
      files.append((item, os.path.basename(item) or item))
  if not files:
    raise ValueError("config.inputs is empty; expected comma-separated files/folders "
                     "(PNG/JPEG, DICOM, NIfTI) or 'phantom:ct' / 'phantom:cxr'")
  return files


def output_stems(names: list[str]) -> list[str]:
  """File-system-safe, unique output names for input display names."""
  stems, used = [], set()
  for name in names:
    stem = re.sub(r"\.(nii\.gz|[A-Za-z0-9]{1,5})$", "", name)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "input"
    unique, k = stem, 1
    while unique in used:
      k += 1
      unique = f"{stem}_{k}"
    used.add(unique)
    stems.append(unique)
  return stems


# --- phantom example files -----------------------------------------------------------------------

def write_dicom(path: str | os.PathLike, stored: np.ndarray, modality: str, *, slope: float = 1.0,
                intercept: float = 0.0, window: tuple | None = None,
                photometric: str = "MONOCHROME2", bits_stored: int = 16) -> None:
  """A minimal uncompressed single-frame grayscale DICOM file of `stored` (uint16/int16 values).

  `window` = (centers, widths): two numbers or two equal-length lists (multi-valued window).
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
                intercept=-1024.0,
                window=(nifti.LUNG_WINDOW[0], nifti.LUNG_WINDOW[1]), bits_stored=12)
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


def write_file_outputs(out_dir: str, stem: str, predictor: inference.Predictor,
                       result: inference.FileResult) -> dict:
  """Grad-CAM (and PrepNet) PNGs and the JSON record of one predicted file."""
  records = []
  for prediction in result.predictions:
    suffix = "_" + prediction.label.replace(" ", "") if prediction.label else ""
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
            "temperature_source": predictor.temperature_source, "images": records, "notes": result.notes}
  with open(os.path.join(out_dir, f"{stem}.json"), "w") as f:
    json.dump(record, f, indent=2)
  return record


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
             **{f"p_{c}": "" for c in class_names}, "message": record["reason"]}]
  return [{"file": record["file"], "image": image["image"], "status": "ok",
           "predicted_class": image["predicted_class"],
           **{f"p_{c}": f"{image['probabilities'][c]:.6f}" for c in class_names}, "message": ""}
          for image in record["images"]]


def run(config, workdir: str) -> dict:
  """Predicts every input; returns the summary written to predictions/summary.json."""
  predictor = inference.Predictor.from_config(config)
  out_dir = os.path.join(workdir, "predictions")
  os.makedirs(out_dir, exist_ok=True)
  inputs = expand_inputs(config.inputs, workdir, int(config.data.phantom_seed))
  calibrated = "calibrated" if predictor.calibrated else "uncalibrated"
  print(f"[predict] {len(inputs)} input file(s); model {predictor.model_name}: {predictor.served.description} "
        f"({predictor.modality or 'unknown'} modality, {predictor.image_size}² input), {calibrated}, "
        f"T = {predictor.temperature:g} ({predictor.temperature_source})", flush=True)
  records = []
  for (path, name), stem in zip(inputs, output_stems([n for _, n in inputs])):
    try:
      result = predictor.predict_file(path)
    except inference.InputError as e:
      records.append({"file": path, "status": "failed", "reason": str(e)})
      print(f"[predict] FAILED {e}", flush=True)
      continue
    record = write_file_outputs(out_dir, stem, predictor, result)
    records.append(record)
    text = ", ".join(f"{c}={p:.3f}" for c, p in record["probabilities"].items())
    print(f"[predict] {name}: {record['predicted_class']} ({text})", flush=True)
  class_names = predictor.class_names
  with open(os.path.join(out_dir, "predictions.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, ["file", "image", "status", "predicted_class",
                                *(f"p_{c}" for c in class_names), "message"])
    writer.writeheader()
    for record in records:
      writer.writerows(_csv_rows(record, class_names))
  failed = [{"file": r["file"], "reason": r["reason"]} for r in records if r["status"] != "ok"]
  summary = {"n_ok": len(records) - len(failed), "n_failed": len(failed), "failed": failed,
             **predictor.describe()}
  with open(os.path.join(out_dir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
  print(f"[predict] done: {summary['n_ok']} ok, {summary['n_failed']} failed; outputs in {out_dir}", flush=True)
  for failure in failed:
    print(f"  failed: {failure['reason']}", flush=True)
  return summary
