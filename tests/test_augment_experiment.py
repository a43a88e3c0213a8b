"""The synthetic-augmentation experiment: every arm end to end, the leakage guard, the controls."""

from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from helpers import load_config, set_fields
from prepnet_jax.data import datasets, pipeline
from prepnet_jax.eval import classify
from prepnet_jax.runtime import rundir
from prepnet_jax.tasks.augment_experiment import arms, generators, job as ae, report as aug_report
from prepnet_jax.tasks.generative import gan

# 60 patients: both classes in the val/test splits and on the external site.
TINY_CXR = {"num_patients": 60, "image_size": 32}


def tiny_config(**overrides):
  c = load_config("augment_experiment")
  c.data.phantom_overrides = dict(TINY_CXR)
  c.seeds = (0,)
  c.num_epochs = 1
  c.batch_size = 16
  c.log_every_steps = 1
  c.gradcam.num_images = 4
  g = c.generator.train
  g.num_steps, g.save_every, g.sample_every, g.batch_size, g.fd.num_fake = 2, 2, 2, 8, 16
  return set_fields(c, overrides)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("augment"))
  config = tiny_config()
  return config, workdir, ae.train_and_evaluate(config, workdir)


def _patients(ref, split, data_cfg):
  return {str(p) for p in pipeline.column(datasets.get_source(ref, split, data_cfg), "patient")}


