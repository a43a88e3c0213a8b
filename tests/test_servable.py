"""Every trained model is servable and calibrated: each classifier-producing job writes its fitted
temperature beside its selected model, and `predict` loads every kind of workdir (classifier,
two-phase recipe, augmentation arm, PrepNet row → AE + E_cov) with that temperature.

Each expensive fixture (a tiny training run) is used by exactly one test, so `pytest -n 2` never
trains one twice."""

from __future__ import annotations

import io
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest
from PIL import Image
from test_augment_experiment import tiny_config as tiny_augment_config
from test_cxr_recipes import tiny as tiny_recipe
from test_predict import (TINY, evaluation_path_probabilities, phantom_ct_images, png_bytes, predict_config,
                          restore_state, write_run_config)
from helpers import tiny_prepnet_config

from helpers import tiny_classifier_config
from prepnet_jax.data import datasets, transforms
from prepnet_jax.eval import calibration, classify, inference, prepnet_layout, trained
from prepnet_jax.eval.metrics import as_class_probs
from prepnet_jax.models import prepnet_networks
from prepnet_jax.runtime import checkpointing, sharding
from prepnet_jax.tasks.augment_experiment import job as augment
from prepnet_jax.tasks.classifier import recipes, train as classifier
from prepnet_jax.tasks.predict import job as predict
from prepnet_jax.tasks.prepnet import job as prepnet
from prepnet_jax.tasks.serve import app as serve_app

ATOL = 1e-5
REPORT_KEYS = {"n", "accuracy", "nll_before", "nll_after", "ece_before", "ece_after"}


