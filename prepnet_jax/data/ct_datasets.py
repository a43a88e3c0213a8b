"""TFDS builders for the thesis's real CT datasets, read from a manual download (offline).

  sars_cov2_ct   Kaggle SARS-COV-2 CT-scan (Soares et al., Brazil): COVID/ and non-COVID/ PNGs
  ucsd_covid_ct  UCSD COVID-CT (github UCSD-AI4H/COVID-CT): Images-processed/ + Data-split/
  mosmed         MosMedData (mosmed.ai): studies/CT-0..CT-4/*.nii.gz, 3 axial slices per study

Prepare with `file_format='array_record'` so `tfds.data_source` / `builder.as_data_source`
give grain random access. Examples: image uint8 (H, W, C) as decoded (C = 1 or 3), label
(1 = COVID), patient, filename (+ severity and slice_index for MosMed). Splits train/val/test
are patient-level (`splits.assign_split`) and asserted disjoint, except UCSD's official split,
which is kept as published and whose patient leaks are logged.
"""

from __future__ import annotations

import abc
import collections
import csv
import dataclasses
import pathlib
import re
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from prepnet_jax.data import readers, splits
from prepnet_jax.data.image_folder import CorruptImageError, decode_image, list_images, patient_from_regex
from prepnet_jax.data.readers import nifti

LABEL_NAMES = ("non_covid", "covid")
SEVERITY_NAMES = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")


class ManualDownloadError(FileNotFoundError):
  """The manual download is missing or does not have the expected layout."""


@dataclasses.dataclass(frozen=True)
class Record:
  """One file of the download with its label, patient and split."""
  path: pathlib.Path
  filename: str
  label: int
  patient: str
  split: str
  severity: int = -1


@dataclasses.dataclass(eq=False)
class CtConfig(tfds.core.BuilderConfig):
  """Options shared by the CT builders. A changed option needs a new config `name`."""
  split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
  split_seed: int = 0
  on_corrupt: str = "skip"


@dataclasses.dataclass(eq=False)
class SarsCov2CtConfig(CtConfig):
  """patient_regex: searched in the path below the class folder (group 'patient' or 1); None =
  the per-patient sub-folder when images are nested, else the file stem (the Kaggle release has
  no patient ids, so that split is effectively slice-level)."""
  patient_regex: str | None = None


@dataclasses.dataclass(eq=False)
class UcsdCovidCtConfig(CtConfig):
  """split_mode 'official' (Data-split/*.txt, leaks patients) or 'patient' (re-split by patient).

  Patient ids come from `patient_csv` (columns filename,patient; e.g. COVID-CT-MetaInfo.xlsx saved
  as CSV) when that file exists in manual_dir, else `patient_regex` on the file name (default:
  the text before the first '-' or '%', the source-paper id for COVID files, which groups
  conservatively), else the file stem.
  """
  split_mode: str = "official"
  patient_csv: str = "patients.csv"
  patient_regex: str | None = r"^(?P<patient>[^-%]+)"


@dataclasses.dataclass(eq=False)
class MosmedConfig(CtConfig):
  """Slices per study (`nifti.mosmed_slices`) and which CT-k severities count as COVID."""
  positions: tuple = readers.THESIS_POSITIONS
  window: tuple[float, float] = readers.LUNG_WINDOW
  rotate_k: int = 1
  flip_ud: bool = False
  crop: tuple[int, int] = (25, 45)
  positive_severities: tuple[int, ...] = (1, 2, 3, 4)


def _folder_key(name: str) -> str:
  return re.sub(r"[^a-z]", "", name.lower())


def find_patient_leaks(patients_by_split: dict[str, list[str]]) -> dict[str, tuple[str, ...]]:
  """Patients that appear in more than one split -> the splits they appear in."""
  where = collections.defaultdict(set)
  for split, patients in patients_by_split.items():
    for patient in patients:
      where[patient].add(split)
  return {p: tuple(s for s in splits.SPLITS if s in found) for p, found in where.items() if len(found) > 1}


def _patients_by_split(records: list[Record]) -> dict[str, list[str]]:
  return {s: [r.patient for r in records if r.split == s] for s in splits.SPLITS}


def _check_config(config: CtConfig) -> None:
  if config.on_corrupt not in ("skip", "error"):
    raise ValueError(f"config {config.name}: on_corrupt must be 'skip' or 'error', got {config.on_corrupt!r}")
  splits.assign_split("probe", config.split_fractions, config.split_seed)  # validates the fractions


