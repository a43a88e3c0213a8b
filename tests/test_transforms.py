"""Per-example transforms: bit-exactness against Pillow and the semantics of each random op."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image, ImageOps

from prepnet_jax.data import transforms as T


def _random_images(rng, count):
  """Uniform, sparse, narrow-normal, constant and heavily skewed histograms."""
  for i in range(count):
    h, w = rng.integers(1, 40, size=2)
    kind = i % 5
    if kind == 0:
      yield rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    elif kind == 1:
      yield (rng.integers(0, 3, (h, w, 3)) * rng.integers(0, 120)).astype(np.uint8)
    elif kind == 2:
      yield np.clip(rng.normal(100, rng.uniform(0.1, 30), (h, w, 3)), 0, 255).astype(np.uint8)
    elif kind == 3:
      yield np.full((h, w, 3), rng.integers(0, 256), np.uint8)
    else:
      yield (rng.random((h, w, 3)) ** rng.uniform(0.2, 8) * 255).astype(np.uint8)


def test_equalize_matches_pillow_exactly():
  rng = np.random.default_rng(0)
  for img in _random_images(rng, 1500):
    expected = np.asarray(ImageOps.equalize(Image.fromarray(img)))
    np.testing.assert_array_equal(T.equalize(img), expected)
    gray = img[..., :1]
    expected_gray = np.asarray(ImageOps.equalize(Image.fromarray(gray[..., 0])))
    np.testing.assert_array_equal(T.equalize(gray)[..., 0], expected_gray)


def test_equalize_constant_image_is_unchanged_and_rejects_float():
  img = np.full((5, 7, 3), 77, np.uint8)
  np.testing.assert_array_equal(T.equalize(img), img)
  with pytest.raises(TypeError, match="uint8"):
    T.equalize(img.astype(np.float32))


def test_luma_matches_pillow_l_conversion_and_keeps_float():
  rng = np.random.default_rng(1)
  for img in _random_images(rng, 200):
    expected = np.asarray(Image.fromarray(img).convert("L"))
    np.testing.assert_array_equal(T.luma(img)[..., 0], expected)
  pixel = np.array([[[1.0, 0.5, 0.25]]], np.float32)
  out = T.luma(pixel)
  assert out.dtype == np.float32 and out.shape == (1, 1, 1)
  np.testing.assert_allclose(out[0, 0, 0], 0.299 + 0.587 * 0.5 + 0.114 * 0.25, rtol=1e-6)


def test_set_channels():
  rng = np.random.default_rng(2)
  gray = rng.integers(0, 256, (4, 5), dtype=np.uint8)
  rgb = T.set_channels(gray, 3)
  assert rgb.shape == (4, 5, 3)
  assert all(np.array_equal(rgb[..., c], gray) for c in range(3))
  rgba = rng.integers(0, 256, (4, 5, 4), dtype=np.uint8)
  np.testing.assert_array_equal(T.set_channels(rgba, 3), rgba[..., :3])
  np.testing.assert_array_equal(T.set_channels(rgba, 1), T.luma(rgba[..., :3]))
  np.testing.assert_array_equal(T.set_channels(np.stack([gray, gray], -1), 1), gray[..., None])
  with pytest.raises(ValueError, match="channels must be 1 or 3"):
    T.set_channels(gray, 2)


@pytest.mark.parametrize("method", sorted(T.RESIZE_METHODS))
def test_resize_matches_pillow(method):
  rng = np.random.default_rng(3)
  img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
  for height, width in [(20, 30), (80, 41)]:
    expected = np.asarray(Image.fromarray(img).resize((width, height), T.RESIZE_METHODS[method]))
    np.testing.assert_array_equal(T.resize(img, (height, width), method), expected)
  hu = rng.normal(size=(37, 53, 1)).astype(np.float64)
  out = T.resize(hu, (20, 30), method)
  assert out.dtype == np.float32 and out.shape == (20, 30, 1)
  pil_float = Image.fromarray(hu[..., 0].astype(np.float32))
  expected = np.asarray(pil_float.resize((30, 20), T.RESIZE_METHODS[method]))
  np.testing.assert_array_equal(out[..., 0], expected)


def test_resize_rejects_unknown_method():
  with pytest.raises(ValueError, match="'area'.*bicubic"):
    T.resize(np.zeros((4, 4, 1), np.uint8), (2, 2), "area")


def test_window_ct_lung_window():
  hu = np.array([-3000, -1350, -600, 150, 2000], np.int16)
  np.testing.assert_array_equal(T.window_ct(hu, -600, 1500), [0, 0, 128, 255, 255])
  assert T.window_ct(hu, -600, 1500).dtype == np.uint8
  with pytest.raises(ValueError, match="width"):
    T.window_ct(hu, 40, 0)


def test_normalize_ranges_and_round_trip():
  img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=-1)
  unit = T.normalize(img, "unit")
  assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
  sym = T.normalize(img, "symmetric")
  assert sym.min() == -1.0 and sym.max() == 1.0
  raw = T.normalize(img, "raw")
  np.testing.assert_array_equal(raw, img.astype(np.float32))
  imagenet = T.normalize(img, "imagenet")
  np.testing.assert_allclose(imagenet[0, 0], [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225], rtol=1e-6)
  np.testing.assert_allclose(imagenet[-1, -1],
                             [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225], rtol=1e-6)
  gray = T.normalize(img[..., :1], "imagenet")
  np.testing.assert_allclose(gray[-1, -1, 0], (1 - 0.449) / 0.226, rtol=1e-6)
  for value_range in T.VALUE_RANGES:
    np.testing.assert_array_equal(T.denormalize(T.normalize(img, value_range), value_range), img)
    gray = img[..., :1]
    np.testing.assert_array_equal(T.denormalize(T.normalize(gray, value_range), value_range), gray)


def test_normalize_errors():
  with pytest.raises(ValueError, match=r"'zero_one'.*'unit', 'symmetric', 'imagenet', 'raw'"):
    T.normalize(np.zeros((2, 2, 3), np.uint8), "zero_one")
  with pytest.raises(TypeError, match="uint8"):
    T.normalize(np.zeros((2, 2, 3), np.float32), "unit")


def test_random_crop_offsets_stay_inside_the_margin():
  rows, cols = np.meshgrid(np.arange(240), np.arange(240), indexing="ij")
  img = np.stack([rows, cols], axis=-1).astype(np.int32)
  rng = np.random.default_rng(4)
  tops, lefts = set(), set()
  for _ in range(400):
    crop = T.random_crop_with_margin(rng, img, 224, margin=4)
    assert crop.shape == (224, 224, 2)
    tops.add(int(crop[0, 0, 0]))
    lefts.add(int(crop[0, 0, 1]))
  assert tops == set(range(4, 13)) and lefts == set(range(4, 13))
  with pytest.raises(ValueError, match="margin 9"):
    T.random_crop_with_margin(rng, img, 224, margin=9)


def test_random_flip():
  img = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
  rng = np.random.default_rng(5)
  np.testing.assert_array_equal(T.random_flip(rng, img, p=1.0), img[:, ::-1])
  np.testing.assert_array_equal(T.random_flip(rng, img, horizontal=False, vertical=True, p=1.0), img[::-1])
  np.testing.assert_array_equal(T.random_flip(rng, img, p=0.0), img)
  flips = sum(T.random_flip(rng, img)[0, 0, 0] == 3 for _ in range(1000))
  assert 430 < flips < 570


def test_random_affine_moves_a_blob_where_the_sampled_transform_says():
  size = 64
  img = np.zeros((size, size, 1), np.float32)
  blob = np.array([20.0, 40.0])
  rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
  img[..., 0] = np.exp(-((rows - blob[0]) ** 2 + (cols - blob[1]) ** 2) / (2 * 2.0 ** 2))
  for seed in range(5):
    out = T.random_affine(np.random.default_rng(seed), img, degrees=30, translate=0.1, scale=0.2, shear=10,
                          fill="constant")
    replay = np.random.default_rng(seed)
    angle = np.deg2rad(replay.uniform(-30, 30))
    shear = np.deg2rad(replay.uniform(-10, 10))
    zoom = replay.uniform(0.8, 1.2)
    shift = replay.uniform(-0.1, 0.1, size=2) * size
    forward = zoom * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array(
        [[1.0, 0.0], [np.tan(shear), 1.0]])
    centre = np.array([(size - 1) / 2] * 2)
    expected = forward @ (blob - centre) + centre + shift
    weights = out[..., 0]
    observed = np.array([(weights * rows).sum(), (weights * cols).sum()]) / weights.sum()
    np.testing.assert_allclose(observed, expected, atol=0.3)


def test_random_affine_identity_and_uint8():
  rng = np.random.default_rng(6)
  img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  assert T.random_affine(rng, img) is img
  out = T.random_affine(rng, img, degrees=20, fill="reflect")
  assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)
  with pytest.raises(ValueError, match="'edge'"):
    T.random_affine(rng, img, degrees=5, fill="edge")



def test_random_affine_warps_each_channel_alike_whether_or_not_they_are_equal():
  """Grey images replicated to 3 channels take the warp-once path: the same bytes as warping each
  channel; a colour image (channels differ) still warps every channel with the same transform."""
  rng = np.random.default_rng(3)
  grey = rng.integers(0, 256, (24, 24, 1), dtype=np.uint8)
  colour = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
  kwargs = dict(degrees=15, translate=0.1, scale=0.1)
  grey3 = T.random_affine(np.random.default_rng(9), np.repeat(grey, 3, axis=-1), **kwargs)
  grey1 = T.random_affine(np.random.default_rng(9), grey, **kwargs)
  np.testing.assert_array_equal(grey3, np.repeat(grey1, 3, axis=-1))
  out = T.random_affine(np.random.default_rng(9), colour, **kwargs)
  for c in range(3):
    np.testing.assert_array_equal(out[..., c], T.random_affine(np.random.default_rng(9), colour[..., c:c + 1],
                                                               **kwargs)[..., 0])

def test_random_brightness_contrast():
  rng = np.random.default_rng(7)
  img = rng.integers(50, 200, (32, 32, 3), dtype=np.uint8)
  np.testing.assert_array_equal(T.random_brightness_contrast(rng, img), img)
  brighter = [T.random_brightness_contrast(rng, img, brightness=0.5).mean() / img.mean() for _ in range(200)]
  assert 0.5 <= min(brighter) < 0.7 and 1.3 < max(brighter) <= 1.5
  gray = img[..., :1]
  ratios = []
  for _ in range(100):
    out = T.random_brightness_contrast(rng, gray, contrast=0.5)
    assert out.dtype == np.uint8
    # Contrast blends with the gray mean (no clipping in this range): mean kept, spread scaled.
    assert abs(out.mean() - gray.mean()) < 0.5
    ratios.append(out.std() / gray.std())
  assert 0.5 <= min(ratios) < 0.7 and 1.3 < max(ratios) <= 1.51


def _reference_eval_pipeline(img_rgb):
  """The thesis preprocessing written directly with Pillow: resize 224, equalize, ImageNet."""
  pil = ImageOps.equalize(Image.fromarray(img_rgb).resize((224, 224), Image.Resampling.BILINEAR))
  x = np.asarray(pil).astype(np.float32) / 255.0
  return (x - np.array(T.IMAGENET_MEAN, np.float32)) / np.array(T.IMAGENET_STD, np.float32)


def test_make_preprocess_eval_matches_pillow_pipeline_and_passes_keys_through():
  rng = np.random.default_rng(8)
  rgba = rng.integers(0, 256, (300, 200, 4), dtype=np.uint8)
  fn = T.make_preprocess(T.default_preprocess_config(), training=False)
  example = {"image": rgba, "label": 1, "patient": "p7", "domain": 2}
  out = fn(example, rng)
  assert out["image"].dtype == np.float32 and out["image"].shape == (224, 224, 3)
  np.testing.assert_allclose(out["image"], _reference_eval_pipeline(rgba[..., :3]), atol=1e-6)
  assert {k: out[k] for k in ("label", "patient", "domain")} == {"label": 1, "patient": "p7", "domain": 2}
  assert example["image"] is rgba


def test_make_preprocess_training_crop_grayscale_and_determinism():
  cfg = T.default_preprocess_config()
  cfg.image_size = 32
  cfg.grayscale = True
  cfg.augment.crop_resize = 40
  cfg.augment.crop_margin = 2
  cfg.augment.hflip = True
  cfg.augment.affine_degrees = 10.0
  cfg.augment.brightness = 0.2
  cfg.augment.contrast = 0.2
  fn = T.make_preprocess(cfg, training=True)
  img = np.random.default_rng(9).integers(0, 256, (50, 60, 3), dtype=np.uint8)
  a = fn({"image": img}, np.random.default_rng(1))["image"]
  b = fn({"image": img}, np.random.default_rng(1))["image"]
  c = fn({"image": img}, np.random.default_rng(2))["image"]
  assert a.shape == (32, 32, 3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  gray = T.denormalize(a, "imagenet")
  np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
  np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_make_preprocess_ct_window_single_channel():
  fn = T.make_preprocess(dict(image_size=8, channels=1, equalize=False, value_range="unit",
                              ct_window=(-600, 1500), resize_method="nearest"), training=False)
  hu = np.full((16, 16), -600, np.int16)
  hu[:, 8:] = 150
  out = fn({"image": hu}, np.random.default_rng(0))["image"]
  assert out.shape == (8, 8, 1)
  np.testing.assert_allclose(out[:, :4, 0], 128 / 255)
  np.testing.assert_allclose(out[:, 4:, 0], 1.0)


def test_make_preprocess_validation_errors():
  with pytest.raises(ValueError, match=r"value_range 'minus_one'.*'unit', 'symmetric', 'imagenet', 'raw'"):
    T.make_preprocess(dict(value_range="minus_one"), training=False)
  with pytest.raises(ValueError, match="image_sizes"):
    T.make_preprocess(dict(image_sizes=224), training=False)
  with pytest.raises(ValueError, match="crop_resize=230"):
    T.make_preprocess(dict(image_size=224, augment=dict(crop_resize=230, crop_margin=4)), training=True)
  with pytest.raises(ValueError, match="channels must be 1 or 3"):
    T.make_preprocess(dict(channels=4), training=False)
  with pytest.raises(ValueError, match=r"ct_window must be \(\) or \(level, width>0\), got \(40, 0\)"):
    T.make_preprocess(dict(ct_window=(40, 0)), training=False)
  fn = T.make_preprocess(dict(image_size=8), training=False)
  with pytest.raises(TypeError, match="ct_window"):
    fn({"image": np.zeros((8, 8), np.int16)}, np.random.default_rng(0))


def test_make_preprocess_pickles_for_grain_workers():
  fn = T.make_preprocess(dict(image_size=8, channels=1), training=True)
  restored = pickle.loads(pickle.dumps(fn))
  img = np.random.default_rng(10).integers(0, 256, (12, 12, 3), dtype=np.uint8)
  np.testing.assert_array_equal(restored({"image": img}, np.random.default_rng(0))["image"],
                                fn({"image": img}, np.random.default_rng(0))["image"])
