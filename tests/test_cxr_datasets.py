"""Real chest X-ray datasets: COVIDx label parsing, and TFDS builders on phantom exports."""

from __future__ import annotations

import logging
import pathlib
import re
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from prepnet_jax.data import covidx_labels, cxr_datasets, export_cxr
from prepnet_jax.data.covidx_labels import LabelFileError, LabelRecord
from prepnet_jax.data.image_folder import CorruptImageError

LINES_7B = [
    "ANON193 CR.1.2.840.113564.1722810170.20200418154808640220.1003000225002.png negative actmed",
    "COVID 72 COVID(72).png positive sirm",
    "",
    "COVID 105 COVID(105) copy 2.png positive sirm",
    "17 covid 19 pneumonia 3 day 1.jpg positive cohen",
    "46baab38-2341-4b1b-bd3c-fb16e4b1237f 46baab38-2341-4b1b-bd3c-fb16e4b1237f.png negative rsna",
    "COVID-00025 COVID-00025.jpg positive fig1",
]
EXPECTED_7B = [
    LabelRecord("ANON193", "CR.1.2.840.113564.1722810170.20200418154808640220.1003000225002.png", 0,
                "negative", "actmed", 1),
    LabelRecord("COVID 72", "COVID(72).png", 1, "positive", "sirm", 2),
    LabelRecord("COVID 105", "COVID(105) copy 2.png", 1, "positive", "sirm", 4),
    LabelRecord("17", "covid 19 pneumonia 3 day 1.jpg", 1, "positive", "cohen", 5),
    LabelRecord("46baab38-2341-4b1b-bd3c-fb16e4b1237f", "46baab38-2341-4b1b-bd3c-fb16e4b1237f.png", 0,
                "negative", "rsna", 6),
    LabelRecord("COVID-00025", "COVID-00025.jpg", 1, "positive", "fig1", 7),
]


def _write(path: pathlib.Path, lines) -> pathlib.Path:
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")
  return path


def test_label_file_with_spaces_parses_every_field(tmp_path):
  records = covidx_labels.parse_label_file(_write(tmp_path / "train_COVIDx7B.txt", LINES_7B))
  assert records == EXPECTED_7B
  # The naive split the thesis had to repair shifts exactly the lines with spaces.
  shifted = [line for line in LINES_7B if line and len(line.split()) != 4]
  assert len(shifted) == 3

  lines_v2 = ["3 SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg pneumonia",
              "96 covid 19 pneumonia rapidly progressive day 3.jpg COVID-19",
              "003d8fa0-6bf1-40ed-b54c-ac657f8495c5 003d8fa0-6bf1-40ed-b54c-ac657f8495c5.png normal"]
  records = covidx_labels.parse_label_file(_write(tmp_path / "labels.txt", lines_v2))  # from content
  assert records == [
      LabelRecord("3", "SARS-10.1148rg.242035193-g04mr34g0-Fig8a-day0.jpeg", 1, "pneumonia", "", 1),
      LabelRecord("96", "covid 19 pneumonia rapidly progressive day 3.jpg", 2, "COVID-19", "", 2),
      LabelRecord("003d8fa0-6bf1-40ed-b54c-ac657f8495c5", "003d8fa0-6bf1-40ed-b54c-ac657f8495c5.png", 0,
                  "normal", "", 3)]


def test_files_on_disk_settle_ids_and_filenames_that_both_have_spaces(tmp_path):
  path = _write(tmp_path / "test_COVIDx8B.txt", ["Patient 9 chest film 2.png positive ricord"])
  without_disk = covidx_labels.parse_label_file(path)[0]
  assert (without_disk.patient, without_disk.filename) == ("Patient", "9 chest film 2.png")
  folder = tmp_path / "test"
  folder.mkdir()
  (folder / "other.png").touch()
  expected = r"line 1: no image file named any of .*'chest film 2.png'.* exists in " + re.escape(str(folder))
  with pytest.raises(LabelFileError, match=expected):
    covidx_labels.parse_label_file(path, image_folder=folder)
  (folder / "chest film 2.png").touch()
  with_disk = covidx_labels.parse_label_file(path, image_folder=folder)[0]
  assert (with_disk.patient, with_disk.filename, with_disk.source) == (
      "Patient 9", "chest film 2.png", "ricord")


@pytest.mark.parametrize("bad_line, reason", [
    ("COVID(72).png positive sirm", "at least 4"),
    ("ANON1 CR.1.png maybe actmed", "label field 'maybe'"),
    ("ANON1 CR.1.png positive kaggle", "'kaggle' is not a COVIDx7B source"),
    ("ANON1 CR.1.dcm positive actmed", "image extension"),
])
def test_malformed_line_names_file_line_and_text(tmp_path, bad_line, reason):
  path = _write(tmp_path / "train_COVIDx7B.txt", LINES_7B[:2] + [bad_line])
  with pytest.raises(LabelFileError) as error:
    covidx_labels.parse_label_file(path)
  message = str(error.value)
  assert str(path) in message and "line 3" in message and reason in message and repr(bad_line) in message


