"""NIfTI slicing and the real-CT TFDS builders, built from phantom exports in the real layouts."""

from __future__ import annotations

import logging
import pathlib

import nibabel as nib
import numpy as np
import pytest
import tensorflow_datasets as tfds

from prepnet_jax.data import ct_datasets, export_ct, phantom, splits, transforms
from prepnet_jax.data.readers import nifti
from prepnet_jax.data.image_folder import CorruptImageError

tfds.disable_progress_bar()


# ---------------------------------------------------------------------------------------------
# NIfTI


def _asymmetric_volume(shape=(40, 36, 12)) -> np.ndarray:
  """An (X, Y, Z) HU volume with no symmetry, so any axis flip or swap changes it."""
  x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
  return (-1000 + 7 * x + 13 * y ** 1.5 + 29 * z + (x * y) % 17).astype(np.int16)


def _save(data, affine, path, slope=None, inter=None):
  image = nib.Nifti1Image(data, affine)
  if slope is not None:
    image.header.set_slope_inter(slope, inter)
  nib.save(image, path)
  return path


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_flipped_and_permuted_storage_gives_identical_slices(tmp_path, suffix):
  ras = _asymmetric_volume()
  spacing = (0.7, 0.8, 2.5)
  affine = np.diag([*spacing, 1.0])
  # Same world volume stored as (Z, X, Y) with the X axis reversed: voxel (a, b, c) = RAS (nx-1-b, c, a).
  nx = ras.shape[0]
  stored = np.flip(ras, axis=0).transpose(2, 0, 1)
  index_map = np.array([[0, -1, 0, nx - 1], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], np.float64)
  hu_a, spacing_a = nifti.load_canonical(_save(ras, affine, tmp_path / f"a{suffix}"))
  path_b = _save(np.ascontiguousarray(stored), affine @ index_map, tmp_path / f"b{suffix}")
  hu_b, spacing_b = nifti.load_canonical(path_b)
  np.testing.assert_array_equal(hu_a, ras.astype(np.float32))
  np.testing.assert_array_equal(hu_b, hu_a)
  assert spacing_a == spacing_b == pytest.approx(spacing)
  kwargs = dict(positions=(0.25, "n//2", "3n//4"), crop=(3, 4))
  for slice_a, slice_b in zip(nifti.mosmed_slices(hu_a, **kwargs), nifti.mosmed_slices(hu_b, **kwargs)):
    np.testing.assert_array_equal(slice_a, slice_b)


def test_scl_slope_and_inter_give_hounsfield_units(tmp_path):
  raw = np.array([[[0, 1024], [2024, 4095]]], np.uint16)
  hu, _ = nifti.load_canonical(_save(raw, np.eye(4), tmp_path / "scaled.nii.gz", slope=1.0, inter=-1024.0))
  np.testing.assert_array_equal(hu[0], [[-1024, 0], [1000, 3071]])
  assert hu.dtype == np.float32


def test_mosmed_slices_positions_window_rotation_and_crop():
  volume = np.full((100, 120, 8), -1350.0, np.float32)  # (X, Y, Z), -1350 HU -> 0 in the lung window
  volume[90:, :, :] = 150.0   # patient's right (high x) -> 255
  volume[:, 110:, :] = -600.0  # anterior (high y) -> 128
  out = nifti.mosmed_slices(volume, crop=(0, 0))
  assert [s.shape for s in out] == [(120, 100)] * 3
  image = out[0]
  # Default view: anterior at the top rows, patient's right on the right columns.
  assert (image[:10, :90] == 128).all() and (image[10:, 90:] == 255).all() and image[50, 50] == 0
  radiological = nifti.mosmed_slices(volume, crop=(0, 0), rotate_k=-1, flip_ud=True)[0]
  np.testing.assert_array_equal(radiological, image[:, ::-1])
  cropped = nifti.mosmed_slices(volume)[1]
  np.testing.assert_array_equal(cropped, image[45:75, 25:75])
  assert nifti.slice_indices(8) == [2, 4, 6] and nifti.slice_indices(41, (0.25, 0.5, 0.75)) == [10, 20, 30]
  assert nifti.slice_indices(10, ("2*n//3", 1.0, 3)) == [6, 9, 3]
  with pytest.raises(ValueError, match="leaves nothing"):
    nifti.mosmed_slices(volume, crop=(50, 10))
  with pytest.raises(ValueError, match="'n/2'"):
    nifti.slice_indices(8, ("n/2",))


