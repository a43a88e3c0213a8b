"""DICOM grey levels: pydicom's own modality and VOI LUTs for X-rays, the model's training window
for CT, and folders of CT slices read as one volume per series."""

from __future__ import annotations

import json
import os
import pathlib
import random
import warnings

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import generate_uid

from prepnet_jax.data import export_ct, phantom, readers
from prepnet_jax.data.readers import nifti
from prepnet_jax.eval import inference
from prepnet_jax.tasks.predict import job as predict
from test_predict import make_model_workdir, phantom_ct_images, png_bytes, predict_config

TRAINING_WINDOW = (-500.0, 1020.0)  # 255 / 1020 = 0.25: exact in float32 and float64
OPTIONS = readers.ReadOptions()


def _stored(shape=(32, 32), bits: int = 12, dtype=np.uint16, seed: int = 0) -> np.ndarray:
  """A smooth gradient plus noise covering most of the `bits`-bit range."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[:shape[0], :shape[1]]
  ramp = (x + 2 * y) / (shape[1] + 2 * shape[0] - 3)
  values = ramp * 0.9 * 2**bits + rng.integers(0, 2**bits // 20, shape)
  if dtype == np.int16:
    values = values - 2**(bits - 1)
  return values.astype(dtype)


def _pydicom_values(path) -> np.ndarray:
  """What pydicom gives: apply_voi_lut(apply_modality_lut(pixels))."""
  ds = pydicom.dcmread(path)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pydicom warns that a VOI LUT gets float (here integral) input
    return apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)


def _display(values: np.ndarray, low: float, high: float) -> np.ndarray:
  """The documented VOI output range → 0..255 mapping."""
  return np.rint(np.clip((values - low) * (255.0 / (high - low)), 0, 255)).astype(np.uint8)


def _read(path, options: readers.ReadOptions = OPTIONS) -> tuple[np.ndarray, list[str]]:
  loaded = readers.read_input(str(path), options)
  assert len(loaded.images) == 1 and loaded.images[0].image.shape[-1] == 1
  return loaded.images[0].image[..., 0], loaded.notes


def _windowed(hu: np.ndarray, level: float, width: float) -> np.ndarray:
  """HU windowing written out here, independent of the library: level ± width/2 → 0..255."""
  return np.rint(np.clip((hu - (level - width / 2)) * (255.0 / width), 0, 255)).astype(np.uint8)


# --- X-rays: pydicom's VOI LUT ------------------------------------------------------------------

def test_voi_lut_sequence_is_applied_as_pydicom_does_and_preferred_to_the_window(tmp_path):
  stored = _stored()
  entries, first = 3500, 300
  lut = (np.rint(4000 * (np.arange(entries) / (entries - 1)) ** 0.5) + 50).astype(np.uint16)
  item = Dataset()
  item.add_new("LUTDescriptor", "US", [entries, first, 16])
  item.add_new("LUTData", "OW", lut.tobytes())
  predict.write_dicom(tmp_path / "lut.dcm", stored, "CR", window=(1000.0, 200.0), bits_stored=12,
                      VOILUTSequence=[item])
  image, notes = _read(tmp_path / "lut.dcm")

  want = _display(_pydicom_values(tmp_path / "lut.dcm"), lut.min(), lut.max())
  np.testing.assert_array_equal(image, want)
  assert len(np.unique(image)) > 100  # the LUT really spread the values (not a constant image)
  assert any("VOI LUT Sequence" in note for note in notes)
  assert not any("window (first" in note for note in notes)


def test_monochrome1_is_the_inverted_pydicom_result(tmp_path):
  stored = _stored(seed=1)
  predict.write_dicom(tmp_path / "m1.dcm", stored, "DX", slope=2.0, intercept=-100.0,
                      window=(3000.0, 5000.0), photometric="MONOCHROME1", bits_stored=12)
  image, notes = _read(tmp_path / "m1.dcm")

  low, high = 0 * 2.0 - 100.0, (2**12 - 1) * 2.0 - 100.0  # pydicom's LINEAR output range: unsigned 12 bits, rescaled
  want = 255 - _display(_pydicom_values(tmp_path / "m1.dcm"), low, high)
  np.testing.assert_array_equal(image, want)
  assert image[0, 0] > image[-1, -1]  # stored low (top left) is dense in MONOCHROME1: bright after reading
  assert any("MONOCHROME1: inverted" in note for note in notes)


@pytest.mark.parametrize("function, dtype, bits, slope, intercept, window", [
    ("SIGMOID", np.int16, 16, 1.0, 0.0, (-1000.0, 3000.0)),
    ("LINEAR_EXACT", np.uint16, 12, 0.5, 10.0, (700.0, 900.0)),
    ("LINEAR", np.uint16, 12, 1.0, 0.0, ([2500.0, 1000.0], [3001.0, 500.0])),  # the first of two
], ids=["sigmoid", "linear_exact", "linear_multi_valued"])
def test_voi_lut_functions_match_pydicom(tmp_path, function, dtype, bits, slope, intercept, window):
  stored = _stored(bits=bits, dtype=dtype, seed=2)
  predict.write_dicom(tmp_path / "w.dcm", stored, "DX", slope=slope, intercept=intercept, window=window,
                      bits_stored=bits, VOILUTFunction=function)
  image, notes = _read(tmp_path / "w.dcm")

  low, high = (-2**(bits - 1), 2**(bits - 1) - 1) if dtype == np.int16 else (0, 2**bits - 1)
  want = _display(_pydicom_values(tmp_path / "w.dcm"), low * slope + intercept, high * slope + intercept)
  np.testing.assert_array_equal(image, want)
  assert 0 < len(np.unique(image)) and any(f"function {function}" in note for note in notes)
  if function == "SIGMOID":  # not the linear window: the sigmoid bends the ramp
    linear = _windowed(stored.astype(np.float64), *window)
    assert np.abs(image.astype(int) - linear).max() > 5


def test_config_window_replaces_the_xray_voi_lut(tmp_path):
  stored = _stored(seed=3)
  predict.write_dicom(tmp_path / "x.dcm", stored, "DX", window=(100.0, 50.0), bits_stored=12)
  image, notes = _read(tmp_path / "x.dcm", readers.ReadOptions(dicom_window=(2000.0, 4000.0)))
  np.testing.assert_array_equal(image, _windowed(stored.astype(np.float64), 2000.0, 4000.0))
  assert any("config.dicom_window" in note for note in notes)


# --- CT: the model's training window ------------------------------------------------------------

@pytest.fixture(scope="module")
def windowed_model(tmp_path_factory):
  """An initialised tiny CT classifier whose training config sets preprocess.ct_window."""
  workdir = tmp_path_factory.mktemp("windowed_model")
  make_model_workdir(str(workdir), **{"preprocess.ct_window": TRAINING_WINDOW})
  return workdir


def _ct_slice(path, hu: np.ndarray, **attributes) -> None:
  """HU = stored − 2048, with a soft-tissue window in the header (which CT reading ignores)."""
  predict.write_dicom(path, (hu + 2048).astype(np.uint16), "CT", intercept=-2048.0,
                      window=([40.0, -600.0], [400.0, 1500.0]), **attributes)


def test_ct_uses_the_training_window_not_the_header_and_the_config_overrides_it(windowed_model, tmp_path):
  hu = np.random.default_rng(4).integers(-1200, 900, (40, 36))
  _ct_slice(tmp_path / "ct.dcm", hu)

  predictor = inference.Predictor(str(windowed_model))
  image, notes = _read(tmp_path / "ct.dcm", predictor.options)
  np.testing.assert_array_equal(image, _windowed(hu, *TRAINING_WINDOW))
  assert any("CT window level -500 / width 1020 from preprocess.ct_window of the training config" in n
             and "40/400" in n and "not used" in n for n in notes)

  overridden = inference.Predictor.from_config(predict_config(windowed_model, "", dicom_window=(40.0, 510.0)))
  image, notes = _read(tmp_path / "ct.dcm", overridden.options)
  np.testing.assert_array_equal(image, _windowed(hu, 40.0, 510.0))
  assert any("from config.dicom_window" in n for n in notes)

  # A training config without preprocess.ct_window: the project's lung window, and the notes say so.
  window, source = inference.training_ct_window({"ct_window": ()}, "runs/x")
  assert window == readers.LUNG_WINDOW and "preprocess.ct_window = ()" in source


def test_enhanced_multiframe_ct_uses_the_middle_frame_and_its_functional_group_rescale(tmp_path):
  hu = np.random.default_rng(5).integers(-1024, 800, (3, 32, 32))
  predict.write_dicom(tmp_path / "mf.dcm", np.zeros((32, 32), np.uint16), "CT")
  ds = pydicom.dcmread(tmp_path / "mf.dcm")
  del ds.RescaleSlope, ds.RescaleIntercept  # enhanced CT keeps them in the functional groups
  ds.NumberOfFrames = 3
  ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
  transform = Dataset()
  transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = "1", "-1024", "HU"
  shared = Dataset()
  shared.PixelValueTransformationSequence = [transform]
  ds.SharedFunctionalGroupsSequence = [shared]
  ds.save_as(tmp_path / "mf.dcm")

  image, notes = _read(tmp_path / "mf.dcm", readers.ReadOptions(ct_window=TRAINING_WINDOW))
  np.testing.assert_array_equal(image, _windowed(hu[1], *TRAINING_WINDOW))
  assert any("middle frame 1" in n and "RescaleIntercept" in n for n in notes)


# --- DICOM series → volumes ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def study():
  """A small phantom CT volume (Z: head → feet, Y: anterior → posterior, X: right → left) in HU,
  its spacing (z, y, x) and the RAS+ array `nifti.load_canonical` gives for it."""
  volume = phantom.generate_volumes("mosmed", seed=3, num_patients=1, volume_size=128)[0]
  hu = np.asarray(volume["volume_hu"][::3], np.int16)  # every third slice: 12 slices
  dz, dy, dx = volume["spacing"]
  spacing = (3 * dz, dy, dx)
  return hu, spacing, hu[::-1, ::-1, ::-1].transpose(2, 1, 0).astype(np.float32)


def _write_series(folder: pathlib.Path, hu: np.ndarray, spacing, *, geometry: bool = True, seed: int = 0,
                  number: int = 1) -> str:
  """One file per slice in shuffled file-name order; axial LPS geometry (slice k at z = −k·dz)."""
  folder.mkdir(parents=True, exist_ok=True)
  uid = generate_uid()
  order = list(range(len(hu)))
  random.Random(seed).shuffle(order)
  for name_index, k in enumerate(order):
    attributes = dict(SeriesInstanceUID=uid, SeriesNumber=number, InstanceNumber=len(hu) - k)
    if geometry:
      attributes.update(ImagePositionPatient=[-100.0, -80.0, -k * spacing[0]],
                        ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                        PixelSpacing=[spacing[1], spacing[2]])
    _ct_slice(folder / f"S{number}_IM{name_index:04d}", hu[k], **attributes)
  return uid


def test_series_volume_is_sorted_by_position_and_equals_the_nifti_volume(study, tmp_path):
  hu, spacing, ras = study
  _write_series(tmp_path / "scan", hu, spacing)
  series, rest = readers.collect_dicom_series(sorted(str(p) for p in (tmp_path / "scan").iterdir()))
  assert len(series) == 1 and rest == [] and len(series[0].files) == len(hu)
  notes: list[str] = []
  np.testing.assert_array_equal(readers.load_dicom_series(series[0], OPTIONS, notes), ras)
  assert any("sorted by ImagePositionPatient" in n for n in notes)

  # Without positions: InstanceNumber order (here inferior first), said in the notes.
  _write_series(tmp_path / "bare", hu[:4], spacing, geometry=False)
  (bare,), _ = readers.collect_dicom_series(sorted(str(p) for p in (tmp_path / "bare").iterdir()))
  notes = []
  np.testing.assert_array_equal(readers.load_dicom_series(bare, OPTIONS, notes),
                                hu[:4][::-1, ::-1, ::-1].transpose(2, 1, 0))
  assert any("sorted by InstanceNumber" in n for n in notes)


def test_predicting_a_series_folder_equals_predicting_the_volume_as_nifti(study, windowed_model, tmp_path):
  hu, spacing, _ = study
  folder = tmp_path / "inputs"
  _write_series(folder / "scan", hu, spacing, seed=1, number=2)
  _write_series(folder / "scan", hu[2:6], spacing, seed=2, number=7)  # a second series in the same folder
  (folder / "slice.png").write_bytes(png_bytes(phantom_ct_images(1)[0]))
  nifti_path = tmp_path / "study.nii.gz"
  export_ct.volume_to_nifti(hu, spacing, orientation="flipped").to_filename(str(nifti_path))

  inputs = predict.expand_inputs(str(folder), str(tmp_path), 1)
  assert sorted(name for _, name in inputs) == ["scan/series_2", "scan/series_7", "slice.png"]

  config = predict_config(windowed_model, f"{folder},{nifti_path}")
  summary = predict.run(config, str(tmp_path / "run"))  # NIfTI too in the training window
  assert (summary["n_ok"], summary["n_failed"]) == (4, 0)
  records = {}
  for name in os.listdir(tmp_path / "run" / "predictions"):
    if name.endswith(".json") and name != "summary.json":
      record = json.loads((tmp_path / "run" / "predictions" / name).read_text())
      records[name.removesuffix(".json")] = record
  series, volume = records["scan_series_2"], records["study"]
  assert series["format"] == "dicom_series" and series["modality"] == "ct"
  assert [i["image"] for i in series["images"]] == [i["image"] for i in volume["images"]] == [
      f"slice {k}" for k in nifti.slice_indices(len(hu))]
  for got, want in zip(series["images"], volume["images"]):
    np.testing.assert_allclose(list(got["probabilities"].values()), list(want["probabilities"].values()),
                               atol=1e-6)
  assert any("from preprocess.ct_window of the training config" in n for n in series["notes"])
  assert any("(preprocess.ct_window of the training config" in n for n in volume["notes"])
  assert len(records["scan_series_7"]["images"]) == 3 and records["slice"]["format"] == "image"
  gradcam = np.asarray(Image.open(tmp_path / "run" / "predictions" / series["images"][0]["gradcam_png"]))
  assert gradcam.shape == (32, 32, 3)
