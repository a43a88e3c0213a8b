"""The predict job: every input format gives the evaluation path's probabilities on the same
pixels; bad files get a message each while the good ones are still predicted."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from helpers import load_config, tiny_classifier_config
from prepnet_jax.data import datasets, export_ct, image_folder, phantom, transforms
from prepnet_jax.data.readers import nifti
from prepnet_jax.eval import calibration, classify, inference, prepnet_layout, trained
from prepnet_jax.eval.metrics import as_class_probs
from prepnet_jax.models import classifier_factory, prepnet_networks
from prepnet_jax.runtime import checkpointing, sharding
from prepnet_jax.tasks.classifier import train as classifier
from prepnet_jax.tasks.predict import job as predict

ATOL = 1e-5  # the same model on the same pixels; only XLA's batch-1 vs batch-8 rounding differs
TINY = {"num_patients": 24, "image_size": 48}


# --- shared with test_serve*.py ------------------------------------------------------------------

def write_run_config(workdir, config) -> None:
  """config.json as main.py writes it (tests call the task functions directly)."""
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f, indent=2, default=str)


def make_model_workdir(workdir, **overrides):
  """An initialised, untrained tiny classifier saved like a classifier run: (config, state)."""
  config = tiny_classifier_config(**{"data.phantom_overrides": dict(TINY), **overrides})
  state = classifier_factory.create_classifier_state(config, classifier_factory.build_classifier(config), jax.random.key(1), 1, 1)
  checkpointing.Checkpointer(os.path.join(workdir, "best"), 1).save(1, jax.device_get(state), {})
  write_run_config(workdir, config)
  return config, state


def restore_state(workdir):
  """The trained state, restored with the documented recipe (not through `inference`)."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  state = classifier_factory.create_classifier_state(config, classifier_factory.build_classifier(config), jax.random.key(0), 1, 1)
  state, _ = checkpointing.Checkpointer(os.path.join(workdir, "best"), 1).restore(state)
  return state


def evaluation_path_probabilities(state, config, images, temperature: float = 1.0) -> np.ndarray:
  """`classify.predict_logits` on uint8 images (N, K ≥ 2 probabilities)."""
  source = [{"image": image, "label": 0} for image in images]
  preprocess = transforms.make_preprocess(config.preprocess, training=False)
  logits, _ = classify.predict_logits(state, source, preprocess, 8, sharding.make_mesh())
  if temperature == 1.0:
    return as_class_probs(classify.logits_to_probs(logits))
  return as_class_probs(calibration.probabilities(logits, temperature))


def phantom_ct_images(count: int) -> list[np.ndarray]:
  """Test-split CT slices of the tiny phantom (patients the classifier never trained on)."""
  source = datasets.get_source("phantom_ct/sars", "test", {"phantom_overrides": TINY})
  return [source[i]["image"] for i in range(count)]


