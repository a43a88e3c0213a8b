"""BigAug's stacked appearance augmentation (`transforms.random_appearance`) and its config fields."""

from __future__ import annotations

import numpy as np
import pytest

from configs import common
from helpers import load_config
from prepnet_jax.data import transforms as T
from prepnet_jax.runtime import config_checks
from prepnet_jax.tasks.config_vocabularies import VOCABULARIES

BIGAUG_FIELDS = ("gamma", "blur_sharpen", "noise", "low_resolution", "bigaug_probability")


def _high_frequency_energy(img: np.ndarray) -> float:
  """Spectral energy above half the Nyquist frequency (either axis), summed over channels."""
  x = img.astype(np.float64)
  spectrum = np.abs(np.fft.fft2(x - x.mean(axis=(0, 1)), axes=(0, 1))) ** 2
  fy = np.abs(np.fft.fftfreq(img.shape[0]))[:, None, None]
  fx = np.abs(np.fft.fftfreq(img.shape[1]))[None, :, None]
  return float(spectrum[(np.maximum(fy, fx) > 0.25).repeat(img.shape[2], axis=2)].sum())


def _texture(seed: int, shape=(48, 48, 1), low: int = 80, high: int = 176) -> np.ndarray:
  return np.random.default_rng(seed).integers(low, high, shape, dtype=np.uint8)


def test_all_fields_off_leaves_preprocess_bit_identical():
  old_fields = dict(hflip=True, affine_degrees=10.0, affine_translate=0.05, brightness=0.2, contrast=0.2)
  before = T.make_preprocess(dict(image_size=32, augment=old_fields), training=True)
  for probability in (0.0, 0.5, 1.0):
    cfg = T.default_preprocess_config()
    cfg.image_size = 32
    cfg.augment.update(old_fields, bigaug_probability=probability)
    after = T.make_preprocess(cfg, training=True)
    for seed in range(4):
      img = np.random.default_rng(100 + seed).integers(0, 256, (40, 36, 3), dtype=np.uint8)
      np.testing.assert_array_equal(after({"image": img}, np.random.default_rng(seed))["image"],
                                    before({"image": img}, np.random.default_rng(seed))["image"])
  # Off means off: the image object comes back and the generator is not advanced.
  rng, img = np.random.default_rng(0), _texture(0)
  assert T.random_appearance(rng, img, probability=1.0) is img
  assert rng.random() == np.random.default_rng(0).random()


def test_gamma_matches_the_formula_and_darkens_mid_tones_when_above_1():
  img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
  seen = set()
  for seed in range(12):
    out = T.random_appearance(np.random.default_rng(seed), img, gamma=0.7, probability=1.0)
    replay = np.random.default_rng(seed)
    assert replay.random() < 1.0  # the coin
    g = np.exp(replay.uniform(-0.7, 0.7))
    expected = np.rint(255 * (img / 255.0) ** g)
    assert np.abs(out.astype(int) - expected).max() <= 1  # float32 vs float64 rounding at .5
    assert np.mean(out == expected) > 0.95
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255  # end points are fixed
    mid_out = int(out.ravel()[128])  # input 128
    if g > 1:
      assert np.all(out <= img) and (mid_out < 128 or g < 1.02)
    else:
      assert np.all(out >= img) and (mid_out > 128 or g > 1 / 1.02)
    seen.add(bool(g > 1.05))
  assert seen == {True, False}


def test_noise_adds_a_shared_gaussian_field_of_the_drawn_std():
  flat = np.full((64, 64, 3), 128, np.uint8)
  for seed in range(5):
    out = T.random_appearance(np.random.default_rng(seed), flat, noise=0.05, probability=1.0)
    replay = np.random.default_rng(seed)
    replay.random()
    sigma = replay.uniform(0, 0.05) * 255
    assert out.dtype == np.uint8 and out.shape == flat.shape
    assert abs(out[..., 0].std() - sigma) < 0.1 * sigma + 0.3  # + rounding to integers
    np.testing.assert_array_equal(out[..., 0], out[..., 2])  # a grey slice stays grey
  colour = _texture(1, (32, 32, 3), 100, 150)
  out = T.random_appearance(np.random.default_rng(1), colour, noise=0.02, probability=1.0).astype(int)
  np.testing.assert_array_equal(out[..., 0] - colour[..., 0], out[..., 1] - colour[..., 1])
  assert out.std() > colour.std()


