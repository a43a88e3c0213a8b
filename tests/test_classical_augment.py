"""Classical augmentation: exact geometry of each Keras ImageDataGenerator parameter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from prepnet_jax.data import classical_augment as ca
from prepnet_jax.data.classical_augment import AffineDraw, AugmentParams

RNG = np.random.default_rng(0)
SQUARE = RNG.integers(0, 256, (9, 9, 1), dtype=np.uint8)
WIDE = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)


def test_identity_params_give_the_identical_image():
  for img in (SQUARE, WIDE):
    out = ca.augment_image(np.random.default_rng(1), img, AugmentParams())
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, img)


def test_horizontal_flip_is_a_left_right_mirror():
  np.testing.assert_array_equal(ca.apply_transform(WIDE, AffineDraw(flip_horizontal=True)), WIDE[:, ::-1])
  flips = [ca.draw_transform(np.random.default_rng(s), WIDE.shape, AugmentParams(horizontal_flip=True))
           for s in range(200)]
  assert 70 < sum(d.flip_horizontal for d in flips) < 130  # probability 1/2


def test_width_shift_moves_columns_with_nearest_fill():
  k = 3
  out = ca.apply_transform(WIDE, AffineDraw(shift_cols=k))
  expected = np.concatenate([np.repeat(WIDE[:, :1], k, axis=1), WIDE[:, :-k]], axis=1)
  np.testing.assert_array_equal(out, expected)
  up = ca.apply_transform(WIDE, AffineDraw(shift_rows=-2))
  np.testing.assert_array_equal(up, np.concatenate([WIDE[2:], np.repeat(WIDE[-1:], 2, axis=0)], axis=0))
  # width_shift_range is a fraction of the width and only ever moves columns.
  draws = [ca.draw_transform(np.random.default_rng(s), WIDE.shape, AugmentParams(width_shift_range=0.2))
           for s in range(100)]
  assert all(d.shift_rows == 0 and abs(d.shift_cols) <= 0.2 * 10 for d in draws)
  assert max(abs(d.shift_cols) for d in draws) > 1.5


def test_rotation_by_90_degrees_is_counter_clockwise_rot90():
  out = ca.apply_transform(SQUARE, AffineDraw(rotation_deg=90))
  np.testing.assert_array_equal(out, np.rot90(SQUARE, k=1))
  # About the true centre, also for a non-square image (where Keras is off centre).
  np.testing.assert_array_equal(ca.apply_transform(WIDE, AffineDraw(rotation_deg=180)), WIDE[::-1, ::-1])


def test_zoom_range_semantics_and_presets():
  assert AugmentParams(zoom_range=0.15).zoom_bounds == (0.85, 1.15)
  assert AugmentParams(zoom_range=(0.9, 1.2)).zoom_bounds == (0.9, 1.2)
  draws = [ca.draw_transform(np.random.default_rng(s), SQUARE.shape, AugmentParams(zoom_range=0.15))
           for s in range(50)]
  assert all(0.85 <= d.zoom_rows <= 1.15 and 0.85 <= d.zoom_cols <= 1.15 for d in draws)
  assert any(abs(d.zoom_rows - d.zoom_cols) > 0.05 for d in draws)  # drawn independently per axis
  assert ca.PRESETS["A"] == AugmentParams(30, 0.15, 0.2, 0.2, 0.15, True, "nearest")
  assert ca.PRESETS["B"] == AugmentParams(15, 0.15, 0.1, 0.1, 0.15, True, "nearest")
  with pytest.raises(ValueError, match="fill_mode"):
    AugmentParams(fill_mode="mirror")


def test_matches_keras_apply_affine_transform_on_fixed_parameters():
  keras_image = pytest.importorskip("keras.src.legacy.preprocessing.image")
  img = RNG.uniform(0, 255, (16, 16, 2))
  draw = AffineDraw(rotation_deg=17.0, shift_rows=1.5, shift_cols=-2.25, shear_deg=8.0,
                    zoom_rows=1.1, zoom_cols=0.9)
  ours = ca.apply_transform(img, draw)
  # Keras' tx moves content along columns and ty along rows, both with the opposite sign.
  theirs = keras_image.apply_affine_transform(
      img, theta=17.0, tx=2.25, ty=-1.5, shear=8.0, zx=0.9, zy=1.1, row_axis=0, col_axis=1,
      channel_axis=2, fill_mode="nearest", order=1)
  np.testing.assert_allclose(ours, theirs, atol=1e-9)
  generator = keras_image.ImageDataGenerator(fill_mode="nearest")
  flipped = generator.apply_transform(img, {"theta": 17.0, "tx": 2.25, "ty": -1.5, "shear": 8.0,
                                            "zx": 0.9, "zy": 1.1, "flip_horizontal": True})
  ours_flipped = ca.apply_transform(img, dataclasses.replace(draw, flip_horizontal=True))
  np.testing.assert_allclose(ours_flipped, flipped, atol=1e-9)


def test_build_augmented_dataset_is_seeded_and_writes_class_folders(tmp_path):
  images = RNG.integers(0, 256, (3, 12, 12, 1), dtype=np.uint8)
  labels = np.array([1, 0, 1])
  params = ca.PRESETS["B"]
  out, out_labels = ca.build_augmented_dataset(images, labels, params, draws_per_image=4, seed=7)
  assert out.shape == (12, 12, 12, 1) and out.dtype == np.uint8
  np.testing.assert_array_equal(out_labels, [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1])
  again, _ = ca.build_augmented_dataset(images, labels, ca.PRESETS["B"], draws_per_image=4, seed=7)
  np.testing.assert_array_equal(out, again)
  rng = np.random.default_rng([7, 2])  # image i draws from the generator seeded by (seed, i)
  for d in range(4):
    np.testing.assert_array_equal(out[8 + d], ca.augment_image(rng, images[2], ca.PRESETS["B"]))
  assert len({out[i].tobytes() for i in range(4)}) == 4  # four different draws of one image

  paths = ca.write_class_folders(tmp_path, out, out_labels, class_names=("negative", "positive"))
  assert sorted(p.parent.name for p in paths).count("positive") == 8
  with Image.open(paths[5]) as im:
    assert im.mode == "L" and paths[5].parent.name == "negative"
    np.testing.assert_array_equal(np.asarray(im), out[5][..., 0])