def png_bytes(image: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
  return buffer.getvalue()


def predict_config(model_workdir, inputs: str, **overrides):
  config = load_config("predict")
  config.model_workdir, config.inputs = str(model_workdir), inputs
  for key, value in overrides.items():
    config[key] = value
  return config


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ct_model(tmp_path_factory):
  """A tiny CT classifier trained for one epoch on the phantom: (workdir, config, state)."""
  workdir = tmp_path_factory.mktemp("ct_model")
  config = tiny_classifier_config(num_epochs=1, **{"data.phantom_overrides": dict(TINY)})
  train = classify.load_split(config, config.data.train, "train")
  val = classify.load_split(config, config.data.train, "val")
  classifier.fit(config, str(workdir), train, val)
  write_run_config(workdir, config)
  return workdir, config, restore_state(str(workdir))


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
  """A phantom CT volume as a NIfTI file stored in DICOM order, and its RAS+ HU array."""
  study = phantom.generate_volumes("mosmed", seed=3, num_patients=1)[0]
  path = tmp_path_factory.mktemp("volume") / "study.nii.gz"
  export_ct.volume_to_nifti(study["volume_hu"], study["spacing"], orientation="flipped").to_filename(str(path))
  ras = np.asarray(study["volume_hu"], np.float32)[::-1, ::-1, ::-1].transpose(2, 1, 0)
  return path, ras


def _ct_dicom(path, volume_ras) -> np.ndarray:
  """A CT slice as DICOM, HU = 2·stored − 1024, multi-valued window (lung first); expected uint8."""
  hu = np.clip(np.rint(volume_ras[:, :, volume_ras.shape[2] // 2] / 2) * 2, -1024, 3000)  # even: exact
  stored = ((hu + 1024) / 2).astype(np.uint16)
  predict.write_dicom(path, stored, "CT", slope=2.0, intercept=-1024.0,
                      window=([-600.0, 40.0], [1500.0, 400.0]), bits_stored=12)
  return transforms.window_ct(hu, -600.0, 1500.0)[..., None]


def _monochrome1_dicom(path, image: np.ndarray, modality: str) -> np.ndarray:
  """uint8 pixels stored inverted (MONOCHROME1) with value = 0.5·stored − 100; the identity window
  (LINEAR_EXACT 127.5/255: v → v for v in 0..255; a non-CT modality, since CT ignores the header)."""
  stored = ((255 - image[..., 0].astype(np.int32) + 100) * 2).astype(np.uint16)
  predict.write_dicom(path, stored, modality, slope=0.5, intercept=-100.0, window=(127.5, 255.0),
                      photometric="MONOCHROME1", VOILUTFunction="LINEAR_EXACT")
  return image


def _records(workdir) -> dict[str, dict]:
  out = os.path.join(workdir, "predictions")
  records = {}
  for name in os.listdir(out):
    if name.endswith(".json") and name != "summary.json":
      with open(os.path.join(out, name)) as f:
        record = json.load(f)
      records[os.path.basename(record["file"])] = record
  return records


def _image_probabilities(record) -> np.ndarray:
  return np.asarray([list(image["probabilities"].values()) for image in record["images"]])


# --- tests ---------------------------------------------------------------------------------------

def test_every_format_matches_the_evaluation_path_and_bad_files_are_reported(ct_model, volume, tmp_path):
  model_dir, config, state = ct_model
  volume_path, ras = volume
  inputs = tmp_path / "inputs"
  inputs.mkdir()
  png, jpeg, mono = phantom_ct_images(3)
  (inputs / "slice.png").write_bytes(png_bytes(png))
  Image.fromarray(jpeg[..., 0]).save(inputs / "slice.jpg", quality=90)
  expected = {"slice.png": [png], "slice.jpg": [image_folder.decode_image(inputs / "slice.jpg")]}
  expected["ct_no_extension"] = [_ct_dicom(inputs / "ct_no_extension", ras)]  # typed by content
  expected["inverted.dcm"] = [_monochrome1_dicom(inputs / "inverted.dcm", mono, "OT")]  # modality unknown
  shutil.copy(volume_path, inputs / "study.nii.gz")
  expected["study.nii.gz"] = [s[..., None] for s in nifti.mosmed_slices(ras)]
  (inputs / "notes.png").write_text("not an image at all\n")
  (inputs / "truncated.png").write_bytes(png_bytes(png)[:200])
  (inputs / "tiny.png").write_bytes(png_bytes(png[:12, :12]))

  workdir = tmp_path / "run"
  summary = predict.run(predict_config(model_dir, str(inputs)), str(workdir))

  assert (summary["n_ok"], summary["n_failed"]) == (5, 3)
  reasons = {os.path.basename(f["file"]): f["reason"] for f in summary["failed"]}
  assert "not an image" in reasons["notes.png"] and "notes.png" in reasons["notes.png"]
  assert "truncated" in reasons["truncated.png"]
  assert "12×12 px" in reasons["tiny.png"] and "between 32 and 8192" in reasons["tiny.png"]
  records = _records(workdir)
  assert set(records) == set(expected)
  for name, images in expected.items():
    record = records[name]
    got = _image_probabilities(record)
    want = evaluation_path_probabilities(state, config, images)
    np.testing.assert_allclose(got, want, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(list(record["probabilities"].values()), want.mean(0), atol=ATOL)
    assert record["temperature"] == 1.0 and record["calibrated"] is False
    assert record["temperature_source"].startswith("none (uncalibrated: no ")
  assert records["ct_no_extension"]["format"] == "dicom" and records["ct_no_extension"]["modality"] == "ct"
  assert any("MONOCHROME1" in note for note in records["inverted.dcm"]["notes"])
  assert records["study.nii.gz"]["aggregation"] == "mean over slices"
  assert [i["image"] for i in records["study.nii.gz"]["images"]] == [
      f"slice {k}" for k in nifti.slice_indices(ras.shape[2])]
  # Grad-CAM overlays: one per image at the model's input size, coloured (not gray).
  overlay = np.asarray(Image.open(workdir / "predictions" / records["slice.png"]["images"][0]["gradcam_png"]))
  assert overlay.shape == (32, 32, 3)
  assert np.abs(overlay[..., 0].astype(int) - overlay[..., 2]).max() > 20
  with open(workdir / "predictions" / "predictions.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 + 3 + 3  # one per image, three slices for the volume, one per failed file
  assert sorted(r["status"] for r in rows).count("failed") == 3
  ok_row = next(r for r in rows if r["file"].endswith("slice.png"))
  assert float(ok_row["p_COVID"]) == pytest.approx(records["slice.png"]["probabilities"]["COVID"], abs=1e-6)


def test_fitted_temperature_from_the_calibration_report_is_applied(ct_model, tmp_path):
  model_dir, config, state = ct_model
  calibrated_dir = tmp_path / "model"
  shutil.copytree(model_dir, calibrated_dir)
  os.makedirs(calibrated_dir / "reports", exist_ok=True)
  with open(calibrated_dir / inference.CALIBRATION_FILE, "w") as f:
    json.dump({"temperature": 2.5, "n_bins": 15}, f)
  image = phantom_ct_images(1)[0]
  (tmp_path / "slice.png").write_bytes(png_bytes(image))
  predict.run(predict_config(calibrated_dir, str(tmp_path / "slice.png")), str(tmp_path / "run"))
  record = _records(tmp_path / "run")["slice.png"]
  assert record["temperature"] == 2.5 and record["calibrated"] is True
  assert record["temperature_source"] == os.path.join(str(calibrated_dir), inference.CALIBRATION_FILE)
  want = evaluation_path_probabilities(state, config, [image], temperature=2.5)
  np.testing.assert_allclose(_image_probabilities(record), want, atol=ATOL)
  uncalibrated = evaluation_path_probabilities(state, config, [image])
  assert np.abs(want - uncalibrated).max() > 1e-3  # T = 2.5 really changed them


def test_ct_inputs_to_a_cxr_model_fail_per_file_and_the_rest_is_predicted(volume, tmp_path):
  model_dir = tmp_path / "cxr_model"
  model_dir.mkdir()
  config, state = make_model_workdir(str(model_dir), **{"data.train": "phantom_cxr/covidx"})
  volume_path, ras = volume
  cxr = datasets.get_source("phantom_cxr/ulm", "test", {"phantom_overrides": TINY})[0]["image"]
  _ct_dicom(tmp_path / "ct.dcm", ras)
  _monochrome1_dicom(tmp_path / "dx.dcm", cxr, "DX")
  inputs = [str(volume_path), str(tmp_path / "ct.dcm"), str(tmp_path / "dx.dcm"), "phantom:cxr"]
  summary = predict.run(predict_config(model_dir, ",".join(inputs)), str(tmp_path / "run"))

  reasons = {os.path.basename(f["file"]): f["reason"] for f in summary["failed"]}
  assert set(reasons) == {"study.nii.gz", "ct.dcm"}
  assert "a CT volume (NIfTI)" in reasons["study.nii.gz"] and "trained on chest X-ray" in reasons["study.nii.gz"]
  assert "CT DICOM image" in reasons["ct.dcm"]
  assert summary["n_ok"] == 1 + len(os.listdir(tmp_path / "run" / "phantom_inputs" / "cxr")) == 5
  records = _records(tmp_path / "run")
  np.testing.assert_allclose(_image_probabilities(records["dx.dcm"]),
                             evaluation_path_probabilities(state, config, [cxr]), atol=ATOL)
  assert {r["format"] for r in records.values()} == {"image", "dicom"}


@pytest.fixture(scope="module")
def prepnet_run(tmp_path_factory):
  """A small prepnet run directory after its AE warm-up phase, written as `prepnet.RowRun` does:
  (workdir, row config, AE state)."""
  workdir = str(tmp_path_factory.mktemp("prepnet"))
  config = load_config("prepnet")
  config.preprocess.image_size = 32
  config.ae.depth = 3
  for net in (config.e_img, config.e_cov):
    net.name, net.width_multiplier, net.kwargs = "small_cnn", 0.5, {}
  config.rows = [dict(name="Auto-encoder", overrides={"schedule": "ae_only"})]
  rc = prepnet_layout.row_config(config, config.rows[0], 0)
  ae = prepnet_networks.make_ae_state(rc, jax.random.key(5), 1)
  ae = ae.replace(batch_stats=jax.tree_util.tree_map(lambda v: v + 0.3, ae.batch_stats))  # not identity-like
  img = prepnet_networks.make_classifier_state(rc, rc.e_img, len(rc.data.train), jax.random.key(6), 1, rc.optim.img)
  row_dir = os.path.join(workdir, "rows", prepnet_layout.row_slug("Auto-encoder"), "seed_0", "checkpoints")
  tree = {"ae": jax.device_get(ae), "img": jax.device_get(img), "cov": {}}
  checkpointing.Checkpointer(row_dir, 1).save(1, tree, {"done": ["ae_warmup"], "curves": {}})
  write_run_config(workdir, config)
  return workdir, rc, ae


def test_prepnet_autoencoder_is_applied_first_and_its_output_saved(ct_model, prepnet_run, tmp_path):
  model_dir, config, state = ct_model
  prepnet_dir, rc, ae = prepnet_run
  image = phantom_ct_images(1)[0]
  (tmp_path / "slice.png").write_bytes(png_bytes(image))
  run_config = predict_config(model_dir, str(tmp_path / "slice.png"), prepnet_workdir=prepnet_dir,
                              prepnet_row="Auto-encoder")
  summary = predict.run(run_config, str(tmp_path / "run"))
  assert summary["n_ok"] == 1 and "Auto-encoder" in summary["prepnet_autoencoder"]
  # Without a row name: the run's headline row, here its only row with an AE.
  default = predict.run(predict_config(model_dir, str(tmp_path / "slice.png"), prepnet_workdir=prepnet_dir),
                        str(tmp_path / "default_row"))
  assert "row 'Auto-encoder'" in default["prepnet_autoencoder"]

  ae_input = transforms.make_preprocess(rc.preprocess, training=False)({"image": image}, None)["image"]
  ae_output = jax.jit(functools.partial(ae.apply_fn, train=False))(ae.variables, ae_input[None])
  normalised = transforms.denormalize(np.asarray(ae_output)[0], rc.preprocess.value_range)
  record = _records(tmp_path / "run")["slice.png"]
  np.testing.assert_allclose(_image_probabilities(record),
                             evaluation_path_probabilities(state, config, [normalised]), atol=ATOL)
  assert np.abs(_image_probabilities(record) - evaluation_path_probabilities(state, config, [image])).max() > 1e-4
  side = np.asarray(Image.open(tmp_path / "run" / "predictions" / record["images"][0]["prepnet_png"]))
  assert side.shape == (48, 48 + 4 + 48, 3)  # original | gap | normalised, at the original's height
  np.testing.assert_array_equal(side[:, :48, 0], image[..., 0])
  np.testing.assert_array_equal(side[:, 52:], transforms.resize(normalised, (48, 48)))


def test_bad_configs_name_the_field(ct_model, prepnet_run, tmp_path):
  model_dir, _, _ = ct_model
  with pytest.raises(ValueError, match="config.model_workdir is empty"):
    predict.run(predict_config("", "x.png"), str(tmp_path))
  with pytest.raises(ValueError, match="config.inputs is empty"):
    predict.run(predict_config(model_dir, " , "), str(tmp_path))
  with pytest.raises(FileNotFoundError, match="config.json"):
    predict.run(predict_config(tmp_path, "x.png"), str(tmp_path))
  with pytest.raises(ValueError, match="prepnet_row='Nope' is not a row"):
    predict.run(predict_config(model_dir, "x.png", prepnet_workdir=prepnet_run[0], prepnet_row="Nope"),
                str(tmp_path))
  with pytest.raises(ValueError, match="model_seed=3 was not run"):
    predict.run(predict_config(model_dir, "x.png", prepnet_workdir=prepnet_run[0], prepnet_row="Auto-encoder",
                               model_seed=3), str(tmp_path))
  with pytest.raises(ValueError, match="config.arm='none' selects an augmentation arm"):
    predict.run(predict_config(model_dir, "x.png", arm="none"), str(tmp_path))
  with pytest.raises(ValueError, match="config.train_site='sars' selects a PrepNet E_cov"):
    predict.run(predict_config(model_dir, "x.png", train_site="sars"), str(tmp_path))


def test_prediction_uses_only_the_selected_model_but_features_may_use_a_training_checkpoint(tmp_path):
  """No `best/`: prediction refuses (never a stray state); the feature extractor's loader may
  take the latest training checkpoint."""
  config = tiny_classifier_config(**{"data.phantom_overrides": dict(TINY)})
  state = classifier_factory.create_classifier_state(config, classifier_factory.build_classifier(config),
                                                     jax.random.key(1), 1, 1)
  checkpointing.Checkpointer(os.path.join(tmp_path, "checkpoints"), 1).save(3, jax.device_get(state), {})
  write_run_config(tmp_path, config)
  with pytest.raises(FileNotFoundError, match="best-on-validation"):
    predict.run(predict_config(str(tmp_path), "x.png"), str(tmp_path / "out"))
  loaded = trained.load_classifier(str(tmp_path))
  assert loaded.checkpoint == "step 3"
  np.testing.assert_array_equal(jax.tree_util.tree_leaves(loaded.state.params)[0],
                                jax.tree_util.tree_leaves(jax.device_get(state.params))[0])
