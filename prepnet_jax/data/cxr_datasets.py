"""TFDS builders for the real chest X-ray datasets, read from the user's own download.

Nothing is downloaded: each builder reads `manual_dir` in the layout its
MANUAL_DOWNLOAD_INSTRUCTIONS describe and writes array_record files, so
`tfds.data_source('covidx/v7b', ...)` gives random access for grain. Images are stored as
decoded uint8 H x W x C (C=1 for grayscale files, 3 otherwise, 16-bit files by their bit depth;
the image rules of predict, `readers.images` through `image_folder.decode_image`) at their
original size, because the real files mix modes and sizes and every model family resizes
differently.

Splits are 'train', 'val' and 'test'. Where a dataset has no patient-level validation split,
'val' is carved out of the official train files by patient (`splits.assign_split`), asserted
disjoint from 'train'; patients shared between official splits are logged, not hidden.
A corrupt image is skipped and counted (logged when its split is written) or is an error:
builder argument `on_corrupt='skip'|'error'`, e.g. `tfds.builder('deepcovid', on_corrupt='error')`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from typing import Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from prepnet_jax.data import covidx_labels, splits
from prepnet_jax.data.image_folder import CorruptImageError, decode_image, list_images

ON_CORRUPT = ("skip", "error")
_LISTED_OVERLAP = 10


@dataclasses.dataclass(frozen=True)
class ImageItem:
  """One image file to write, with everything known about it before decoding."""
  path: pathlib.Path
  label: int
  patient: str
  filename: str
  source: str = ""


def kermany_patient(filename: str) -> str:
  """Kermany patient id: `person1_bacteria_1.jpeg` -> `person1`, `IM-0115-0001.jpeg` -> `IM-0115`."""
  stem = os.path.splitext(os.path.basename(filename))[0]
  match = re.match(r"(person\d+)_", stem)
  if match:
    return match.group(1)
  match = re.match(r"(.+)-\d+$", stem)
  return match.group(1) if match else stem


def deepcovid_patient(filename: str) -> str:
  """`patient00042_study1_view1_frontal.jpg` -> `patient00042`; otherwise the file stem.

  DeepCovid ships no patient ids; its CheXpert file names keep one, its COVID (Cohen) file
  names do not, so each of those counts as its own patient.
  """
  stem = os.path.splitext(os.path.basename(filename))[0]
  match = re.match(r"(patient\d+)", stem)
  return match.group(1) if match else stem


def carve_val_by_patient(items: Sequence[ImageItem], val_fraction: float,
                         seed: int) -> tuple[list[ImageItem], list[ImageItem]]:
  """(train, val) items with whole patients moved to val (deterministic hash of the id)."""
  if not 0.0 < val_fraction < 1.0:
    raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
  fractions = (1.0 - val_fraction, val_fraction, 0.0)
  side = {p: splits.assign_split(p, fractions, seed) for p in {item.patient for item in items}}
  train = [item for item in items if side[item.patient] == "train"]
  val = [item for item in items if side[item.patient] == "val"]
  if not train or not val:
    raise ValueError(f"val_fraction={val_fraction} (seed {seed}) of {len(side)} train patients leaves "
                     f"{'val' if not val else 'train'} empty; change val_fraction or split_seed")
  splits.assert_disjoint({"train": [i.patient for i in train], "val": [i.patient for i in val]})
  return train, val


def log_shared_patients(dataset: str, items_by_split: dict[str, Sequence[ImageItem]]
                        ) -> dict[tuple[str, str], list[str]]:
  """Logs (and returns) patients that appear in two official splits of a dataset."""
  names = list(items_by_split)
  patients = {name: {item.patient for item in items} for name, items in items_by_split.items()}
  shared = {}
  for i, a in enumerate(names):
    for b in names[i + 1:]:
      common = sorted(patients[a] & patients[b])
      if common:
        shared[(a, b)] = common
        logging.warning("%s: %d patient(s) are in both official %r and %r files, e.g. %s",
                        dataset, len(common), a, b, common[:_LISTED_OVERLAP])
  return shared


def _image_feature() -> tfds.features.Tensor:
  return tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8,
                              encoding=tfds.features.Encoding.ZLIB)


def _require_dir(path: pathlib.Path, dataset: str, what: str) -> pathlib.Path:
  if not path.is_dir():
    raise FileNotFoundError(f"{dataset}: expected {what} at {path}, which is not a folder")
  return path


def _first_existing_dir(candidates: Iterable[pathlib.Path], marker: str) -> pathlib.Path | None:
  for root in candidates:
    if (root / marker).is_dir():
      return root
  return None


class _ManualCxrBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared behaviour: array_record output, decoding, corrupt-image policy.

  After a build, `skipped_corrupt[split]` lists the corrupt files that were skipped.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}

  def __init__(self, *, on_corrupt: str = "skip", **kwargs):
    if on_corrupt not in ON_CORRUPT:
      raise ValueError(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
    self.on_corrupt = on_corrupt
    self.skipped_corrupt: dict[str, list[str]] = {}
    kwargs.setdefault("file_format", "array_record")
    super().__init__(**kwargs)

  def _manual_root(self, dl_manager) -> pathlib.Path:
    return _require_dir(pathlib.Path(os.fspath(dl_manager.manual_dir)), self.name,
                        f"the manual download (see MANUAL_DOWNLOAD_INSTRUCTIONS:\n"
                        f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS})")

  def _generate_examples(self, items: Sequence[ImageItem], split: str):
    with_source = "source" in self.info.features
    skipped = []
    for index, item in enumerate(items):
      try:
        image = decode_image(item.path)
      except CorruptImageError as e:
        if self.on_corrupt == "error":
          raise CorruptImageError(f"{self.name} {split}: {e} (build with on_corrupt='skip' to "
                                  f"skip and count corrupt images)") from e
        skipped.append(str(item.path))
        continue
      example = {"image": image, "label": item.label, "patient": item.patient,
                 "filename": item.filename}
      if with_source:
        example["source"] = item.source
      yield f"{index:07d}", example
    self.skipped_corrupt[split] = skipped
    if skipped:
      logging.warning("%s %s: skipped %d corrupt image(s) of %d: %s", self.name, split,
                      len(skipped), len(items), skipped)

  def _splits(self, items_by_split: dict[str, list[ImageItem]]) -> dict:
    for split, items in items_by_split.items():
      if not items:
        raise ValueError(f"{self.name}: split {split!r} has no images; check the manual download "
                         f"layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return {split: self._generate_examples(items, split) for split, items in items_by_split.items()}


@dataclasses.dataclass
class CovidxConfig(tfds.core.BuilderConfig):
  """COVIDx label version ('2', '7b', '8b') and how 'val' is carved from the train file."""
  label_version: str = "7b"
  val_fraction: float = 0.1
  split_seed: int = 0


class Covidx(_ManualCxrBuilder):
  """COVIDx (COVID-Net): V2 three-class, V7B and V8B binary."""

  BUILDER_CONFIGS = [
      CovidxConfig(name="v2", label_version="2",
                   description="COVIDx2: normal / pneumonia / COVID-19 (KTH COVID-Net reproduction)."),
      CovidxConfig(name="v7b", label_version="7b",
                   description="COVIDx V7B: negative / positive (xray_gan thesis)."),
      CovidxConfig(name="v8b", label_version="8b",
                   description="COVIDx V8B: negative / positive (Ulm synthetic augmentation)."),
  ]
  DEFAULT_CONFIG_NAME = "v7b"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Build COVIDx with the COVID-Net scripts (github.com/lindawangg/COVID-Net) and place in manual_dir:
  <manual_dir>/train/<image files>      <manual_dir>/test/<image files>
  and the label files of the version(s) you build, in <manual_dir>/ or <manual_dir>/labels/:
    v2:  train_COVIDx2.txt  test_COVIDx2.txt    (lines: patientid filename label)
    v7b: train_COVIDx7B.txt test_COVIDx7B.txt   (lines: patientid filename label source)
    v8b: train_COVIDx8B.txt test_COVIDx8B.txt
Patient ids and filenames may contain spaces (e.g. 'COVID 72 COVID(72).png positive sirm').
"""

  def _info(self) -> tfds.core.DatasetInfo:
    version = self.builder_config.label_version
    features = {
        "image": _image_feature(),
        "label": tfds.features.ClassLabel(names=covidx_labels.LABEL_NAMES[version]),
        "patient": tfds.features.Text(),
        "filename": tfds.features.Text(),
    }
    if covidx_labels.SOURCES[version]:
      features["source"] = tfds.features.Text()
    return tfds.core.DatasetInfo(
        builder=self, description=self.builder_config.description,
        features=tfds.features.FeaturesDict(features), supervised_keys=("image", "label"),
        homepage="https://github.com/lindawangg/COVID-Net")

  def _label_file(self, root: pathlib.Path, split: str) -> pathlib.Path:
    name = covidx_labels.label_file_name(split, self.builder_config.label_version)
    tried = [root / name, root / "labels" / name]
    for path in tried:
      if path.is_file():
        return path
    raise FileNotFoundError(f"{self.name}/{self.builder_config.name}: label file {name} not found; "
                            f"looked at {[str(p) for p in tried]}")

  def _items(self, root: pathlib.Path, split: str) -> list[ImageItem]:
    folder = _require_dir(root / split, self.name, f"the {split} image folder")
    records = covidx_labels.parse_label_file(self._label_file(root, split),
                                             self.builder_config.label_version, image_folder=folder)
    return [ImageItem(folder / r.filename, r.label, r.patient, r.filename, r.source) for r in records]

  def _split_generators(self, dl_manager):
    root = self._manual_root(dl_manager)
    official_train, test = self._items(root, "train"), self._items(root, "test")
    log_shared_patients(f"covidx/{self.builder_config.name}", {"train": official_train, "test": test})
    train, val = carve_val_by_patient(official_train, self.builder_config.val_fraction,
                                      self.builder_config.split_seed)
    return self._splits({"train": train, "val": val, "test": test})