class _CtBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared plumbing: features, split generation from `Record`s, corrupt-file handling."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  HOMEPAGE = ""

  def _extra_features(self) -> dict:
    return {}

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        "image": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8, encoding="zlib"),
        "label": tfds.features.ClassLabel(names=LABEL_NAMES),
        "patient": tfds.features.Text(),
        "filename": tfds.features.Text(),
        **self._extra_features(),
    }
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features),
                                          homepage=self.HOMEPAGE, description=self.__class__.__doc__)

  @abc.abstractmethod
  def _records(self, manual_dir: pathlib.Path) -> list[Record]:
    """Every file of the download with label, patient and split (splits checked here)."""

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    _check_config(self.builder_config)
    records = self._records(pathlib.Path(dl_manager.manual_dir))
    counts = collections.Counter(r.split for r in records)
    if empty := [s for s in splits.SPLITS if not counts[s]]:
      raise ValueError(f"{self.name}/{self.builder_config.name}: split(s) {empty} would be empty "
                       f"({len(records)} files, {len({r.patient for r in records})} patients, "
                       f"split_fractions={self.builder_config.split_fractions}); "
                       f"TFDS cannot write empty splits")
    logging.info("%s/%s: %s examples per split, %d patients", self.name, self.builder_config.name,
                 dict(counts), len({r.patient for r in records}))
    return {s: self._generate_examples([r for r in records if r.split == s]) for s in splits.SPLITS}

  def _skip_or_raise(self, what: str, error: Exception) -> None:
    if self.builder_config.on_corrupt == "error":
      raise CorruptImageError(f"{self.name}: corrupt or unreadable {what}: {error}") from error
    logging.warning("%s: skipping corrupt or unreadable %s: %s", self.name, what, error)

  def _generate_examples(self, records: list[Record]) -> Iterator[tuple[str, dict]]:
    for record in records:
      try:
        image = decode_image(record.path)
      except CorruptImageError as e:
        self._skip_or_raise(record.filename, e)
        continue
      yield record.filename, {"image": image, "label": record.label, "patient": record.patient,
                              "filename": record.filename}


def _class_folder(root: pathlib.Path, key: str, expected: str, dataset: str) -> pathlib.Path:
  """The one sub-folder whose letters, lower-cased, equal `key` ('noncovid' ~ non-COVID, NonCOVID)."""
  matches = [p for p in sorted(root.iterdir()) if p.is_dir() and _folder_key(p.name) == key]
  if len(matches) != 1 or not list_images(matches[0]):
    found = sorted(p.name for p in root.iterdir())
    raise ManualDownloadError(f"expected {root}/{expected} with PNG/JPEG files ({dataset}); found {found}")
  return matches[0]


