"""ImageFolderSource: every Pillow mode decodes to uint8 HxWxC, corrupt files never shift labels."""

from __future__ import annotations

import pathlib

import grain
import numpy as np
import pytest
from PIL import Image

from prepnet_jax.data.image_folder import ClassFolderError, CorruptImageError, ImageFolderSource, decode_image

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, (20, 24), dtype=np.uint8)
RGB = RNG.integers(0, 256, (18, 22, 3), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (16, 16, 4), dtype=np.uint8)
SIXTEEN = np.array([[0, 257 * 100, 65535], [257 * 7, 128, 40000]], dtype=np.uint16)


def _write_good(root: pathlib.Path) -> dict[str, tuple[int, int]]:
  """Writes one file per mode; returns filename -> (label, channels)."""
  (root / "covid").mkdir(parents=True)
  (root / "normal" / "scanner2").mkdir(parents=True)
  Image.fromarray(GRAY).save(root / "covid" / "p01_gray.png")
  Image.fromarray(RGB).save(root / "covid" / "p01_rgb.jpg", quality=95)
  palette = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
  palette.save(root / "covid" / "p02_palette.png")
  Image.fromarray(RGBA).save(root / "covid" / "p03_rgba.png")
  Image.fromarray(SIXTEEN).save(root / "normal" / "p04_sixteen.png")
  Image.fromarray(GRAY).save(root / "normal" / "p05_gray.jpg", quality=95)
  Image.fromarray(RGB).save(root / "normal" / "scanner2" / "p06_rgb.png")
  return {"covid/p01_gray.png": (0, 1), "covid/p01_rgb.jpg": (0, 3), "covid/p02_palette.png": (0, 3),
          "covid/p03_rgba.png": (0, 3), "normal/p04_sixteen.png": (1, 1), "normal/p05_gray.jpg": (1, 1),
          "normal/scanner2/p06_rgb.png": (1, 3)}