@dataclasses.dataclass
class DeepcovidConfig(tfds.core.BuilderConfig):
  """How 'val' is carved (by patient) from DeepCovid's train folders."""
  val_fraction: float = 0.2
  split_seed: int = 0


class Deepcovid(_ManualCxrBuilder):
  """DeepCovid COVID-XRay-5K (Minaee et al. 2020): covid (Cohen) vs non-covid (CheXpert)."""

  BUILDER_CONFIGS = [DeepcovidConfig(name="default", description="val = 20% of train patients.")]
  CLASS_FOLDERS = ("non", "covid")
  SOURCES = ("chexpert", "cohen")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unzip data_upload_v2.zip (github.com/shervinmin/DeepCovid) into manual_dir, giving
  <manual_dir>/train/covid/*  <manual_dir>/train/non/*
  <manual_dir>/test/covid/*   <manual_dir>/test/non/*
(a top-level data_upload_v2/ folder inside manual_dir is accepted too).
"""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.builder_config.description,
        features=tfds.features.FeaturesDict({
            "image": _image_feature(),
            "label": tfds.features.ClassLabel(names=("non_covid", "covid")),
            "patient": tfds.features.Text(),
            "filename": tfds.features.Text(),
            "source": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"), homepage="https://github.com/shervinmin/DeepCovid")

  def _items(self, root: pathlib.Path, split: str) -> list[ImageItem]:
    items = []
    for label, (folder_name, source) in enumerate(zip(self.CLASS_FOLDERS, self.SOURCES)):
      folder = _require_dir(root / split / folder_name, self.name, f"class folder '{folder_name}'")
      items += [ImageItem(path, label, deepcovid_patient(path.name),
                          path.relative_to(root).as_posix(), source)
                for path in list_images(folder)]
    return items

  def _split_generators(self, dl_manager):
    manual = self._manual_root(dl_manager)
    root = _first_existing_dir([manual, manual / "data_upload_v2"], "train")
    if root is None:
      raise FileNotFoundError(f"{self.name}: no train/ folder in {manual} or "
                              f"{manual / 'data_upload_v2'}; expected:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    official_train, test = self._items(root, "train"), self._items(root, "test")
    log_shared_patients(self.name, {"train": official_train, "test": test})
    train, val = carve_val_by_patient(official_train, self.builder_config.val_fraction,
                                      self.builder_config.split_seed)
    return self._splits({"train": train, "val": val, "test": test})


@dataclasses.dataclass
class PediatricCxrConfig(tfds.core.BuilderConfig):
  """val_fraction=None keeps the official val folder; a number pools train+val and re-carves."""
  val_fraction: float | None = None
  split_seed: int = 0


class PediatricCxr(_ManualCxrBuilder):
  """Kermany et al. 2018 pediatric chest X-rays: normal vs pneumonia."""

  BUILDER_CONFIGS = [
      PediatricCxrConfig(name="official", description="The download's train/val/test folders."),
      PediatricCxrConfig(name="patient_val", val_fraction=0.1,
                         description="train+val pooled, 10% of patients carved out as val "
                                     "(the official val folder holds only 16 images)."),
  ]
  CLASS_FOLDERS = ("NORMAL", "PNEUMONIA")
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Unzip the Kermany pediatric chest X-ray download (Mendeley rscbjbr9sj, or the Kaggle
'chest-xray-pneumonia' copy) into manual_dir, giving
  <manual_dir>/chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg
(without the chest_xray/ level is accepted too; val/ is needed only by the 'official' config).
"""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self, description=self.builder_config.description,
        features=tfds.features.FeaturesDict({
            "image": _image_feature(),
            "label": tfds.features.ClassLabel(names=("normal", "pneumonia")),
            "patient": tfds.features.Text(),
            "filename": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        homepage="https://data.mendeley.com/datasets/rscbjbr9sj")

  def _items(self, root: pathlib.Path, split: str) -> list[ImageItem]:
    items = []
    for label, folder_name in enumerate(self.CLASS_FOLDERS):
      folder = _require_dir(root / split / folder_name, self.name, f"class folder '{folder_name}'")
      items += [ImageItem(path, label, kermany_patient(path.name), path.relative_to(root).as_posix())
                for path in list_images(folder)]
    return items

  def _split_generators(self, dl_manager):
    manual = self._manual_root(dl_manager)
    root = _first_existing_dir([manual / "chest_xray", manual], "train")
    if root is None:
      raise FileNotFoundError(f"{self.name}: no train/ folder in {manual / 'chest_xray'} or {manual}; "
                              f"expected:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    config = self.builder_config
    test = self._items(root, "test")
    if config.val_fraction is None:
      _require_dir(root / "val", self.name, "the val folder (or use the 'patient_val' config)")
      official = {"train": self._items(root, "train"), "val": self._items(root, "val"), "test": test}
      log_shared_patients(f"{self.name}/{config.name}", official)
      return self._splits(official)
    pooled = self._items(root, "train")
    if (root / "val").is_dir():
      pooled += self._items(root, "val")
    log_shared_patients(f"{self.name}/{config.name}", {"train+val": pooled, "test": test})
    train, val = carve_val_by_patient(pooled, config.val_fraction, config.split_seed)
    return self._splits({"train": train, "val": val, "test": test})
