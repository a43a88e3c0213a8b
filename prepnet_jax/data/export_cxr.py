"""Writes the built-in phantom's chest X-rays in the on-disk layouts of the real datasets.

The real-dataset builders (`cxr_datasets`) and the COVIDx label parser are then tested on
files that look like the downloads: COVIDx image folders with V2/V7B/V8B label files whose
patient ids and filenames contain spaces (`COVID 7 COVID(7).png positive sirm`), DeepCovid
class folders, Kermany pediatric folders; mixed image modes (L, P, RGB, RGBA), sizes and
formats (PNG, JPEG). Every function returns what it wrote, as the builders should read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image

from prepnet_jax.data import covidx_labels

# Cycled per written image so that even a tiny export holds every mode and several sizes.
_PNG_MODES = ("L", "P", "L", "RGB", "RGBA", "L")
_JPEG_MODES = ("L", "L", "RGB")
_SCALES = ((1.0, 1.0), (1.25, 1.0), (1.0, 0.75), (1.5, 1.5), (0.75, 1.25))
_COVIDX_POSITIVE_STYLES = ("sirm", "ricord", "cohen", "actmed", "fig1")
_COVIDX_NEGATIVE_STYLES = ("rsna", "cohen", "rsna", "actmed")
PHANTOM_DEFAULTS = {"num_patients": 24, "image_size": 64}  # small: these files test loaders


@dataclasses.dataclass(frozen=True)
class ExportedImage:
  """One written file and the fields a builder should read for it."""
  split: str  # the official split folder it was written to
  relative_path: str  # below the export root
  patient: str  # as the dataset states it (label file) or a builder derives it (file name)
  filename: str
  label: int
  label_name: str
  source: str
  mode: str  # Pillow mode written
  height: int
  width: int


def _phantom_cxr(site: str, seed: int, overrides: dict) -> dict[str, np.ndarray]:
  from prepnet_jax.data import phantom
  return phantom.generate_site("cxr", site, seed=seed, **{**PHANTOM_DEFAULTS, **overrides})


def _images_by_patient(arrays: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
  """(phantom patient, indices of its images), patients in sorted order."""
  patients = np.asarray([str(p) for p in arrays["patient"]])
  return [(p, np.flatnonzero(patients == p)) for p in sorted(set(patients))]


def _allocate(patient_classes: Sequence[int], fractions: dict[str, float], seed: int) -> list[str]:
  """Split name per patient, stratified by class so that split folders hold every class.

  Within each class the first split keeps at least one patient and takes the rest; every
  other split with a positive fraction gets ceil(fraction * n) >= 1 patients while any remain.
  """
  patient_classes = np.asarray(patient_classes)
  first, *others = fractions
  assignment = [first] * len(patient_classes)
  rng = np.random.default_rng(seed)
  for cls in np.unique(patient_classes):
    members = rng.permutation(np.flatnonzero(patient_classes == cls))
    available = len(members) - 1
    start = 0
    for name in others:
      wanted = max(1, math.ceil(fractions[name] * len(members))) if fractions[name] > 0 else 0
      count = min(available, wanted)
      for index in members[start:start + count]:
        assignment[index] = name
      start += count
      available -= count
  return assignment


def _hex_id(*parts) -> str:
  return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()


def _to_pil(image: np.ndarray, mode: str, size: tuple[int, int]) -> Image.Image:
  """Phantom uint8 HxWxC -> a Pillow image of `mode`, resized to size=(height, width)."""
  gray = image[..., 0] if image.shape[-1] == 1 else np.asarray(Image.fromarray(image).convert("L"))
  base = Image.fromarray(gray, "L").resize((size[1], size[0]), Image.BILINEAR)
  if mode == "L":
    return base
  if mode == "P":  # an exact grayscale palette, as in the real palettised files
    palettised = Image.fromarray(np.asarray(base), "P")
    palettised.putpalette([v for i in range(256) for v in (i, i, i)])
    return palettised
  rgb = Image.merge("RGB", (base, base, base))
  if mode == "RGB":
    return rgb
  rgba = rgb.copy()
  rgba.putalpha(200)  # a non-trivial alpha, which a reader must drop, not blend
  return rgba


class _Writer:
  """Writes images with cycling modes and sizes; each write returns its ExportedImage."""

  def __init__(self, root: pathlib.Path):
    self.root = root
    self.count = 0

  def write(self, image: np.ndarray, folder: str, stem: str, extension: str, split: str,
            patient: str, label: int, label_name: str, source: str = "") -> ExportedImage:
    """PNG files cycle through L, P, RGB, RGBA; JPEG files through L and RGB (all JPEG stores)."""
    jpeg = extension.lower() in (".jpg", ".jpeg")
    modes = _JPEG_MODES if jpeg else _PNG_MODES
    mode = modes[self.count % len(modes)]
    scale = _SCALES[self.count % len(_SCALES)]
    self.count += 1
    size = (round(image.shape[0] * scale[0]), round(image.shape[1] * scale[1]))
    filename = stem + extension
    relative = f"{folder}/{filename}"
    path = self.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    _to_pil(image, mode, size).save(path, **({"quality": 95} if jpeg else {}))
    return ExportedImage(split, relative, patient, filename, label, label_name, source, mode,
                         size[0], size[1])


def _covidx_name(style: str, n: int, k: int, seed: int, variant: bool) -> tuple[str, str, str]:
  """(patient id, file stem, extension) in the style of one COVIDx source; `variant` adds
  spaces to sirm and cohen filenames (every other patient of those sources)."""
  if style == "rsna":
    h = _hex_id(seed, "rsna", n)
    uuid = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    return uuid, uuid if k == 0 else f"{uuid}-{k}", ".png"
  if style == "sirm":  # the id with a space that breaks naive parsers
    stem = f"COVID({n}) copy {k + 1}" if variant else (f"COVID({n})" if k == 0 else f"COVID({n}-{k})")
    return f"COVID {n}", stem, ".png"
  if style == "cohen":
    stem = f"covid 19 pneumonia {n} day {k}" if variant else f"covid-19-pneumonia-{n}-day{k}-PA"
    return str(n), stem, ".jpg"
  if style == "actmed":
    digits = int(_hex_id(seed, "actmed", n, k)[:12], 16)
    return f"ANON{n}", f"CR.1.2.840.113564.{digits}.1003000225002", ".png"
  if style == "fig1":
    return f"COVID-{n:05d}", f"COVID-{n:05d}" if k == 0 else f"COVID-{n:05d}-{k}", ".jpg"
  if style == "ricord":
    return f"419639-{n:06d}", f"MIDRC-RICORD-1C-419639-{n:06d}-{k}", ".png"
  raise ValueError(f"unknown COVIDx source style {style!r}")


def export_covidx(root: str | pathlib.Path, versions: Sequence[str] = covidx_labels.VERSIONS, *,
                  seed: int = 0, test_fraction: float = 0.25, labels_subfolder: bool = False,
                  site: str = "covidx", **phantom_overrides) -> dict[str, list[ExportedImage]]:
  """COVIDx layout: root/{train,test}/<files> + a train/test label file per version.

  All versions share the image folders (their label files list different subsets, as real
  COVIDx releases do): V7B leaves out the ricord patients, which came with V8B. V2 labels come
  from the phantom's 3-class `label3`, V7B/V8B from its binary `label`. Each patient's source
  (and so its id and file naming) cycles through the COVIDx sources of its class, so that even
  a small export holds every source and every kind of line with spaces; it is not the
  phantom's rendering style. Returns {version: records in label-file order}.
  """
  root = pathlib.Path(root)
  arrays = _phantom_cxr(site, seed, phantom_overrides)
  grouped = _images_by_patient(arrays)
  classes = [int(np.max(arrays["label3"][indices])) for _, indices in grouped]
  split_of = _allocate(classes, {"train": 1 - test_fraction, "test": test_fraction}, seed)
  writer = _Writer(root)
  lines = {(v, s): [] for v in versions for s in ("train", "test")}
  records = {v: [] for v in versions}
  patients_per_class = [0, 0]
  patients_per_style = dict.fromkeys(_COVIDX_POSITIVE_STYLES + _COVIDX_NEGATIVE_STYLES, 0)
  for n, ((_, indices), split) in enumerate(zip(grouped, split_of), start=1):
    positive = int(np.max(arrays["label"][indices]))
    styles = _COVIDX_POSITIVE_STYLES if positive else _COVIDX_NEGATIVE_STYLES
    style = styles[patients_per_class[positive] % len(styles)]
    patients_per_class[positive] += 1
    variant = patients_per_style[style] % 2 == 1
    patients_per_style[style] += 1
    for k, i in enumerate(indices):
      patient, stem, extension = _covidx_name(style, n, k, seed, variant)
      written = writer.write(arrays["image"][i], split, stem, extension, split, patient, 0, "")
      for version in versions:
        if version != "2" and style not in covidx_labels.SOURCES[version]:
          continue
        label = int(arrays["label3"][i] if version == "2" else arrays["label"][i])
        label_name = covidx_labels.LABEL_NAMES[version][label]
        source = "" if version == "2" else style
        line = f"{patient} {written.filename} {label_name}" + (f" {source}" if source else "")
        lines[(version, split)].append(line)
        records[version].append(dataclasses.replace(written, label=label, label_name=label_name,
                                                    source=source))
  label_dir = root / "labels" if labels_subfolder else root
  label_dir.mkdir(parents=True, exist_ok=True)
  for (version, split), version_lines in lines.items():
    path = label_dir / covidx_labels.label_file_name(split, version)
    path.write_text("\n".join(version_lines) + "\n", encoding="utf-8")
  return records


def export_deepcovid(root: str | pathlib.Path, *, seed: int = 0, test_fraction: float = 0.25,
                     site: str = "covidx", **phantom_overrides) -> list[ExportedImage]:
  """DeepCovid layout: root/{train,test}/{covid,non}/<files>; covid = phantom label 1.

  Non-COVID files are named like DeepCovid's CheXpert images
  (`patient00007_study1_view1_frontal.jpg`, patient id kept), COVID files like its Cohen
  images (no patient id: the stem is the patient).
  """
  root = pathlib.Path(root)
  arrays = _phantom_cxr(site, seed, phantom_overrides)
  grouped = _images_by_patient(arrays)
  classes = [int(np.max(arrays["label"][indices])) for _, indices in grouped]
  split_of = _allocate(classes, {"train": 1 - test_fraction, "test": test_fraction}, seed)
  writer = _Writer(root)
  for split in ("train", "test"):  # empty class folders still belong to the layout
    for folder in ("covid", "non"):
      (root / split / folder).mkdir(parents=True, exist_ok=True)
  records = []
  for n, ((_, indices), split) in enumerate(zip(grouped, split_of), start=1):
    for k, i in enumerate(indices):
      if int(arrays["label"][i]) == 1:
        stem = f"covid 19 pneumonia {n} {k}" if n % 3 == 0 else f"covid-19-pneumonia-{n}-{k}"
        record = writer.write(arrays["image"][i], f"{split}/covid", stem,
                              ".jpg" if n % 2 else ".png", split, "", 1, "covid", "cohen")
        record = dataclasses.replace(record, patient=pathlib.Path(record.filename).stem)
      else:
        patient = f"patient{n:05d}"
        record = writer.write(arrays["image"][i], f"{split}/non",
                              f"{patient}_study{k + 1}_view1_frontal", ".jpg", split, patient, 0,
                              "non_covid", "chexpert")
      records.append(record)
  return records


def export_pediatric(root: str | pathlib.Path, *, seed: int = 0,
                     fractions: tuple[float, float, float] = (0.6, 0.15, 0.25),
                     chest_xray_level: bool = True, site: str = "pediatric",
                     **phantom_overrides) -> list[ExportedImage]:
  """Kermany layout: root/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg.

  PNEUMONIA = phantom `label3` != 0 (a COVID image is a viral pneumonia). Names follow the
  download: `person12_bacteria_57.jpeg`, `IM-0013-0001.jpeg`, `NORMAL2-IM-0014-0001.jpeg`.
  """
  root = pathlib.Path(root)
  prefix = "chest_xray/" if chest_xray_level else ""
  arrays = _phantom_cxr(site, seed, phantom_overrides)
  grouped = _images_by_patient(arrays)
  classes = [int(np.max(arrays["label3"][indices]) > 0) for _, indices in grouped]
  split_of = _allocate(classes, dict(zip(("train", "val", "test"), fractions)), seed)
  writer = _Writer(root)
  for split in ("train", "val", "test"):  # empty class folders still belong to the layout
    for folder in ("NORMAL", "PNEUMONIA"):
      (root / f"{prefix}{split}" / folder).mkdir(parents=True, exist_ok=True)
  records = []
  for n, ((_, indices), split) in enumerate(zip(grouped, split_of), start=1):
    for k, i in enumerate(indices):
      if int(arrays["label3"][i]) != 0:
        kind = "virus" if int(arrays["label3"][i]) == 2 or n % 2 else "bacteria"
        patient, folder, label, name = f"person{n}", "PNEUMONIA", 1, "pneumonia"
        stem = f"{patient}_{kind}_{writer.count + 1}"
      else:
        patient = f"NORMAL2-IM-{n:04d}" if n % 3 == 2 else f"IM-{n:04d}"
        folder, label, name = "NORMAL", 0, "normal"
        stem = f"{patient}-{k + 1:04d}"
      records.append(writer.write(arrays["image"][i], f"{prefix}{split}/{folder}", stem, ".jpeg",
                                  split, patient, label, name))
  return records


def export_all(root: str | pathlib.Path, *, seed: int = 0, **phantom_overrides) -> dict[str, object]:
  """root/{covidx,deepcovid,pediatric_cxr}: one manual_dir per builder, as datasets.get_source
  expects; `phantom_overrides` (num_patients, image_size, class_probs, ...) go to every site."""
  root = pathlib.Path(root)
  return {"covidx": export_covidx(root / "covidx", seed=seed, **phantom_overrides),
          "deepcovid": export_deepcovid(root / "deepcovid", seed=seed, **phantom_overrides),
          "pediatric_cxr": export_pediatric(root / "pediatric_cxr", seed=seed, **phantom_overrides)}
