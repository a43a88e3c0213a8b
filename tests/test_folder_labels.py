"""`folder:` datasets label by `data.class_names`, not by sorted folder names (issue #17).

A folder with `COVID` and `non-COVID` sub-folders sorts COVID first, while the config says
('non-COVID', 'COVID'): the labels, the trained model and predict must all follow the config.
Training reads the folder's images by predict's rules (`data.readers`): images predict would
refuse (1×1, a side over 8192 px, over 25·10⁶ px) and corrupt ones are skipped once and listed in
reports/skipped_files.json with predict's reason; the resolved mapping lands in reports/ and
config.json.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from PIL import Image

from helpers import load_config, tiny_classifier_config
from prepnet_jax.data import datasets, image_folder, readers
from prepnet_jax.data.image_folder import ClassFolderError, resolve_class_folders
from prepnet_jax.runtime import rundir
from prepnet_jax.tasks.classifier import train as classifier
from prepnet_jax.tasks.predict import job as predict

CLASS_NAMES = ("non-COVID", "COVID")
PER_CLASS = 20


def _scan(rng, bright: bool, size: int = 32) -> np.ndarray:
  """A learnable stand-in for a scan: COVID bright, non-COVID dark, both noisy."""
  low = 150 if bright else 0
  return rng.integers(low, low + 106, (size, size), dtype=np.uint8)


def _write_folder(root, folders=("COVID", "non-COVID"), bad_files: bool = False) -> dict[str, str]:
  """`root/<folder>/<patient>.png` for each folder (COVID-like ones bright); returns file -> folder."""
  rng = np.random.default_rng(0)
  written = {}
  for folder in folders:
    (root / folder).mkdir(parents=True)
    bright = folder.casefold() == "covid"
    for i in range(PER_CLASS):
      name = f"{folder}/{folder.lower()}_p{i:02d}.png"
      Image.fromarray(_scan(rng, bright)).save(root / name)
      written[name] = folder
  if bad_files:
    Image.fromarray(np.full((1, 1), 200, np.uint8)).save(root / "COVID" / "icon_1x1.png")
    Image.fromarray(np.zeros((40, readers.MAX_SIDE + 1), np.uint8)).save(root / "non-COVID" / "wide.png")
    (root / "non-COVID" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
  return written


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  """A tiny classifier trained by the classifier job on a COVID / non-COVID folder:
  (workdir, folder ref, files, number of index builds during the job)."""
  tmp = tmp_path_factory.mktemp("folder_labels")
  files = _write_folder(tmp / "scans", bad_files=True)
  ref = f"folder:{tmp / 'scans'}"
  config = tiny_classifier_config(**{
      "data.train": ref, "data.eval": (ref,), "num_epochs": 4, "batch_size": 8,
      "optim.learning_rate": 3e-3, "optim.schedule": "constant"})
  workdir = str(tmp / "run")
  rundir.write_config(config, workdir)  # what main.py writes before the job
  builds = []
  original = image_folder.ImageFolderSource

  class CountingSource(original):
    def __init__(self, *args, **kwargs):
      builds.append(args[0])
      super().__init__(*args, **kwargs)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(image_folder, "ImageFolderSource", CountingSource)
    classifier.train_and_evaluate(config, workdir)
  return workdir, ref, files, len(builds)


def test_labels_follow_class_names_not_sorted_folders(trained_run):
  workdir, ref, files, builds = trained_run
  config = rundir.read_config(workdir)
  source = datasets.folder_source(ref, config.data)
  assert source.class_names == list(CLASS_NAMES)
  assert sorted(source.files) == sorted(files)
  for name, label in zip(source.files, source.labels):
    assert CLASS_NAMES[label] == files[name], name
  for split in ("train", "val", "test"):
    part = datasets.get_source(ref, split, config.data)
    assert all(CLASS_NAMES[part[i]["label"]] == files[part[i]["filename"]] for i in range(len(part)))
  assert builds == 1  # train, val, test, evaluation and reports share one index (one skip warning)


def test_mapping_and_skipped_files_are_reported_and_stored(trained_run):
  workdir, ref, files, _ = trained_run
  with open(f"{workdir}/reports/label_mapping.json") as f:
    mapping = json.load(f)
  classes = mapping["datasets"][ref]["classes"]
  assert [(c["label"], c["name"], c["folders"]) for c in classes] == [
      (0, "non-COVID", ["non-COVID"]), (1, "COVID", ["COVID"])]
  for c in classes:
    counts = c["images"]
    assert counts["all"] == PER_CLASS == counts["train"] + counts["val"] + counts["test"]
  assert mapping["datasets"][ref]["skipped_files"] == 3
  with open(f"{workdir}/reports/skipped_files.json") as f:
    skipped = json.load(f)
  reasons = {s["file"]: s["reason"] for s in skipped["datasets"][ref]["skipped"]}
  assert skipped["total"] == 3 and sorted(reasons) == [
      "COVID/icon_1x1.png", "non-COVID/truncated.png", "non-COVID/wide.png"]
  assert "1×1 px" in reasons["COVID/icon_1x1.png"] and "between 32 and 8192" in reasons["COVID/icon_1x1.png"]
  assert f"40×{readers.MAX_SIDE + 1} px" in reasons["non-COVID/wide.png"]
  # Stored with the model: predict and a rerun read the same mapping from config.json.
  stored = rundir.read_config(workdir).data
  assert stored.class_names == list(CLASS_NAMES)
  assert stored.class_folders.to_dict() == {"COVID": "COVID", "non-COVID": "non-COVID"}


def test_predict_names_held_out_scans_of_each_class(trained_run, tmp_path):
  workdir, _, _, _ = trained_run
  rng = np.random.default_rng(7)
  inputs = {"held_out_covid.png": "COVID", "held_out_clear.png": "non-COVID"}
  for name, truth in inputs.items():
    Image.fromarray(_scan(rng, truth == "COVID", size=40)).save(tmp_path / name)
  config = load_config("predict")
  config.model_workdir = workdir
  config.inputs = ",".join(str(tmp_path / name) for name in inputs)
  summary = predict.run(config, str(tmp_path / "predict"))
  assert summary["n_ok"] == 2
  with open(tmp_path / "predict" / "predictions" / "predictions.csv") as f:
    predicted = {row["file"].rsplit("/", 1)[-1]: row["predicted_class"] for row in csv.DictReader(f)}
  assert predicted == inputs


def test_a_folder_set_that_does_not_match_is_refused_with_the_fix(tmp_path):
  _write_folder(tmp_path / "scans", folders=("COVID", "normal"))
  config = load_config("classifier")
  with pytest.raises(ClassFolderError) as error:
    datasets.get_source(f"folder:{tmp_path / 'scans'}", "train", config.data)
  message = str(error.value)
  for expected in ("folder 'normal' matches no class name", "no folder for class 'non-COVID'",
                   "Folders found: ['COVID', 'normal']", "['non-COVID', 'COVID']",
                   "--config.data.class_folders=\"{'COVID': 'COVID', 'normal': 'non-COVID'}\""):
    assert expected in message


def test_explicit_class_folders(tmp_path):
  files = _write_folder(tmp_path / "scans", folders=("covid", "normal", "pneumonia"))
  ref = f"folder:{tmp_path / 'scans'}"
  config = load_config("classifier")
  config.data.class_folders = {"normal": "non-COVID", "covid": "COVID", "pneumonia": ""}
  source = datasets.folder_source(ref, config.data)
  assert len(source) == 2 * PER_CLASS and not any(f.startswith("pneumonia/") for f in source.files)
  assert [CLASS_NAMES[label] for label in source.labels] == [
      {"covid": "COVID", "normal": "non-COVID"}[files[f]] for f in source.files]
  config.data.class_folders = {"normal": "non-COVID", "covid": "COVID"}
  with pytest.raises(ClassFolderError, match="folder 'pneumonia' is not in class_folders"):
    datasets.folder_source(ref, config.data)


def test_name_matching_rule():
  assert resolve_class_folders(["covid", "NonCOVID"], CLASS_NAMES) == {"covid": "COVID", "NonCOVID": "non-COVID"}
  assert resolve_class_folders(["COVID", "non_covid"], CLASS_NAMES) == {"COVID": "COVID", "non_covid": "non-COVID"}
  with pytest.raises(ClassFolderError, match=r"class 'COVID' matches several folders \['COVID', 'covid'\]"):
    resolve_class_folders(["COVID", "covid", "non-COVID"], CLASS_NAMES)
  with pytest.raises(ClassFolderError, match="folder 'non COVID' matches several classes"):
    resolve_class_folders(["non COVID", "COVID"], ("non-COVID", "non_COVID", "COVID"))


def test_folder_limits_are_predicts():
  predict_config = load_config("predict")
  limits = readers.ReadOptions()
  assert (limits.min_side, limits.max_side, limits.max_pixels) == (
      predict_config.min_side, predict_config.max_side, predict_config.max_pixels)


def test_training_reads_a_folder_as_predict_reads_its_files(tmp_path):
  """A 12-bit scan stored in a 16-bit PNG: training gets the pixels predict gets (scaled by its bit
  depth, not ÷ 257 to near black); an image over MAX_PIXELS is skipped, from its header, with the
  reason predict gives."""
  _write_folder(tmp_path / "scans")
  twelve = (np.random.default_rng(1).random((40, 48)) * 4095).astype(np.uint16)
  scan = tmp_path / "scans" / "COVID" / "twelve_bit.png"
  Image.fromarray(twelve).save(scan)
  side = math.isqrt(readers.MAX_PIXELS) + 1
  huge = tmp_path / "scans" / "non-COVID" / "too_many_pixels.png"
  Image.new("L", (side, side)).save(huge)
  source = datasets.folder_source(f"folder:{tmp_path / 'scans'}", load_config("classifier").data)
  trained = source[source.files.index("COVID/twelve_bit.png")]["image"]
  predicted = readers.read_input(str(scan), readers.ReadOptions()).images[0].image
  np.testing.assert_array_equal(trained, predicted)
  np.testing.assert_array_equal(trained[..., 0], np.rint(twelve * (255 / 4095)).astype(np.uint8))
  reason = dict(source.skipped)[str(huge)]
  assert f"{side}×{side} = {side * side} px; at most {readers.MAX_PIXELS} pixels" in reason
  assert reason == readers.header_size_problem(str(huge), readers.ReadOptions())
  assert "non-COVID/too_many_pixels.png" not in source.files