def test_low_resolution_removes_high_frequency_energy():
  img = _texture(2)
  shrunk = 0
  for seed in range(8):
    out = T.random_appearance(np.random.default_rng(seed), img, low_resolution=0.5, probability=1.0)
    replay = np.random.default_rng(seed)
    replay.random()
    side = round(48 * replay.uniform(0.5, 1.0))
    if side == 48:  # f rounded back to full size: nothing to do
      np.testing.assert_array_equal(out, img)
      continue
    shrunk += 1
    assert _high_frequency_energy(out) < 0.8 * _high_frequency_energy(img)
    assert abs(out.mean() - img.mean()) < 2  # detail lost, brightness kept
  assert shrunk >= 6


def test_blur_reduces_and_sharpening_raises_high_frequency_energy():
  img = _texture(3)
  energy = _high_frequency_energy(img)
  branches = set()
  for seed in range(12):
    out = T.random_appearance(np.random.default_rng(seed), img, blur_sharpen=1.5, probability=1.0)
    replay = np.random.default_rng(seed)
    replay.random()
    blur = replay.random() < 0.5
    sigma = replay.uniform(0.25, 1.5)
    # sigma = 0.25 barely touches the image (neighbour weight e^-8); from 0.6 on it is clear.
    if blur:
      assert _high_frequency_energy(out) < (0.5 if sigma > 0.6 else 1.0) * energy
    elif (alpha := replay.uniform(0, 1)) > 0.1:
      assert _high_frequency_energy(out) > (1.0 + alpha / 2 if sigma > 0.6 else 1.0) * energy
    branches.add((blur, sigma > 0.6))
  assert branches == {(True, True), (True, False), (False, True), (False, False)}


@pytest.mark.parametrize("shape", [(33, 47, 1), (20, 21, 3), (9, 9, 3), (1, 5, 1)])
def test_all_transforms_keep_uint8_and_shape_and_are_deterministic(shape):
  img = np.random.default_rng(4).integers(0, 256, shape, dtype=np.uint8)
  kwargs = dict(gamma=0.5, blur_sharpen=1.0, noise=0.05, low_resolution=0.4, probability=1.0)
  a = T.random_appearance(np.random.default_rng(7), img, **kwargs)
  b = T.random_appearance(np.random.default_rng(7), img, **kwargs)
  c = T.random_appearance(np.random.default_rng(8), img, **kwargs)
  assert a.dtype == np.uint8 and a.shape == shape
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_grey_fast_path_equals_per_channel_processing():
  grey = _texture(5, (24, 24, 1), 0, 256)
  kwargs = dict(gamma=0.5, blur_sharpen=1.0, noise=0.05, low_resolution=0.4, probability=1.0)
  for seed in range(3):
    one = T.random_appearance(np.random.default_rng(seed), grey, **kwargs)
    three = T.random_appearance(np.random.default_rng(seed), np.repeat(grey, 3, axis=-1), **kwargs)
    np.testing.assert_array_equal(three, np.repeat(one, 3, axis=-1))


def test_each_transform_fires_with_the_given_probability():
  img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
  kwargs = dict(gamma=0.5, blur_sharpen=1.0, noise=0.05, low_resolution=0.4)
  rng = np.random.default_rng(0)
  np.testing.assert_array_equal(T.random_appearance(rng, img, probability=0.0, **kwargs), img)
  changed = np.mean([not np.array_equal(T.random_appearance(rng, img, gamma=0.5, probability=0.5), img)
                     for _ in range(400)])
  assert 0.42 < changed < 0.58