def _write_bad(root: pathlib.Path) -> list[str]:
  noise = RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)
  Image.fromarray(noise).save(root / "covid" / "p07_truncated.png")
  data = (root / "covid" / "p07_truncated.png").read_bytes()
  (root / "covid" / "p07_truncated.png").write_bytes(data[:len(data) // 2])
  (root / "normal" / "p08_empty.png").write_bytes(b"")
  (root / "normal" / "p09_text.png").write_text("this is not an image\n")
  (root / "normal" / "notes.txt").write_text("ignored: not an image extension\n")
  return ["covid/p07_truncated.png", "normal/p08_empty.png", "normal/p09_text.png"]


@pytest.fixture()
def folder(tmp_path):
  root = tmp_path / "data"
  good = _write_good(root)
  bad = _write_bad(root)
  return root, good, bad


def test_skip_keeps_exactly_the_good_files_with_their_labels(folder):
  root, good, bad = folder
  source = ImageFolderSource(root, on_corrupt="skip", domain=3)
  assert source.class_names == ["covid", "normal"]
  assert len(source) == len(good) == 7
  assert sorted(source.files) == sorted(good)
  for i in range(len(source)):
    example = source[i]
    label, channels = good[example["filename"]]
    assert example["label"] == label
    assert example["image"].dtype == np.uint8
    assert example["image"].ndim == 3 and example["image"].shape[-1] == channels
    assert example["domain"] == 3 and example["source"] == "data"
    assert example["patient"] == pathlib.Path(example["filename"]).stem
  np.testing.assert_array_equal(source.column("label"), [source[i]["label"] for i in range(len(source))])
  assert list(source.column("patient")) == [source[i]["patient"] for i in range(len(source))]
  assert sorted(pathlib.Path(p).relative_to(root).as_posix() for p, _ in source.skipped) == bad
  report = source.report()
  assert "7 images (covid=4, normal=3)" in report and "3 skipped" in report
  assert all(name in report for name in bad)


def test_decoded_values_per_mode(folder):
  root, _, _ = folder
  np.testing.assert_array_equal(decode_image(root / "covid" / "p01_gray.png")[..., 0], GRAY)
  np.testing.assert_array_equal(decode_image(root / "covid" / "p03_rgba.png"), RGBA[..., :3])
  np.testing.assert_array_equal(decode_image(root / "normal" / "p04_sixteen.png")[..., 0],
                                [[0, 100, 255], [7, 0, 156]])
  palette = Image.open(root / "covid" / "p02_palette.png")
  assert palette.mode == "P"
  np.testing.assert_array_equal(decode_image(root / "covid" / "p02_palette.png"),
                                np.asarray(palette.convert("RGB")))
  jpeg = Image.open(root / "covid" / "p01_rgb.jpg")
  assert jpeg.mode == "RGB"
  np.testing.assert_array_equal(decode_image(root / "covid" / "p01_rgb.jpg"), np.asarray(jpeg))
  assert Image.open(root / "normal" / "p04_sixteen.png").mode == "I;16"


def test_error_mode_names_the_file(folder):
  root, _, _ = folder
  with pytest.raises(CorruptImageError, match=r"p07_truncated\.png"):
    ImageFolderSource(root, on_corrupt="error")
  with pytest.raises(CorruptImageError, match=r"p08_empty\.png"):
    ImageFolderSource(root, class_names=["normal"], class_folders={"normal": "normal", "covid": ""},
                      on_corrupt="error")


def test_given_class_names_set_label_order(folder):
  root, good, _ = folder
  source = ImageFolderSource(root, class_names=["normal", "covid"])
  for i in range(len(source)):
    assert source.labels[i] == 1 - good[source.files[i]][0]
  with pytest.raises(ClassFolderError, match="viral"):
    ImageFolderSource(root, class_names=["normal", "viral"])


def test_label_files_csv_and_whitespace(folder, tmp_path):
  root, _, _ = folder
  (tmp_path / "labels.csv").write_text(
      "filename,label,patient\ncovid/p01_gray.png,covid,A\nnormal/p05_gray.jpg,normal,B\n"
      "normal/p08_empty.png,normal,C\ncovid/p03_rgba.png,covid,A\n")
  source = ImageFolderSource(root, label_file=tmp_path / "labels.csv")
  assert source.files == ["covid/p01_gray.png", "normal/p05_gray.jpg", "covid/p03_rgba.png"]
  assert source.labels == [0, 1, 0] and source.patients == ["A", "B", "A"]
  assert source.class_names == ["covid", "normal"] and len(source.skipped) == 1
  (tmp_path / "labels.txt").write_text("# patient filename label\nP1 normal/p04_sixteen.png 1\n"
                                       "P2 covid/p01_rgb.jpg 0\n")
  source = ImageFolderSource(root, label_file=tmp_path / "labels.txt", class_names=["neg", "pos"])
  assert source.labels == [1, 0] and source.patients == ["P1", "P2"]
  assert source[0]["image"].shape == (2, 3, 1)
  (tmp_path / "broken.txt").write_text("P1 normal/p04_sixteen.png\n")
  with pytest.raises(ValueError, match=r"broken\.txt row 1"):
    ImageFolderSource(root, label_file=tmp_path / "broken.txt")
  (tmp_path / "escape.txt").write_text("P1 ../secret.png 1\n")
  with pytest.raises(ValueError, match=r"relative to .*'\.\./secret\.png'"):
    ImageFolderSource(root, label_file=tmp_path / "escape.txt")


def test_patient_regex_and_parent(folder):
  root, _, _ = folder
  source = ImageFolderSource(root, patient_from="regex", patient_regex=r"(?P<patient>p\d+)_")
  assert sorted(set(source.patients)) == ["p01", "p02", "p03", "p04", "p05", "p06"]
  parent = ImageFolderSource(root, patient_from="parent")
  assert parent.patients[parent.files.index("normal/scanner2/p06_rgb.png")] == "scanner2"
  with pytest.raises(ValueError, match="does not match file"):
    ImageFolderSource(root, patient_from="regex", patient_regex=r"^zzz")


def test_grain_map_dataset_reads_the_source(folder):
  root, good, _ = folder
  source = ImageFolderSource(root)
  dataset = grain.MapDataset.source(source).map(lambda ex: (ex["filename"], ex["label"]))
  assert sorted(dataset) == sorted((name, label) for name, (label, _) in good.items())
  with pytest.raises(IndexError):
    source[len(source)]