def _predict(model_workdir, image: np.ndarray, out_dir, **fields) -> tuple[dict, dict]:
  """predict on one PNG of `image`: (summary, the file's record)."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "input.png")
  with open(path, "wb") as f:
    f.write(png_bytes(image))
  summary = predict.run(predict_config(str(model_workdir), path, **fields), os.path.join(out_dir, "run"))
  assert summary["n_ok"] == 1, summary
  with open(os.path.join(out_dir, "run", "predictions", "input.json")) as f:
    return summary, json.load(f)


def _probabilities(record: dict) -> np.ndarray:
  return np.asarray(list(record["probabilities"].values()))


def _check_calibration_file(model_dir, with_test: bool = True) -> dict:
  with open(os.path.join(model_dir, calibration.CALIBRATION_FILE)) as f:
    report = json.load(f)
  assert report["fitted_on"] == "val" and report["n_bins"] == 15
  assert set(report["val"]) == REPORT_KEYS and (not with_test or set(report["test"]) == REPORT_KEYS)
  assert report["val"]["nll_after"] <= report["val"]["nll_before"] + 1e-9  # T minimises the val NLL
  assert report["temperature"] > 0 and abs(report["temperature"] - 1.0) > 1e-4
  for figure in report["figures"].values():
    assert os.path.getsize(os.path.join(model_dir, "reports", figure)) > 10_000
  return report


def _check_source(summary: dict, record: dict, model_dir, temperature: float) -> None:
  source = os.path.join(str(model_dir), calibration.CALIBRATION_FILE)
  assert summary["temperature_source"] == record["temperature_source"] == source
  assert summary["temperature"] == record["temperature"] == pytest.approx(temperature)
  assert summary["calibrated"] and record["calibrated"]


# --- classifier ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("classifier"))
  config = tiny_classifier_config(num_epochs=1, **{"data.phantom_overrides": dict(TINY),
                                                   "data.eval": ("phantom_ct/sars",)})
  write_run_config(workdir, config)
  classifier.train_and_evaluate(config, workdir)
  return workdir, config


def test_classifier_job_calibrates_its_best_model_and_predict_and_serve_use_it(classifier_run, tmp_path):
  workdir, config = classifier_run
  report = _check_calibration_file(workdir)
  # Fitted on the validation logits of the selected (best/) state, nothing else.
  state = restore_state(workdir)
  val = classify.load_split(config, config.data.train, "val")
  logits, labels = classify.predict_logits(state, val, transforms.make_preprocess(config.preprocess, False), 8,
                                           sharding.make_mesh())
  assert report["val"]["n"] == len(val)
  assert report["temperature"] == pytest.approx(calibration.fit_temperature(logits, labels), rel=1e-6)
  with open(os.path.join(workdir, "reports", "metrics.json")) as f:
    assert json.load(f)["calibration"]["temperature"] == report["temperature"]

  image = phantom_ct_images(1)[0]
  summary, record = _predict(workdir, image, tmp_path)
  _check_source(summary, record, workdir, report["temperature"])
  np.testing.assert_allclose(_probabilities(record), evaluation_path_probabilities(
      state, config, [image], report["temperature"])[0], atol=ATOL)

  html = serve_app.create_app(inference.Predictor(workdir)).test_client().get("/").get_data(as_text=True)
  assert f"calibrated, T = {report['temperature']:.3g}" in html and "uncalibrated" not in html


# --- two-phase recipe ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_phase_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("two_phase"))
  config = tiny_recipe("cxr_resnet50_onecycle", num_epochs=1, head_only_epochs=1,
                       **{"model.name": "small_cnn", "model.width_multiplier": 0.25,
                          "data.eval": ["phantom_cxr/covidx"]})
  config.task = "cxr_recipe"
  write_run_config(workdir, config)
  recipes.train_and_evaluate(config, workdir)
  return workdir, config


def test_two_phase_recipe_is_served_from_its_top_level_workdir(two_phase_run, tmp_path):
  workdir, config = two_phase_run
  finetune = os.path.join(workdir, "finetune")
  assert not os.path.exists(os.path.join(workdir, "best"))
  phase = {name: json.load(open(os.path.join(workdir, name, "config.json"))) for name in ("head_only", "finetune")}
  assert phase["head_only"]["model"]["freeze_backbone"] and not phase["finetune"]["model"]["freeze_backbone"]
  report = _check_calibration_file(finetune)
  assert json.load(open(os.path.join(workdir, "reports", "metrics.json")))["model_dir"] == finetune

  image = datasets.get_source("phantom_cxr/covidx", "test", config.data)[0]["image"]
  summary, record = _predict(workdir, image, tmp_path / "top")
  assert summary["model_dir"] == finetune and "two-phase" in summary["model_kind"]
  _check_source(summary, record, finetune, report["temperature"])
  want = evaluation_path_probabilities(restore_state(finetune), config, [image], report["temperature"])[0]
  np.testing.assert_allclose(_probabilities(record), want, atol=ATOL)
  assert list(record["probabilities"]) == ["COVID-negative", "COVID-positive"]

  # A run written before phases had their own config.json resolves the fine-tuning config.
  legacy = tmp_path / "legacy"
  shutil.copytree(workdir, legacy)
  os.remove(legacy / "finetune" / "config.json")
  served = trained.load_trained_model(str(legacy))
  leaves = lambda v: jax.tree_util.tree_leaves(v)
  for a, b in zip(leaves(served.variables), leaves(restore_state(finetune).variables)):
    np.testing.assert_array_equal(a, b)
  assert served.temperature == pytest.approx(report["temperature"])


# --- augmentation experiment ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def augment_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("augment"))
  config = tiny_augment_config(arms=("none",))
  write_run_config(workdir, config)
  return workdir, config, augment.train_and_evaluate(config, workdir)


def test_augmentation_arm_is_a_self_contained_servable_workdir(augment_run, tmp_path):
  workdir, config, results = augment_run
  arm_dir = os.path.join(workdir, "arms", "none", "seed_0")
  arm_config = json.load(open(os.path.join(arm_dir, "config.json")))
  assert arm_config["arms"] == ["none"] and arm_config["seeds"] == [0] and arm_config["seed"] == 0
  assert os.path.isdir(os.path.join(arm_dir, "best"))
  report = _check_calibration_file(arm_dir)
  assert set(report) >= {"val", "test", "external"}
  assert results["arms"]["none"]["seeds"]["0"]["calibration"]["temperature"] == report["temperature"]

  # The job's own evaluation logits of internal-test images, temperature-scaled, are what predict gives.
  saved = np.load(os.path.join(arm_dir, "logits.npz"))
  internal = classify.load_split(config, config.data.train, config.data.test_split)
  image = internal[0]["image"]
  want = as_class_probs(calibration.probabilities(saved["internal_logits"][:1], report["temperature"]))[0]
  records = {}
  for name, model_workdir, fields in (("top", workdir, {}), ("chosen", workdir, {"arm": "none", "model_seed": 0}),
                                      ("direct", arm_dir, {})):
    summary, records[name] = _predict(model_workdir, image, tmp_path / name, **fields)
    _check_source(summary, records[name], arm_dir, report["temperature"])
    np.testing.assert_allclose(_probabilities(records[name]), want, atol=ATOL)

  with pytest.raises(ValueError, match=r"config.arm='classical' has no trained classifier.*\{'none': \[0\]\}"):
    trained.load_trained_model(workdir, trained.Selection(arm="classical"))
  with pytest.raises(ValueError, match=r"model_seed=4: arm 'none' .* has trained seeds \[0\]"):
    trained.load_trained_model(workdir, trained.Selection(seed=4))


# --- PrepNet -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prepnet_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("prepnet"))
  config = tiny_prepnet_config([dict(name="Original", overrides={"schedule": "none"}),
                                dict(name="PrepNet", overrides={"grayscale_cov": True})])
  config.diagnostics.enabled = False
  write_run_config(workdir, config)
  prepnet.train_and_evaluate(config, workdir)
  return workdir, config


def _row_pair(workdir, config, row: int, key: str):
  """(row config, (AE or None, E_cov)) as the job saved them for training set `key`, restored
  without `eval.trained`."""
  rc = prepnet_layout.row_config(config, config.rows[row], 0)
  rng = jax.random.key(0)
  ae = prepnet_networks.make_ae_state(rc, rng, 1)
  img = prepnet_networks.make_classifier_state(rc, rc.e_img, len(rc.data.train), rng, 1, rc.optim.img)
  cov = prepnet_networks.make_classifier_state(rc, rc.e_cov, 1, rng, 1, rc.optim.cov)
  pair = (ae if rc.schedule != "none" else None, cov)
  row_dir = prepnet_layout.row_dir(workdir, config.rows[row]["name"], 0)
  ckpt = checkpointing.Checkpointer(prepnet_layout.row_checkpoints(row_dir))
  tree, _ = ckpt.restore({"ae": ae, "img": img, "cov": {"sars": pair, "ucsd": pair}})
  return rc, tree["cov"][key]


def test_prepnet_row_is_served_as_its_ae_then_the_e_cov_trained_on_its_outputs(prepnet_run, tmp_path):
  workdir, config = prepnet_run
  row_dir = prepnet_layout.row_dir(workdir, "PrepNet", 0)
  reports = {key: _check_calibration_file(prepnet_layout.cov_model_dir(row_dir, key)) for key in ("sars", "ucsd")}
  results = json.load(open(os.path.join(row_dir, "results.json")))
  rc, (ae, cov) = _row_pair(workdir, config, 1, "ucsd")
  assert results["ucsd"]["calibration"]["temperature"] == reports["ucsd"]["temperature"]
  assert reports["ucsd"]["val"]["n"] == len(datasets.get_source("phantom_ct/ucsd", "val", rc.data))

  image = datasets.get_source("phantom_ct/ucsd", "test", rc.data)[0]["image"]
  x = transforms.make_preprocess(rc.preprocess, training=False)({"image": image}, None)["image"][None]
  ae_output = np.asarray(ae.apply_fn(ae.variables, x, train=False))
  gray = np.repeat((ae_output @ np.asarray([0.299, 0.587, 0.114], np.float32))[..., None], 3, -1)
  logit = float(np.asarray(cov.apply_fn(cov.variables, gray, train=False))[0, 0])
  p_covid = 1.0 / (1.0 + np.exp(-logit / reports["ucsd"]["temperature"]))
  without_ae = float(np.asarray(cov.apply_fn(cov.variables, x, train=False))[0, 0])

  for name, model_workdir in (("run", workdir), ("row", row_dir)):
    summary, record = _predict(model_workdir, image, tmp_path / name, train_site="ucsd")
    assert summary["model_kind"] == "prepnet" and "E_cov trained on ucsd" in summary["model_description"]
    _check_source(summary, record, prepnet_layout.cov_model_dir(row_dir, "ucsd"), reports["ucsd"]["temperature"])
    np.testing.assert_allclose(_probabilities(record), [1 - p_covid, p_covid], atol=ATOL)
    assert abs(logit - without_ae) > 1e-4  # the AE really is in the path
    # The normalised image beside the original is the AE output.
    side = np.asarray(Image.open(tmp_path / name / "run" / "predictions" / record["images"][0]["prepnet_png"]))
    assert side.shape[0] == image.shape[0]

  # The web page serves the same pipeline: calibrated, with the AE output shown.
  served = inference.Predictor.from_config(predict_config(workdir, "", train_site="ucsd"))
  page = serve_app.create_app(served).test_client().post(
      "/predict", data={"image": (io.BytesIO(png_bytes(image)), "slice.png")}, content_type="multipart/form-data")
  html = page.get_data(as_text=True)
  assert page.status_code == 200 and "PrepNet-normalised" in html
  assert f"calibrated, T = {reports['ucsd']['temperature']:.3g}" in html
  shown = dict(re.findall(r'data-class="([^"]+)" data-probability="([0-9.]+)"', html))
  assert float(shown["COVID"]) == pytest.approx(p_covid, abs=ATOL)

  default = trained.load_trained_model(workdir)  # row 'PrepNet', first seed, first training set
  assert "row 'PrepNet'" in default.description and "E_cov trained on sars" in default.description
  assert default.temperature == pytest.approx(reports["sars"]["temperature"])
  # The 'Original' row has no AE: its E_cov sees the preprocessed image itself.
  _, (no_ae, original_cov) = _row_pair(workdir, config, 0, "sars")
  original = trained.load_trained_model(workdir, trained.Selection(prepnet_row="Original"))
  assert no_ae is None and original.autoencoder is None
  for a, b in zip(jax.tree_util.tree_leaves(original.variables), jax.tree_util.tree_leaves(original_cov.variables)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match=r"train_site='mosmed' is not a COVID training set .*\['sars', 'ucsd'\]"):
    trained.load_trained_model(workdir, trained.Selection(train_site="mosmed"))
  with pytest.raises(ValueError, match=r"prepnet_row='Nope' is not a row .*\['Original', 'PrepNet'\]"):
    trained.load_trained_model(workdir, trained.Selection(prepnet_row="Nope"))
  with pytest.raises(ValueError, match="is a PrepNet run, served as its own AE"):
    inference.Predictor.from_config(predict_config(workdir, "x.png", prepnet_workdir=workdir))


# --- not a workdir -------------------------------------------------------------------------------

def test_a_directory_no_job_wrote_gets_an_error_naming_what_is_missing(tmp_path):
  (tmp_path / "notes.txt").write_text("hello")
  (tmp_path / "scans").mkdir()
  expected = (r"has no config.json; it is not a workdir of the project's "
              r"classifier/cxr_recipe/augment_experiment/prepnet jobs; found: \['notes.txt', 'scans'\]")
  with pytest.raises(FileNotFoundError, match=expected):
    predict.run(predict_config(str(tmp_path), "x.png"), str(tmp_path / "out"))
  with pytest.raises(FileNotFoundError, match=r"found: nothing \(no such directory\)"):
    trained.load_trained_model(str(tmp_path / "missing"))
  gan_run = tmp_path / "gan"
  gan_run.mkdir()
  (gan_run / "config.json").write_text(json.dumps({"task": "gan"}))
  with pytest.raises(FileNotFoundError, match="task 'gan', which trains no classifier"):
    trained.load_trained_model(str(gan_run))
  with pytest.raises(ValueError, match="config.arm='none' selects an augmentation arm"):
    trained.load_trained_model(str(gan_run), trained.Selection(arm="none"))