def test_version_detection(tmp_path):
  assert covidx_labels.version_from_file_name("x/test_COVIDx8B.txt") == "8b"
  assert covidx_labels.version_from_file_name("train_COVIDx2.txt") == "2"
  lines = ["a a.png positive ricord", "b b.png negative rsna"]
  assert covidx_labels.detect_version(tmp_path / "l.txt", lines) == "8b"
  assert covidx_labels.detect_version(tmp_path / "l.txt", ["b b.png negative rsna"]) == "7b"
  with pytest.raises(LabelFileError, match="not supported"):
    covidx_labels.version_from_file_name("train_COVIDx5.txt")


def test_patient_ids_from_file_names():
  assert cxr_datasets.kermany_patient("person1_bacteria_1.jpeg") == "person1"
  assert cxr_datasets.kermany_patient("person1000_virus_1681.jpeg") == "person1000"
  assert cxr_datasets.kermany_patient("IM-0115-0001.jpeg") == "IM-0115"
  assert cxr_datasets.kermany_patient("NORMAL2-IM-0381-0001.jpeg") == "NORMAL2-IM-0381"
  assert cxr_datasets.deepcovid_patient("patient00042_study1_view1_frontal.jpg") == "patient00042"
  assert cxr_datasets.deepcovid_patient("covid-19-pneumonia-7.jpg") == "covid-19-pneumonia-7"


# ---- builders on phantom exports -------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  root = tmp_path_factory.mktemp("cxr_export")
  # Enough COVID patients that every COVIDx source and naming style is exported.
  return root, export_cxr.export_all(root, seed=0, num_patients=16, image_size=32,
                                     class_probs=(0.35, 0.25, 0.4))


def _build(name, manual_dir, data_dir, **kwargs):
  builder = tfds.builder(name, data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _examples(builder) -> dict[str, list[dict]]:
  return {split: [source[i] for i in range(len(source))]
          for split, source in builder.as_data_source().items()}


def _expected_pixels(path: pathlib.Path, mode: str) -> np.ndarray:
  """What the file holds, read independently of the builder's decoder."""
  with Image.open(path) as im:
    assert im.mode == mode
    if mode == "L":
      return np.asarray(im)[..., None]
    if mode == "P":
      return np.asarray(im.convert("RGB"))
    return np.asarray(im)[..., :3]


def _check_examples(examples, manifest, root: pathlib.Path, key) -> None:
  """Every example matches the exported file it came from: fields and pixels."""
  by_key = {key(record): record for record in manifest}
  assert len(examples) == len(manifest)
  for ex in examples:
    record = by_key[ex["filename"].decode()]
    assert ex["patient"].decode() == record.patient
    assert int(ex["label"]) == record.label
    if "source" in ex:
      assert ex["source"].decode() == record.source
    expected = _expected_pixels(root / record.relative_path, record.mode)
    assert ex["image"].dtype == np.uint8
    assert ex["image"].shape == (record.height, record.width, 1 if record.mode == "L" else 3)
    np.testing.assert_array_equal(ex["image"], expected)


@pytest.mark.parametrize("version", ["2", "7b", "8b"])
def test_covidx_builder_reads_every_field_of_the_export(exported, tmp_path, version):
  root, manifests = exported
  manifest = manifests["covidx"][version]
  config = cxr_datasets.CovidxConfig(name=f"v{version}_test", label_version=version, val_fraction=0.3)
  builder = _build("covidx", root / "covidx", tmp_path, config=config)
  examples = _examples(builder)
  assert builder.info.features["label"].names == list(covidx_labels.LABEL_NAMES[version])
  assert ("source" in examples["test"][0]) == (version != "2")
  assert examples["val"], "val is carved out of train"
  _check_examples(examples["train"] + examples["val"], [r for r in manifest if r.split == "train"],
                  root / "covidx", key=lambda r: r.filename)
  _check_examples(examples["test"], [r for r in manifest if r.split == "test"], root / "covidx",
                  key=lambda r: r.filename)
  train_patients = {ex["patient"] for ex in examples["train"]}
  assert not train_patients & {ex["patient"] for ex in examples["val"]}
  # The export holds the troublesome lines, and they came through intact.
  assert any(" " in r.patient for r in manifest) and any(" " in r.filename for r in manifest)
  assert {r.mode for r in manifest} == {"L", "P", "RGB", "RGBA"}
  sources = {r.source for r in manifest}
  assert ("ricord" in sources) == (version == "8b")


def test_data_source_for_grain_and_labels_subfolder(exported, tmp_path):
  root, manifests = exported
  moved = tmp_path / "covidx"
  shutil.copytree(root / "covidx", moved)
  (moved / "labels").mkdir()
  for path in moved.glob("*_COVIDx*.txt"):
    path.rename(moved / "labels" / path.name)
  config = cxr_datasets.CovidxConfig(name="v8b_test", label_version="8b", val_fraction=0.3)
  source = tfds.data_source("covidx", split="test", data_dir=str(tmp_path / "tfds"),
                            builder_kwargs={"config": config},
                            download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(
                                manual_dir=str(moved))})
  assert len(source) == sum(r.split == "test" for r in manifests["covidx"]["8b"])
  assert source[0]["image"].ndim == 3