def test_preprocess_applies_it_in_training_only():
  cfg = T.default_preprocess_config()
  cfg.image_size = 32
  cfg.augment.update(gamma=0.5, noise=0.05, bigaug_probability=1.0)
  img = _texture(6, (40, 40, 3), 0, 256)
  plain = T.make_preprocess(dict(image_size=32), training=True)
  off = plain({"image": img}, np.random.default_rng(0))["image"]
  train = T.make_preprocess(cfg, training=True)
  a = train({"image": img}, np.random.default_rng(0))["image"]
  assert a.dtype == np.float32 and a.shape == (32, 32, 3) and not np.array_equal(a, off)
  np.testing.assert_array_equal(a, train({"image": img}, np.random.default_rng(0))["image"])
  evaluation = T.make_preprocess(cfg, training=False)({"image": img}, np.random.default_rng(0))["image"]
  np.testing.assert_array_equal(evaluation, off)


def test_the_probability_is_the_configured_one_and_alone_augments_nothing():
  img = _texture(7, (24, 24, 3), 0, 256)
  outputs = []
  for probability in (0.0, T.BIGAUG_PROBABILITY, 0.9):
    augment = dict(gamma=0.5, noise=0.05, bigaug_probability=probability)
    fn = T.make_preprocess(dict(image_size=24, augment=augment), training=True)
    outputs.append([fn({"image": img}, np.random.default_rng(seed))["image"] for seed in range(6)])
  plain = T.make_preprocess(dict(image_size=24), training=False)({"image": img}, np.random.default_rng(0))["image"]
  for out in outputs[0]:  # probability 0: never applied
    np.testing.assert_array_equal(out, plain)
  assert not np.array_equal(outputs[0], outputs[1]) and not np.array_equal(outputs[1], outputs[2])
  assert not T.augments(common.augment()) and not T.augments(common.augment(bigaug_probability=0.9))
  assert T.augments(common.augment(gamma=0.1)) and T.augments(common.augment(hflip=True))


@pytest.mark.parametrize("field, value, message", [
    ("gamma", -0.1, "augment.gamma must be >= 0"),
    ("blur_sharpen", -1.0, "augment.blur_sharpen must be >= 0"),
    ("noise", float("nan"), "augment.noise must be >= 0"),
    ("low_resolution", 1.0, "augment.low_resolution must be < 1"),
    ("low_resolution", -0.5, "augment.low_resolution must be >= 0"),
    ("bigaug_probability", 1.5, r"augment.bigaug_probability must be in \[0, 1\]"),
])
def test_bad_values_raise_naming_the_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    T.make_preprocess(dict(augment={field: value}), training=True)
  config = load_config("classifier")
  config.preprocess.augment[field] = value
  found = config_checks.problems(config, VOCABULARIES)
  assert any(p.startswith(f"config.preprocess.augment.{field} = ") for p in found), found


def test_random_appearance_rejects_bad_arguments():
  img = _texture(0)
  with pytest.raises(ValueError, match="gamma must be >= 0"):
    T.random_appearance(np.random.default_rng(0), img, gamma=-1.0)
  with pytest.raises(ValueError, match="probability must be in"):
    T.random_appearance(np.random.default_rng(0), img, noise=0.1, probability=2.0)
  with pytest.raises(TypeError, match="expects uint8"):
    T.random_appearance(np.random.default_rng(0), img.astype(np.float32), noise=0.1)


def test_config_fields_match_the_transform_defaults_and_pass_validation():
  assert common.augment().to_dict() == T.default_preprocess_config().augment.to_dict()
  assert set(BIGAUG_FIELDS) <= set(common.augment().to_dict())
  # The jobs cache preprocessed training images only when every augment field is falsy.
  assert not T.augments(common.augment())
  config = load_config("classifier")
  config.preprocess.augment.update(gamma=0.4, blur_sharpen=1.5, noise=0.03, low_resolution=0.5,
                                   bigaug_probability=0.5)
  assert config_checks.problems(config, VOCABULARIES) == []