class SarsCov2Ct(_CtBuilder):
  """SARS-COV-2 CT-scan dataset (Soares et al. 2020, Brazil): 2D CT slices, COVID vs non-COVID."""

  HOMEPAGE = "https://www.kaggle.com/datasets/plameneduardo/sarscov2-ctscan-dataset"
  DATASET_HINT = "SARS-COV-2 CT-scan, Kaggle plameneduardo/sarscov2-ctscan-dataset"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the Kaggle "SARS-COV-2 Ct-Scan Dataset" (plameneduardo/sarscov2-ctscan-dataset),
  extract it and place the two class folders in `manual_dir`:
    <manual_dir>/COVID/*.png       (label 1)
    <manual_dir>/non-COVID/*.png   (label 0; 'NonCOVID' / 'non_covid' also accepted)
  Images may sit in per-patient sub-folders (<class>/<patient>/*.png): the folder is the patient.
  """
  BUILDER_CONFIGS = [
      SarsCov2CtConfig(name="default", description="patient = sub-folder if nested, else file stem"),
      SarsCov2CtConfig(name="patient_prefix", patient_regex=r"^(?P<patient>.+?)__",
                       description="patient = file-name prefix before '__' (the phantom export)"),
  ]

  def _records(self, manual_dir: pathlib.Path) -> list[Record]:
    config = self.builder_config
    regex = re.compile(config.patient_regex) if config.patient_regex else None
    records = []
    for label, key, expected in ((1, "covid", "COVID"), (0, "noncovid", "non-COVID")):
      folder = _class_folder(manual_dir, key, expected, self.DATASET_HINT)
      for path in list_images(folder):
        inner = path.relative_to(folder)
        if regex is not None:
          patient = patient_from_regex(regex, inner.as_posix())
        else:
          patient = inner.parts[0] if len(inner.parts) > 1 else path.stem
        records.append(Record(path, path.relative_to(manual_dir).as_posix(), label, patient,
                              splits.assign_split(patient, config.split_fractions, config.split_seed)))
    splits.assert_disjoint(_patients_by_split(records))
    return records


class UcsdCovidCt(_CtBuilder):
  """UCSD COVID-CT (Zhao et al. 2020, China): CT images from preprints, COVID vs non-COVID."""

  HOMEPAGE = "https://github.com/UCSD-AI4H/COVID-CT"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Clone or download github.com/UCSD-AI4H/COVID-CT, unzip Images-processed/CT_COVID.zip and
  Images-processed/CT_NonCOVID.zip, and point `manual_dir` at the repository root:
    <manual_dir>/Images-processed/CT_COVID/*.png|jpg
    <manual_dir>/Images-processed/CT_NonCOVID/*.png|jpg
    <manual_dir>/Data-split/COVID/{trainCT_COVID,valCT_COVID,testCT_COVID}.txt
    <manual_dir>/Data-split/NonCOVID/{trainCT_NonCOVID,valCT_NonCOVID,testCT_NonCOVID}.txt
  Optional: <manual_dir>/patients.csv with columns filename,patient (e.g. from
  COVID-CT-MetaInfo.xlsx) for true patient ids.
  """
  BUILDER_CONFIGS = [
      UcsdCovidCtConfig(name="official", description="the published image-level split (leaks patients)"),
      UcsdCovidCtConfig(name="patient", split_mode="patient", description="re-split by patient id"),
  ]

  def _split_lists(self, manual_dir: pathlib.Path, class_dir: str) -> dict[str, str]:
    """File name -> official split, from Data-split/<class>/<split>CT_<class>.txt."""
    assigned = {}
    for split in splits.SPLITS:
      path = manual_dir / "Data-split" / class_dir / f"{split}CT_{class_dir}.txt"
      if not path.is_file():
        raise ManualDownloadError(f"expected official split file {path} (one image file name per line; "
                                  f"UCSD COVID-CT, github UCSD-AI4H/COVID-CT)")
      for name in path.read_text().split("\n"):
        if name.strip():
          assigned[name.strip()] = split
    return assigned

  def _patient_table(self, manual_dir: pathlib.Path) -> dict[str, str]:
    path = manual_dir / self.builder_config.patient_csv
    if not path.is_file():
      return {}
    with open(path, newline="") as f:
      rows = list(csv.DictReader(f))
    if rows and not {"filename", "patient"} <= set(rows[0]):
      raise ManualDownloadError(f"{path}: expected columns 'filename,patient', got {sorted(rows[0])}")
    return {row["filename"].strip(): row["patient"].strip() for row in rows}

  def _images(self, manual_dir: pathlib.Path, class_dir: str) -> dict[str, pathlib.Path]:
    folder = manual_dir / "Images-processed" / f"CT_{class_dir}"
    if not folder.is_dir() or not list_images(folder):
      archive = folder.with_suffix(".zip")
      hint = f" (unzip {archive})" if archive.is_file() else ""
      raise ManualDownloadError(f"expected {folder} with PNG/JPEG files{hint} "
                                f"(UCSD COVID-CT, github UCSD-AI4H/COVID-CT)")
    return {p.name: p for p in list_images(folder)}

  def _official_split(self, manual_dir: pathlib.Path, class_dir: str, images: dict) -> dict[str, str]:
    """File name -> split from the split lists; unlisted images are left out (logged)."""
    official = self._split_lists(manual_dir, class_dir)
    if missing := sorted(set(official) - set(images)):
      logging.warning("%s: %d files named in Data-split/%s are not in Images-processed/CT_%s, e.g. %s",
                      self.name, len(missing), class_dir, class_dir, missing[:3])
    if unlisted := sorted(set(images) - set(official)):
      logging.warning("%s: %d images of CT_%s are in no official split and are left out, e.g. %s",
                      self.name, len(unlisted), class_dir, unlisted[:3])
    return {name: split for name, split in official.items() if name in images}

  def _records(self, manual_dir: pathlib.Path) -> list[Record]:
    config = self.builder_config
    if config.split_mode not in ("official", "patient"):
      raise ValueError(f"config {config.name}: split_mode must be 'official' or 'patient', "
                       f"got {config.split_mode!r}")
    regex = re.compile(config.patient_regex) if config.patient_regex else None
    table = self._patient_table(manual_dir)
    records = []
    for label, class_dir in ((1, "COVID"), (0, "NonCOVID")):
      images = self._images(manual_dir, class_dir)
      official = None
      if config.split_mode == "official":
        official = self._official_split(manual_dir, class_dir, images)
      for name, path in sorted(images.items()):
        patient = table.get(name)
        if patient is None and regex is not None and regex.search(path.stem):
          patient = patient_from_regex(regex, path.stem)
        patient = f"{class_dir}/{patient or path.stem}"  # the two classes come from different sources.
        if official is None:
          split = splits.assign_split(patient, config.split_fractions, config.split_seed)
        elif name in official:
          split = official[name]
        else:
          continue
        records.append(Record(path, path.relative_to(manual_dir).as_posix(), label, patient, split))
    by_split = _patients_by_split(records)
    if config.split_mode == "patient":
      splits.assert_disjoint(by_split)
    elif leaks := find_patient_leaks(by_split):
      logging.warning("%s official split: %d patients appear in more than one split, e.g. %s; use config "
                      "'patient' for a patient-level split", self.name, len(leaks),
                      dict(list(leaks.items())[:3]))
    return records


class Mosmed(_CtBuilder):
  """MosMedData chest CT (Moscow 2020): 3 axial slices per study, label from the CT-k category."""

  HOMEPAGE = "https://mosmed.ai/en/"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download "MosMedData: Chest CT Scans with COVID-19 Related Findings" (mosmed.ai), extract it
  and point `manual_dir` at the folder that holds `studies/`:
    <manual_dir>/studies/CT-0/study_0001.nii.gz ... <manual_dir>/studies/CT-4/*.nii.gz
  (.nii also accepted; the CT-k folders directly in manual_dir are accepted too).
  """
  BUILDER_CONFIGS = [MosmedConfig(name="thesis", description="slices n//4, n//2, 3n//4; lung window; "
                                  "anterior up, patient's left on the image left; crop 25/45 px")]

  def _extra_features(self) -> dict:
    return {"severity": tfds.features.ClassLabel(names=SEVERITY_NAMES), "slice_index": np.int32}

  def _records(self, manual_dir: pathlib.Path) -> list[Record]:
    config = self.builder_config
    if not set(config.positive_severities) <= set(range(len(SEVERITY_NAMES))):
      raise ValueError(f"config {config.name}: positive_severities must be in 0..4, "
                       f"got {config.positive_severities}")
    studies = manual_dir / "studies" if (manual_dir / "studies").is_dir() else manual_dir
    records = []
    for severity, category in enumerate(SEVERITY_NAMES):
      for path in sorted((studies / category).glob("*.nii*")):
        if not path.name.endswith((".nii", ".nii.gz")):
          continue
        patient = path.name.removesuffix(".gz").removesuffix(".nii")
        split = splits.assign_split(patient, config.split_fractions, config.split_seed)
        label = int(severity in config.positive_severities)
        records.append(Record(path, path.relative_to(manual_dir).as_posix(), label, patient, split, severity))
    if not records:
      found = sorted(p.name for p in manual_dir.iterdir())
      raise ManualDownloadError(f"expected {manual_dir}/studies/CT-0 ... CT-4 with .nii/.nii.gz studies "
                                f"(MosMedData, mosmed.ai); found {found}")
    splits.assert_disjoint(_patients_by_split(records))
    return records

  def _generate_examples(self, records: list[Record]) -> Iterator[tuple[str, dict]]:
    config = self.builder_config
    for record in records:
      try:
        volume, _ = nifti.load_canonical(record.path)
      except ValueError as e:
        self._skip_or_raise(record.filename, e)
        continue
      indices = nifti.slice_indices(volume.shape[2], config.positions)
      slices = nifti.mosmed_slices(volume, config.positions, config.rotate_k, config.crop, config.window,
                                   config.flip_ud)
      for index, image in zip(indices, slices):
        yield f"{record.filename}#{index}", {
            "image": image[..., None], "label": record.label, "patient": record.patient,
            "filename": record.filename, "severity": record.severity, "slice_index": index}
