"""Per-site intensity standardisation baselines: z-scoring, Nyul-Udupa landmarks, histogram matching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prepnet_jax.data import intensity_standardisation as IS
from prepnet_jax.data.intensity_standardisation import SiteStandardiser


def _imagenet_like(u: np.ndarray) -> np.ndarray:
  """[0, 1] intensities -> the ImageNet-normalised range the networks receive (per channel)."""
  mean, std = np.asarray([0.485, 0.456, 0.406]), np.asarray([0.229, 0.224, 0.225])
  return ((u - mean) / std).astype(np.float32)


def _sites(seed: int = 0) -> dict[int, np.ndarray]:
  """Three sites whose intensities differ by a gamma distortion, an offset and a scale."""
  rng = np.random.default_rng(seed)
  return {
      0: _imagenet_like(rng.random((24, 20, 20, 3))),
      1: _imagenet_like(0.1 + 0.8 * rng.random((30, 20, 20, 3)) ** 2.5),
      2: _imagenet_like(rng.random((18, 20, 20, 3)) ** 0.4),
  }


def _apply_to_site(s: SiteStandardiser, images: np.ndarray, site: int) -> np.ndarray:
  return s(images, np.full(len(images), site))


def test_zscore_gives_each_site_and_channel_mean_0_std_1_on_its_fit_data():
  sites = _sites()
  s = SiteStandardiser.fit(sites, "zscore")
  for site, images in sites.items():
    out = _apply_to_site(s, images, site)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), 1.0, atol=1e-5)


def test_zscore_floors_the_std_of_a_constant_site():
  s = SiteStandardiser.fit({0: np.full((2, 4, 4, 1), 0.7, np.float32)}, "zscore")
  assert s.to_dict()["sites"]["0"]["std"] == [IS.STD_FLOOR]
  assert np.all(np.isfinite(_apply_to_site(s, np.full((1, 4, 4, 1), 0.7, np.float32), 0)))


def test_nyul_maps_each_sites_landmarks_onto_the_reference_landmarks():
  sites = _sites()
  s = SiteStandardiser.fit(sites, "nyul", reference_site=0)
  q = IS.NYUL_LANDMARKS
  reference = np.percentile(sites[0].astype(np.float64), q, axis=(0, 1, 2))  # K x C
  for site in (1, 2):
    own = np.percentile(sites[site].astype(np.float64), q, axis=(0, 1, 2))
    # The landmark intensities themselves land exactly on the reference's ...
    mapped = _apply_to_site(s, own[None, None].astype(np.float32), site)  # a 1 x K image
    np.testing.assert_allclose(mapped[0, 0], reference, atol=2e-6)
    # ... so the transformed fit data has the reference's percentiles (up to the spacing of
    # order statistics that straddle a landmark, ~1e-4 here).
    out = _apply_to_site(s, sites[site], site)
    np.testing.assert_allclose(np.percentile(out, q, axis=(0, 1, 2)), reference, atol=1e-3)
    assert np.abs(own - reference).max() > 0.3  # the sites really differed


def test_piecewise_linear_map_by_hand_including_extrapolation():
  # Reference landmarks (p0, p50, p100) = (0, 10, 40); site 1's = (0, 2, 4): slopes 5 then 15.
  reference = np.asarray([0.0, 10.0, 40.0], np.float32).reshape(1, 1, 3, 1)
  site = np.asarray([4.0, 0.0, 2.0], np.float32).reshape(1, 1, 3, 1)
  s = SiteStandardiser.fit({0: reference, 1: site}, "nyul", landmarks=(0, 50, 100))
  x = np.asarray([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32).reshape(1, 1, 8, 1)
  expected = [-5.0, 0.0, 5.0, 10.0, 25.0, 40.0, 55.0, 70.0]
  np.testing.assert_allclose(_apply_to_site(s, x, 1).ravel(), expected, atol=1e-5)
  np.testing.assert_allclose(
      IS.piecewise_linear(np.asarray([-1.0, 3.0, 6.0]), np.asarray([0.0, 2.0, 4.0]),
                          np.asarray([0.0, 10.0, 40.0]), 5.0, 15.0), [-5.0, 25.0, 70.0])


def test_histogram_matching_equalises_the_quantiles_of_gamma_distorted_sites():
  sites = _sites()
  s = SiteStandardiser.fit(sites, "histogram_matching", reference_site=0)
  q = np.arange(2, 99)
  reference = np.percentile(sites[0], q, axis=(0, 1, 2))
  for site in (1, 2):
    before = np.percentile(sites[site], q, axis=(0, 1, 2))
    after = np.percentile(_apply_to_site(s, sites[site], site), q, axis=(0, 1, 2))
    assert np.abs(before - reference).max() > 0.4
    np.testing.assert_allclose(after, reference, atol=2e-3)
  # Unseen images of a site (same distribution) come out near the reference as well, up to the
  # sampling noise of ~10^4-pixel 1 % quantiles (0.065 between two samples of the reference).
  fresh = _sites(seed=1)
  for site in (1, 2):
    before = np.abs(np.percentile(fresh[site], q, axis=(0, 1, 2)) - reference).max()
    after = np.abs(np.percentile(_apply_to_site(s, fresh[site], site), q, axis=(0, 1, 2)) - reference).max()
    assert after < min(0.15, before / 8), (before, after)


@pytest.mark.parametrize("method", ["nyul", "histogram_matching"])
def test_the_reference_site_maps_to_itself(method):
  sites = _sites()
  for reference_site in (0, 2):
    s = SiteStandardiser.fit(sites, method, reference_site=reference_site)
    outside = _sites(seed=3)[reference_site] * 1.5 - 0.2  # partly beyond the fitted range
    images = np.concatenate([sites[reference_site], outside])
    np.testing.assert_allclose(_apply_to_site(s, images, reference_site), images, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["nyul", "histogram_matching"])
def test_monotone_and_finite_on_data_with_a_constant_region(method):
  rng = np.random.default_rng(4)
  background = -2.0
  site = np.where(rng.random((10, 16, 16, 1)) < 0.6, background, rng.normal(0.5, 0.4, (10, 16, 16, 1)))
  reference = rng.normal(0.0, 1.0, (10, 16, 16, 1))
  s = SiteStandardiser.fit({0: reference.astype(np.float32), 1: site.astype(np.float32)}, method)
  ramp = np.linspace(-4.0, 4.0, 4001, dtype=np.float32).reshape(1, 1, -1, 1)
  out = _apply_to_site(s, ramp, 1).ravel()
  assert np.all(np.isfinite(out))
  assert np.all(np.diff(out) >= 0)
  # No epsilon-wide segment's slope leaks into the extrapolation (which would send -4 to ~-1e6).
  assert np.abs(out).max() < 20
  landmarks = np.asarray(s.to_dict()["sites"]["1"]["landmarks"])
  assert np.all(np.diff(landmarks, axis=-1) > 0)


def test_mixed_batch_uses_each_examples_own_site():
  sites = _sites()
  s = SiteStandardiser.fit(sites, "nyul")
  batch = np.concatenate([sites[2][:2], sites[0][:1], sites[1][:3]])
  domains = np.asarray([2, 2, 0, 1, 1, 1])
  out = s(batch, domains)
  np.testing.assert_array_equal(out[:2], _apply_to_site(s, sites[2][:2], 2))
  np.testing.assert_array_equal(out[3:], _apply_to_site(s, sites[1][:3], 1))


def test_clear_errors():
  sites = _sites()
  with pytest.raises(ValueError, match=r"unknown standardisation method 'minmax'.*zscore"):
    SiteStandardiser.fit(sites, "minmax")
  s = SiteStandardiser.fit(sites, "zscore")
  with pytest.raises(ValueError, match=r"unknown site id\(s\) \[7\].*fitted on sites \[0, 1, 2\]"):
    s(sites[0][:2], np.asarray([0, 7]))
  with pytest.raises(ValueError, match="reference_site 5 has no training images"):
    SiteStandardiser.fit(sites, "nyul", reference_site=5)
  with pytest.raises(ValueError, match="only used by method 'nyul'"):
    SiteStandardiser.fit(sites, "histogram_matching", landmarks=(5, 50, 95))
  with pytest.raises(ValueError, match="strictly increasing percentiles"):
    SiteStandardiser.fit(sites, "nyul", landmarks=(50, 10, 90))
  with pytest.raises(ValueError, match="one per image"):
    s(sites[0][:2], np.asarray([0]))
  with pytest.raises(ValueError, match="fitted on 3-channel images"):
    s(sites[0][:2, ..., :1], np.asarray([0, 0]))
  with pytest.raises(ValueError, match=r"site\(s\) \[1\].*NaN"):
    SiteStandardiser.fit({0: sites[0], 1: np.full((1, 2, 2, 3), np.nan, np.float32)}, "zscore")


@pytest.mark.parametrize("method", IS.METHODS)
def test_to_dict_is_json_and_round_trips(method):
  sites = _sites()
  s = SiteStandardiser.fit(sites, method, reference_site=1)
  d = json.loads(json.dumps(s.to_dict()))
  assert d["method"] == method and d["reference_site"] == 1 and set(d["sites"]) == {"0", "1", "2"}
  restored = SiteStandardiser.from_dict(d)
  batch, domains = np.concatenate([sites[0][:2], sites[2][:2]]), np.asarray([0, 0, 2, 2])
  np.testing.assert_array_equal(restored(batch, domains), s(batch, domains))