def test_deepcovid_corrupt_image_skipped_and_counted_or_error(exported, tmp_path):
  root, manifests = exported
  manual = tmp_path / "deepcovid"
  shutil.copytree(root / "deepcovid", manual)
  manifest = list(manifests["deepcovid"])
  broken = next(r for r in manifest if r.split == "train" and r.relative_path.endswith(".jpg"))
  (manual / broken.relative_path).write_bytes((manual / broken.relative_path).read_bytes()[:60])
  sixteen = np.array([[0, 257 * 100, 65535], [1000, 128, 40000]], dtype=np.uint16)
  Image.fromarray(sixteen).save(manual / "test/non/patient09999_study1_view1_frontal.png")

  builder = _build("deepcovid", manual, tmp_path / "skip", on_corrupt="skip")
  examples = _examples(builder)
  skipped = builder.skipped_corrupt["train"] + builder.skipped_corrupt["val"]
  assert skipped == [str(manual / broken.relative_path)]
  good = [r for r in manifest if r is not broken and r.split == "train"]
  _check_examples(examples["train"] + examples["val"], good, manual, key=lambda r: r.relative_path)
  deep = next(ex for ex in examples["test"] if ex["patient"] == b"patient09999")
  np.testing.assert_array_equal(deep["image"][..., 0], np.rint(sixteen / 257.0).astype(np.uint8))
  assert int(deep["label"]) == 0 and deep["source"] == b"chexpert"
  _check_examples([ex for ex in examples["test"] if ex is not deep],
                  [r for r in manifest if r.split == "test"], manual, key=lambda r: r.relative_path)

  with pytest.raises(CorruptImageError, match=re.escape(broken.relative_path)):
    _build("deepcovid", manual, tmp_path / "error", on_corrupt="error")


def test_pediatric_official_and_patient_val_without_chest_xray_level(exported, tmp_path):
  root, manifests = exported
  manifest = manifests["pediatric_cxr"]
  official = _examples(_build("pediatric_cxr/official", root / "pediatric_cxr", tmp_path))
  base = root / "pediatric_cxr" / "chest_xray"
  for split in ("train", "val", "test"):
    _check_examples(official[split], [r for r in manifest if r.split == split], root / "pediatric_cxr",
                    key=lambda r: r.relative_path.removeprefix("chest_xray/"))

  flat = tmp_path / "flat"
  shutil.copytree(base, flat)
  config = cxr_datasets.PediatricCxrConfig(name="patient_val_test", val_fraction=0.3)
  carved = _examples(_build("pediatric_cxr", flat, tmp_path / "tfds", config=config))
  assert len(carved["train"]) + len(carved["val"]) == sum(r.split != "test" for r in manifest)
  assert not {ex["patient"] for ex in carved["train"]} & {ex["patient"] for ex in carved["val"]}
  assert sorted(ex["filename"] for ex in carved["test"]) == sorted(
      ex["filename"] for ex in official["test"])


def test_missing_or_malformed_download_says_what_was_expected_where(exported, tmp_path):
  root, _ = exported
  manual = tmp_path / "covidx"
  shutil.copytree(root / "covidx", manual)
  (manual / "test_COVIDx7B.txt").unlink()
  with pytest.raises(FileNotFoundError, match=r"test_COVIDx7B.txt not found; looked at .*labels"):
    _build("covidx/v7b", manual, tmp_path / "a")

  lines = (manual / "train_COVIDx8B.txt").read_text().splitlines()
  missing = covidx_labels.parse_label_line(lines[2], "8b")
  (manual / "train" / missing.filename).unlink()
  with pytest.raises(LabelFileError, match=r"train_COVIDx8B.txt, line 3: no image file named"):
    _build("covidx/v8b", manual, tmp_path / "b")

  deepcovid = tmp_path / "deepcovid"
  shutil.copytree(root / "deepcovid", deepcovid)
  shutil.rmtree(deepcovid / "test" / "non")
  with pytest.raises(FileNotFoundError, match=r"class folder 'non' at .*test/non"):
    _build("deepcovid", deepcovid, tmp_path / "c")


def test_patients_shared_by_official_splits_are_logged(caplog):
  items = {"train": [cxr_datasets.ImageItem(pathlib.Path("a.png"), 0, "p1", "a.png"),
                     cxr_datasets.ImageItem(pathlib.Path("b.png"), 1, "p2", "b.png")],
           "test": [cxr_datasets.ImageItem(pathlib.Path("c.png"), 1, "p2", "c.png")]}
  with caplog.at_level(logging.WARNING):
    shared = cxr_datasets.log_shared_patients("covidx/v7b", items)
  assert shared == {("train", "test"): ["p2"]}
  assert "1 patient(s) are in both official 'train' and 'test'" in caplog.text