def test_load_canonical_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
    nifti.load_canonical(tmp_path / "missing.nii.gz")
  (tmp_path / "broken.nii.gz").write_bytes(b"not a nifti file")
  with pytest.raises(ValueError, match="broken.nii.gz"):
    nifti.load_canonical(tmp_path / "broken.nii.gz")


# ---------------------------------------------------------------------------------------------
# Phantom exports


SARS_SIZE = dict(num_patients=24, slices_per_patient=2, image_size=32)
UCSD_SIZE = dict(num_patients=24, slices_per_patient=3, image_size=32)
MOSMED_SIZE = dict(num_patients=12, volume_size=96)


@pytest.fixture(scope="module")
def mosmed_volumes():
  return phantom.generate_volumes("mosmed", seed=0, **MOSMED_SIZE)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  root = tmp_path_factory.mktemp("exports")
  return {
      "sars": export_ct.export_sars_layout(root / "sars", seed=0, **SARS_SIZE),
      "ucsd": export_ct.export_ucsd_layout(root / "ucsd", seed=0, **UCSD_SIZE),
      "mosmed": export_ct.export_mosmed_layout(root / "mosmed", seed=0, **MOSMED_SIZE),
  }


def _build(name, manual_dir, data_dir, config=None):
  kwargs = {} if config is None else {"config": config}
  builder = tfds.builder(name, data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(file_format="array_record",
                               download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def _read(builder) -> dict[str, list[dict]]:
  out = {}
  for split in splits.SPLITS:
    source = builder.as_data_source(split=split)
    out[split] = [source[i] for i in range(len(source))]
  return out


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def test_mosmed_export_orientations_read_back_identically(tmp_path):
  size = dict(num_patients=1, volume_size=96)
  volume = phantom.generate_volumes("mosmed", **size)[0]
  canonical = export_ct.export_mosmed_layout(tmp_path / "c", orientation="canonical", **size)
  flipped = export_ct.export_mosmed_layout(tmp_path / "f", orientation="flipped", suffix=".nii", **size)
  hu_c, spacing_c = nifti.load_canonical(next(canonical.rglob("*.nii.gz")))
  hu_f, spacing_f = nifti.load_canonical(next(flipped.rglob("*.nii")))
  np.testing.assert_array_equal(hu_c, hu_f)
  assert spacing_c == spacing_f == pytest.approx(volume["spacing"][::-1])
  affine_c = nib.load(next(canonical.rglob("*.nii.gz"))).affine
  assert not np.array_equal(nib.load(next(flipped.rglob("*.nii"))).affine, affine_c)
  # The phantom volume's axial slices are radiological (x index 0 = patient's right); the default
  # slicing mirrors them (patient's left on the image left) and counts slices from the feet.
  nz = volume["volume_hu"].shape[0]
  for index, image in zip(nifti.slice_indices(nz), nifti.mosmed_slices(hu_c)):
    expected = transforms.window_ct(volume["volume_hu"][nz - 1 - index], -600, 1500)[45:-45, 25:-25][:, ::-1]
    np.testing.assert_array_equal(image, expected)


# ---------------------------------------------------------------------------------------------
# Builders


def test_sars_builder_patient_prefix(exports, tmp_path):
  arrays = phantom.generate_site("ct", "sars", seed=0, **SARS_SIZE)
  builder = _build("sars_cov2_ct/patient_prefix", exports["sars"], tmp_path)
  data = _read(builder)
  assert sum(len(v) for v in data.values()) == len(arrays["label"])
  phantom_label = {p.replace("-", ""): int(l) for p, l in zip(arrays["patient"], arrays["label"])}
  patients_by_split = {s: {_text(ex["patient"]) for ex in examples} for s, examples in data.items()}
  splits.assert_disjoint(patients_by_split)
  assert set().union(*patients_by_split.values()) == set(phantom_label)
  for split, examples in data.items():
    for ex in examples:
      patient, filename = _text(ex["patient"]), _text(ex["filename"])
      assert ex["label"] == phantom_label[patient]
      assert filename.startswith("COVID/" if ex["label"] == 1 else "non-COVID/")
      assert splits.assign_split(patient) == split
      assert ex["image"].dtype == np.uint8 and ex["image"].shape[-1] == arrays["image"].shape[-1]
  assert len({ex["image"].shape for ex in data["train"]}) > 1  # sizes vary like the real data


def test_sars_builder_default_uses_file_stems_and_skips_corrupt(exports, tmp_path):
  manual = tmp_path / "manual"
  for path in exports["sars"].rglob("*.png"):
    target = manual / path.relative_to(exports["sars"])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes())
  total = len(list(manual.rglob("*.png")))
  (manual / "non-COVID" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  data = _read(_build("sars_cov2_ct", manual, tmp_path / "tfds"))
  examples = [ex for v in data.values() for ex in v]
  assert len(examples) == total
  assert all(_text(ex["patient"]) == pathlib.Path(_text(ex["filename"])).stem for ex in examples)
  strict = ct_datasets.SarsCov2CtConfig(name="strict", on_corrupt="error")
  with pytest.raises(CorruptImageError, match="zz_broken.png"):
    _build("sars_cov2_ct", manual, tmp_path / "tfds_strict", config=strict)


def test_ucsd_builder_official_split_is_honoured_and_leaks_are_logged(exports, tmp_path, caplog):
  manual = exports["ucsd"]
  listed = {}
  for class_dir in ("COVID", "NonCOVID"):
    for split in splits.SPLITS:
      for name in (manual / "Data-split" / class_dir / f"{split}CT_{class_dir}.txt").read_text().split():
        listed[f"Images-processed/CT_{class_dir}/{name}"] = split
  assert {pathlib.Path(n).suffix for n in listed} == {".png", ".jpg"}
  with caplog.at_level(logging.WARNING):
    data = _read(_build("ucsd_covid_ct/official", manual, tmp_path))
  built = {_text(ex["filename"]): split for split, examples in data.items() for ex in examples}
  assert built == listed
  for examples in data.values():
    for ex in examples:
      assert ex["label"] == int("CT_COVID/" in _text(ex["filename"]))
  leaks = ct_datasets.find_patient_leaks({s: [_text(ex["patient"]) for ex in v] for s, v in data.items()})
  assert leaks, "an image-level official split of multi-slice patients must leak"
  assert f"{len(leaks)} patients appear in more than one split" in caplog.text


def test_ucsd_builder_patient_resplit_is_disjoint(exports, tmp_path):
  data = _read(_build("ucsd_covid_ct/patient", exports["ucsd"], tmp_path))
  by_split = {s: [_text(ex["patient"]) for ex in v] for s, v in data.items()}
  splits.assert_disjoint(by_split)
  assert ct_datasets.find_patient_leaks(by_split) == {}
  assert sum(len(v) for v in data.values()) == len(list((exports["ucsd"] / "Images-processed").rglob("*.*")))


def test_mosmed_builder(mosmed_volumes, exports, tmp_path):
  builder = _build("mosmed", exports["mosmed"], tmp_path)
  data = _read(builder)
  examples = [ex for v in data.values() for ex in v]
  assert len(examples) == 3 * len(mosmed_volumes)
  splits.assert_disjoint({s: [_text(ex["patient"]) for ex in v] for s, v in data.items()})
  slices_seen = {}
  for ex in examples:
    number = int(_text(ex["patient"]).split("_")[1])
    study = mosmed_volumes[number - 1]
    assert ex["severity"] == study["severity"] and ex["label"] == int(study["severity"] > 0)
    assert _text(ex["filename"]) == f"studies/CT-{study['severity']}/study_{number:04d}.nii.gz"
    assert ex["image"].shape == (96 - 90, 96 - 50, 1) and ex["image"].dtype == np.uint8
    slices_seen.setdefault(number, []).append(ex["slice_index"])
  for number, seen in slices_seen.items():
    assert sorted(seen) == nifti.slice_indices(mosmed_volumes[number - 1]["volume_hu"].shape[0])


def test_mosmed_builder_reads_nii_in_any_storage_order(mosmed_volumes, exports, tmp_path):
  manual = tmp_path / "manual"
  for path in exports["mosmed"].rglob("*.nii.gz"):
    target = manual / path.relative_to(exports["mosmed"])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes())
  first = next(manual.rglob("study_0001.nii.gz"))
  first.unlink()
  study = mosmed_volumes[0]
  flipped = first.with_name("study_0001.nii")
  nib.save(export_ct.volume_to_nifti(study["volume_hu"], study["spacing"], "flipped"), flipped)

  def first_study(manual_dir, data_dir):
    examples = [ex for v in _read(_build("mosmed", manual_dir, data_dir)).values() for ex in v]
    assert len(examples) == 3 * len(mosmed_volumes)
    study_examples = [ex for ex in examples if _text(ex["patient"]) == "study_0001"]
    return sorted(study_examples, key=lambda ex: ex["slice_index"])

  rebuilt = first_study(manual, tmp_path / "tfds")
  original = first_study(exports["mosmed"], tmp_path / "tfds_original")
  assert [_text(ex["filename"]) for ex in rebuilt] == [flipped.relative_to(manual).as_posix()] * 3
  for a, b in zip(rebuilt, original, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_mosmed_positive_severities_are_configurable(exports, tmp_path):
  config = ct_datasets.MosmedConfig(name="severe_only", positive_severities=(3, 4), positions=("n//2",))
  data = _read(_build("mosmed", exports["mosmed"], tmp_path, config=config))
  examples = [ex for v in data.values() for ex in v]
  assert len(examples) == MOSMED_SIZE["num_patients"]
  assert all(ex["label"] == int(ex["severity"] >= 3) for ex in examples)
  assert {ex["severity"] for ex in examples} >= {0, 3}


def test_missing_or_malformed_downloads_say_what_was_expected(exports, tmp_path):
  with pytest.raises(AssertionError, match="Images-processed/CT_COVID"):
    _build("ucsd_covid_ct/official", tmp_path / "nowhere", tmp_path / "tfds")
  only_covid = tmp_path / "sars_half"
  (only_covid / "COVID").mkdir(parents=True)
  (only_covid / "COVID" / "a.png").write_bytes(next(exports["sars"].glob("COVID/*.png")).read_bytes())
  with pytest.raises(ct_datasets.ManualDownloadError, match=r"sars_half/non-COVID with PNG/JPEG"):
    _build("sars_cov2_ct", only_covid, tmp_path / "tfds")
  zipped = tmp_path / "ucsd_zipped"
  (zipped / "Images-processed").mkdir(parents=True)
  (zipped / "Images-processed" / "CT_COVID.zip").write_bytes(b"PK")
  with pytest.raises(ct_datasets.ManualDownloadError, match=r"PNG/JPEG files \(unzip .*CT_COVID\.zip"):
    _build("ucsd_covid_ct/official", zipped, tmp_path / "tfds")
  no_split = tmp_path / "ucsd_nosplit"
  (no_split / "Images-processed").mkdir(parents=True)
  for class_dir in ("CT_COVID", "CT_NonCOVID"):
    target = no_split / "Images-processed" / class_dir
    target.mkdir()
    source = next((exports["ucsd"] / "Images-processed" / class_dir).iterdir())
    (target / source.name).write_bytes(source.read_bytes())
  with pytest.raises(ct_datasets.ManualDownloadError, match=r"Data-split/COVID/trainCT_COVID.txt"):
    _build("ucsd_covid_ct/official", no_split, tmp_path / "tfds")
  wrong = tmp_path / "mosmed_wrong"
  (wrong / "scans").mkdir(parents=True)
  (wrong / "scans" / "study_0001.nii.gz").write_bytes(b"")
  with pytest.raises(ct_datasets.ManualDownloadError, match=r"studies/CT-0 \.\.\. CT-4"):
    _build("mosmed", wrong, tmp_path / "tfds")
