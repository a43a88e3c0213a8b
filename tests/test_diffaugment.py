"""DiffAugment ops against the reference definitions (data-efficient-gans DiffAugment_pytorch.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prepnet_jax.data import diffaugment as da


def _images(n=6, h=16, w=16, c=3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)).astype(np.float32))


def _reference_translation(x, shifts):
  """Literal port of the reference: pad by 1, gather rows/cols clamp(i + t + 1, 0, size + 1)."""
  x = np.asarray(x)
  n, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.empty_like(x)
  for b in range(n):
    rows = np.clip(np.arange(h) + shifts[b, 0] + 1, 0, h + 1)
    cols = np.clip(np.arange(w) + shifts[b, 1] + 1, 0, w + 1)
    out[b] = padded[b][rows][:, cols]
  return out


def _reference_cutout(x, offsets, ratio):
  """Literal port of the reference: zero mask[clamp(grid + off - size // 2)] for the s×s grid."""
  x = np.asarray(x)
  n, h, w, _ = x.shape
  sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
  mask = np.ones((n, h, w), x.dtype)
  for b in range(n):
    rows = np.clip(np.arange(sh) + offsets[b, 0] - sh // 2, 0, h - 1)
    cols = np.clip(np.arange(sw) + offsets[b, 1] - sw // 2, 0, w - 1)
    mask[b][np.ix_(rows, cols)] = 0
  return x * mask[..., None]


def test_policy_parsing():
  assert da.parse_policy("color,translation,cutout") == (
      "brightness", "saturation", "contrast", "translation", "cutout")
  assert da.parse_policy("brightness, contrast,cutout") == ("brightness", "contrast", "cutout")
  assert da.parse_policy("") == ()
  with pytest.raises(ValueError, match="unknown DiffAugment policy entry 'colour'"):
    da.parse_policy("colour")


def test_brightness_adds_one_shift_per_image_in_range():
  x = _images(n=64)
  out = da.apply_brightness(x, da.draw_brightness(jax.random.PRNGKey(0), x))
  delta = np.asarray(out - x)
  per_image = delta[:, 0, 0, 0]
  np.testing.assert_allclose(delta, np.broadcast_to(per_image[:, None, None, None], delta.shape), atol=1e-6)
  assert per_image.min() >= -0.5 and per_image.max() < 0.5
  assert len(np.unique(np.round(per_image, 6))) == 64  # per-sample draws
  grad = jax.grad(lambda v: jnp.sum(da.apply_brightness(v, jnp.full((64, 1, 1, 1), 0.3)) ** 2))(x)
  np.testing.assert_allclose(grad, 2 * (np.asarray(x) - 0.2), atol=1e-5)


def test_saturation_scales_around_channel_mean_and_is_identity_on_gray():
  x = _images(n=32)
  u = da.draw_saturation(jax.random.PRNGKey(1), x)
  out = np.asarray(da.apply_saturation(x, u))
  mean = np.asarray(x).mean(-1, keepdims=True)
  np.testing.assert_allclose(out - mean, (np.asarray(x) - mean) * 2 * np.asarray(u), atol=1e-5)
  np.testing.assert_allclose(out.mean(-1), mean[..., 0], atol=1e-5)
  assert 0.0 <= float(2 * u.min()) and float(2 * u.max()) < 2.0
  gray = _images(n=4, c=1)
  np.testing.assert_array_equal(da.apply_saturation(gray, u[:4]), gray)


def test_contrast_keeps_the_image_mean_and_scales_deviations():
  x = _images(n=32)
  u = da.draw_contrast(jax.random.PRNGKey(2), x)
  out = np.asarray(da.apply_contrast(x, u))
  x = np.asarray(x)
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), mean[:, 0, 0, 0], atol=1e-5)
  np.testing.assert_allclose(out - mean, (x - mean) * (np.asarray(u) + 0.5), atol=1e-5)
  assert 0.5 <= float(u.min() + 0.5) and float(u.max() + 0.5) < 1.5


def test_translation_matches_reference_range_and_zero_fill():
  x = _images(n=400, h=32, w=24, c=2)
  shifts = np.asarray(da.draw_translation(jax.random.PRNGKey(3), x, 0.125))
  assert set(np.unique(shifts[:, 0])) == set(range(-4, 5))  # int(32 / 8 + 0.5) = 4
  assert set(np.unique(shifts[:, 1])) == set(range(-3, 4))  # int(24 / 8 + 0.5) = 3
  out = np.asarray(da.apply_translation(x, jnp.asarray(shifts)))
  np.testing.assert_array_equal(out, _reference_translation(x, shifts))
  one = jnp.ones((1, 8, 8, 1))
  shifted = np.asarray(da.apply_translation(one, jnp.asarray([[2, -1]])))[0, :, :, 0]
  assert (shifted[6:] == 0).all() and (shifted[:, :1] == 0).all() and (shifted[:6, 1:] == 1).all()
  grad = np.asarray(jax.grad(lambda v: jnp.sum(da.apply_translation(v, jnp.asarray([[2, -1]]))))(one))[0, :, :, 0]
  np.testing.assert_array_equal(grad, np.pad(np.ones((6, 7)), ((2, 0), (0, 1))))  # pixels that stay in view


def test_cutout_matches_reference_size_and_gradient():
  x = _images(n=400, h=16, w=12, c=3)
  offsets = np.asarray(da.draw_cutout(jax.random.PRNGKey(4), x, 0.5))
  # sizes 8 (even) and 6 (even): offsets in 0 .. size + (1 - s % 2) - 1 = 0 .. 16 and 0 .. 12
  assert set(np.unique(offsets[:, 0])) == set(range(0, 17))
  assert set(np.unique(offsets[:, 1])) == set(range(0, 13))
  out = np.asarray(da.apply_cutout(x, jnp.asarray(offsets), 0.5))
  np.testing.assert_array_equal(out, _reference_cutout(x, offsets, 0.5))
  odd = _images(n=300, h=10, w=10, c=1)  # size int(10 * 0.5 + 0.5) = 5 (odd): offsets 0 .. 9
  odd_offsets = np.asarray(da.draw_cutout(jax.random.PRNGKey(5), odd, 0.5))
  assert set(np.unique(odd_offsets)) == set(range(0, 10))
  np.testing.assert_array_equal(da.apply_cutout(odd, jnp.asarray(odd_offsets), 0.5),
                                _reference_cutout(odd, odd_offsets, 0.5))
  one = jnp.ones((1, 16, 12, 1))
  centred = jnp.asarray([[8, 6]])
  zeroed = np.asarray(da.apply_cutout(one, centred, 0.5))[0, :, :, 0] == 0
  rows, cols = np.nonzero(zeroed)
  assert zeroed.sum() == 8 * 6 and (rows.min(), rows.max(), cols.min(), cols.max()) == (4, 11, 3, 8)
  grad = np.asarray(jax.grad(lambda v: jnp.sum(da.apply_cutout(v, centred, 0.5)))(one))[0, :, :, 0]
  np.testing.assert_array_equal(grad, (~zeroed).astype(np.float32))


def test_policy_is_per_sample_deterministic_and_differentiable():
  augment = jax.jit(da.DiffAugment("color,translation,cutout"))
  x = jnp.broadcast_to(_images(n=1, h=16, w=16, c=1), (8, 16, 16, 1))
  key = jax.random.PRNGKey(7)
  out = np.asarray(augment(key, x))
  assert len({out[i].tobytes() for i in range(8)}) == 8  # identical inputs, different draws
  np.testing.assert_array_equal(out, augment(key, x))
  grad = np.asarray(jax.jit(jax.grad(lambda v: jnp.sum(augment(key, v) ** 2)))(x))
  assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
  assert da.DiffAugment("color,translation").describe(1) == "brightness,contrast,translation"
  np.testing.assert_array_equal(da.DiffAugment("")(key, x), x)


def test_leak_fractions_find_fill_squares_and_borders():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 32, 32, 1)).astype(np.uint8)
  images[0, 4:12, 20:28] = 128  # an 8×8 mid-gray square (cutout side 16, window 8)
  images[1, 10:17, 10:17] = 128  # 7×7: too small to be a cutout remnant
  images[2, :, :2] = 127  # a 2-pixel mid-gray left border (shift 4, strip 2)
  images[3, :, :2] = 0  # a black border is not DiffAugment's fill
  leaks = da.leak_fractions(images, da.DiffAugment())
  assert leaks == {"cutout_leak": pytest.approx(1 / 6), "border_leak": pytest.approx(1 / 6)}