def test_every_arm_is_reported_with_calibration_and_gradcam(experiment, capsys):
  config, workdir, results = experiment
  reports = os.path.join(workdir, "reports")
  with open(os.path.join(reports, "augment_results.json")) as f:
    saved = json.load(f)
  assert list(saved["arms"]) == list(arms.ARMS)
  # COVID is filled up to the non-COVID count (74 vs 14 real training images) in every augmented arm.
  assert saved["train"]["per_class"] == [74, 14] and saved["extra_per_class"] == [0, 60]
  assert saved["arms"]["none"]["train_per_class"] == [74, 14]
  for arm in ("classical", "oversample", "synthetic"):
    assert saved["arms"][arm]["train_per_class"] == [74, 74]
  assert saved["eval_sets"]["internal"] == {"data": "phantom_cxr/covidx:test", "n": 16}
  assert saved["eval_sets"]["external"] == {"data": "phantom_cxr/ulm:all", "n": 120}
  for arm, record in saved["arms"].items():
    run = record["seeds"]["0"]
    for name in ("internal", "external"):
      m = run["metrics"][name]
      assert np.asarray(m["confusion_matrix"]).sum() == saved["eval_sets"][name]["n"]
      assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["auc"] <= 1.0
      assert record["summary"][name]["accuracy"] == {"mean": m["accuracy"], "std": 0.0, "n": 1}
      calib = run["calibration"][name]
      # Temperature scaling minimises the validation NLL; on other sets it must stay finite.
      assert np.isfinite([calib["nll_before"], calib["nll_after"]]).all()
      assert 0.0 <= calib["ece_after"] <= 1.0
      assert os.path.getsize(os.path.join(reports, f"reliability_{arm}_{name}.png")) > 10_000
      assert os.path.getsize(os.path.join(reports, f"gradcam_{arm}_{name}.png")) > 10_000
    assert run["calibration"]["temperature"] > 0
  table = open(os.path.join(reports, "augment_table.md")).read()
  for heading in ("## Internal test: phantom_cxr/covidx:test (n = 16)", "## External site: phantom_cxr/ulm:all (n = 120)",
                  "## Calibration"):
    assert heading in table
  for arm in arms.ARMS:
    assert table.count(f"| {arm} |") == 3  # internal, external and calibration rows
  events = b"".join(open(p, "rb").read() for p in glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
  assert b"gradcam/synthetic/external" in events and b"gradcam/none/internal" in events
  assert results["wall_time_s"] > 0


def test_generator_is_trained_on_training_patients_only(experiment):
  config, workdir, results = experiment
  check = results["generator_data"]
  assert not check["sees_eval_data"]
  [generator] = check["generators"]
  assert generator["trained_here"] and generator["data"] == "phantom_cxr/covidx:train"
  assert generator["class_filter"] == [1] and generator["num_images"] == 14
  assert generator["overlap_patients"] == {"val": 0, "internal": 0, "external": 0}
  # Independently of the module: the generator's own config names only training patients.
  g = rundir.read_config(os.path.join(workdir, "generators", "class_1"))
  seen = _patients(g.data.train, g.data.train_split, g.data)
  for ref, split in (("phantom_cxr/covidx", "val"), ("phantom_cxr/covidx", "test"), ("phantom_cxr/ulm", "all")):
    assert not seen & _patients(ref, split, config.data)
  assert "never saw evaluation patients (asserted)" in open(os.path.join(workdir, "reports", "augment_table.md")).read()


def test_generator_that_saw_test_patients_is_refused_unless_allowed(experiment, tmp_path):
  config, _, _ = experiment
  leaky = tiny_config(**{"generator.data_train_split": "test", "generator.train.batch_size": 2})
  leaky_dir = str(tmp_path / "leaky_generator")
  gan.train_and_evaluate(generators.generator_training_config(leaky, 1), leaky_dir)
  refused = tiny_config(**{"generator.workdirs": ("", leaky_dir), "arms": ("synthetic",)})
  with pytest.raises(AssertionError, match="covidx-p.*evaluation set 'internal'"):
    ae.train_and_evaluate(refused, str(tmp_path / "refused"))
  allowed = tiny_config(**{"generator.workdirs": ("", leaky_dir), "arms": ("synthetic",),
                           "generator.allow_eval_data": True})
  results = ae.train_and_evaluate(allowed, str(tmp_path / "allowed"))
  [generator] = results["generator_data"]["generators"]
  assert results["generator_data"]["sees_eval_data"] and not generator["trained_here"]
  assert generator["overlap_patients"] == {"val": 0, "internal": 1, "external": 0}  # the COVID test patient
  table = open(tmp_path / "allowed" / "reports" / "augment_table.md").read()
  assert "WARNING — data leakage" in table.splitlines()[2]


def test_oversampling_arm_balances_classes_with_real_duplicates():
  config = tiny_config()
  real = arms.FieldsSource(classify.load_split(config, config.data.train, "train"))
  labels = pipeline.column(real, "label")
  counts = arms.extra_counts(labels, config.extra.per_class, 2)
  source = arms.arm_training_source("oversample", real, counts, config, [], seed=0)
  assert np.bincount(pipeline.column(source, "label")).tolist() == [74, 74]
  covid = [np.asarray(real[i]["image"]) for i in np.flatnonzero(labels == 1)]
  uses = np.zeros(len(covid), int)
  for i in range(len(real), len(source)):
    image = np.asarray(source[i]["image"])
    matches = [j for j, c in enumerate(covid) if np.array_equal(c, image)]
    assert len(matches) == 1 and source[i]["label"] == 1 and source[i]["domain"] == 1
    uses[matches[0]] += 1
  # 60 copies of 14 COVID images: every image 4 or 5 times (a seeded order, cycled).
  assert uses.sum() == 60 and uses.min() == 4 and uses.max() == 5


def test_classical_arm_draws_keras_style_variants_of_the_requested_class():
  config = tiny_config()
  real = arms.FieldsSource(classify.load_split(config, config.data.train, "train"))
  labels = pipeline.column(real, "label")
  extra = arms.classical_images(real, np.asarray([3, 30]), "B", seed=0)
  assert np.bincount(extra.column("label")).tolist() == [3, 30]
  originals = {int(i): np.asarray(real[int(i)]["image"]) for i in range(len(real))}
  for k in range(len(extra)):
    image = extra[k]["image"]
    assert image.shape == originals[0].shape and image.dtype == np.uint8
    assert not any(np.array_equal(image, o) for o in originals.values())
  # Same seed, same images; another seed, other images.
  again = arms.classical_images(real, np.asarray([3, 30]), "B", seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(extra.arrays["image"], again.arrays["image"]))
  other = arms.classical_images(real, np.asarray([3, 30]), "B", seed=1)
  assert not np.array_equal(extra.arrays["image"][0], other.arrays["image"][0])
  with pytest.raises(ValueError, match="classical.preset='C'"):
    arms.classical_images(real, np.asarray([0, 1]), "C", seed=0)
  assert labels.size == len(real)


def test_synthetic_images_come_from_the_class_generator(experiment):
  _, workdir, _ = experiment
  generator = arms.Generator(os.path.join(workdir, "generators", "class_1"), 1, True)
  extra = arms.synthetic_images([generator], np.asarray([0, 5]), -1, seed=3)
  assert extra.column("label").tolist() == [1] * 5
  assert extra[0]["image"].shape == (32, 32, 1) and extra[0]["image"].dtype == np.uint8
  assert extra[4]["patient"] == "synthetic/class1/4"
  with pytest.raises(ValueError, match="no generator for class 0"):
    arms.synthetic_images([generator], np.asarray([2, 0]), -1, seed=3)


def test_extra_counts_fill_up_or_take_the_given_numbers():
  labels = np.asarray([0] * 7 + [1] * 2 + [2] * 4)
  assert arms.extra_counts(labels, (0, 0, -1), 3).tolist() == [0, 0, 3]
  assert arms.extra_counts(labels, (-1, -1, -1), 3).tolist() == [0, 5, 3]
  assert arms.extra_counts(labels, (0, 312, 5), 3).tolist() == [0, 312, 5]
  with pytest.raises(ValueError, match="expected 3 integers"):
    arms.extra_counts(labels, (0, -1), 3)
  with pytest.raises(ValueError, match="extra.per_class"):
    arms.extra_counts(labels, (0, -2, 0), 3)


def test_mean_std_uses_sample_std_over_seeds():
  assert aug_report.mean_std([0.5, 0.7, 0.9]) == pytest.approx({"mean": 0.7, "std": 0.2, "n": 3})
  assert aug_report.mean_std([0.5, float("nan")]) == {"mean": 0.5, "std": 0.0, "n": 1}
