"""Generative metrics: closed forms, estimator behaviour, named extractors, fallback, the job."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from prepnet_jax.eval import feature_extractors as fe, gen_metrics as gm, generators
from prepnet_jax.models.inception_v3 import MissingWeightsError
from prepnet_jax.tasks import gen_metrics as gen_metrics_job
from tests.helpers import load_config

RECORD_FIELDS = ("metric", "value", "std", "extractor", "weights_sha256", "resize", "n_real", "n_gen",
                 "noise_floor", "noise_floor_n", "dataset", "fallback_from", "notes")


SMALL = dict(image_size=16, widths=(8, 16, 32))  # 32-d features keep sqrtm and compiles cheap


@pytest.fixture(scope="module")
def randinit():
  return fe.get_extractor("randinit", batch_size=16, **SMALL)


def _images(seed, n, size=20, channels=1, low=0, high=256):
  return np.random.default_rng(seed).integers(low, high, (n, size, size, channels), dtype=np.uint8)


# --- Fréchet distance -----------------------------------------------------------------------------

def test_frechet_distance_equals_closed_form_for_diagonal_gaussians():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  var1, var2 = rng.uniform(0.1, 3.0, 8), rng.uniform(0.1, 3.0, 8)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2.0 * np.sqrt(var1 * var2))
  assert gm.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_full_covariance_symmetric_and_zero_on_itself():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(200, 6)), rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 1.0
  stats_a, stats_b = gm.feature_stats(a), gm.feature_stats(b)
  ab = gm.frechet_distance(*stats_a, *stats_b)
  assert ab == pytest.approx(gm.frechet_distance(*stats_b, *stats_a), rel=1e-8)
  assert ab > 1.0
  assert abs(gm.frechet_distance(*stats_a, *stats_a)) < 1e-9


def _fd_reference(mu1, s1, mu2, s2):
  """Tr (S1 S2)^½ through the symmetric PSD form S1^½ S2 S1^½ (eigh, no sqrtm)."""
  w, v = np.linalg.eigh(s1)
  s1_half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  tr_root = np.sqrt(np.clip(np.linalg.eigvalsh(s1_half @ s2 @ s1_half), 0, None)).sum()
  return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_root


def test_frechet_distance_with_fewer_samples_than_dimensions():
  rng = np.random.default_rng(2)
  a, b = rng.normal(size=(10, 32)), rng.normal(size=(12, 32)) + 0.3
  stats = (*gm.feature_stats(a), *gm.feature_stats(b))
  assert np.linalg.matrix_rank(stats[1]) == 9  # N - 1 < d: singular covariance
  assert gm.frechet_distance(*stats) == pytest.approx(_fd_reference(*stats), rel=1e-6)


def test_frechet_distance_retries_with_eps_when_sqrtm_fails(monkeypatch):
  rng = np.random.default_rng(3)
  a, b = rng.normal(size=(10, 16)), rng.normal(size=(10, 16)) + 1.0
  stats = (*gm.feature_stats(a), *gm.feature_stats(b))
  calls = []
  real_sqrtm = scipy.linalg.sqrtm

  def failing_first(m):  # what older scipy returns for a singular product
    calls.append(m)
    return np.full_like(m, np.inf) if len(calls) == 1 else real_sqrtm(m)

  monkeypatch.setattr(gm.scipy.linalg, "sqrtm", failing_first)
  eps = 1e-3
  value, retried = gm.frechet_distance_with_info(*stats, eps=eps)
  assert retried and len(calls) == 2
  offset = eps * np.eye(16)
  np.testing.assert_allclose(calls[1], (stats[1] + offset) @ (stats[3] + offset))
  mu1, s1, mu2, s2 = stats
  assert value == pytest.approx(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
                                - 2 * np.trace(real_sqrtm((s1 + offset) @ (s2 + offset)).real), rel=1e-10)


def test_frechet_distance_rejects_a_large_imaginary_part(monkeypatch):
  monkeypatch.setattr(gm.scipy.linalg, "sqrtm", lambda m: np.eye(len(m)) * (1 + 0.5j))
  with pytest.raises(ValueError, match="imaginary part"):
    gm.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))


# --- KID, IS, precision/recall -------------------------------------------------------------------

def test_kid_near_zero_for_one_distribution_and_positive_for_shifted():
  rng = np.random.default_rng(4)
  x, y = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
  same, same_std = gm.kid(x, y, num_subsets=50, subset_size=200)
  shifted, _ = gm.kid(x, y + 0.5, num_subsets=50, subset_size=200)
  assert abs(same) < 0.02 and same_std > 0
  assert shifted > 0.5


def test_kid_whole_gram_and_per_subset_paths_agree(monkeypatch):
  rng = np.random.default_rng(5)
  x, y = rng.normal(size=(80, 8)), rng.normal(size=(70, 8)) + 0.2
  whole = gm.kid(x, y, num_subsets=10, subset_size=50, seed=1)
  monkeypatch.setattr(gm, "_KID_WHOLE_GRAM_MAX", 0)
  per_subset = gm.kid(x, y, num_subsets=10, subset_size=50, seed=1)
  np.testing.assert_allclose(whole, per_subset, rtol=1e-9, atol=1e-12)


def test_inception_score_constant_classifier_is_one_and_confident_uniform_is_k():
  constant = np.tile([0.1, 0.6, 0.3], (100, 1))
  assert gm.inception_score(constant, splits=10) == pytest.approx((1.0, 0.0), abs=1e-12)
  k = 5
  confident = np.eye(k)[np.arange(200) % k]  # every split holds every class equally often
  mean, std = gm.inception_score(confident, splits=10)
  assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_precision_recall_identical_far_and_half_overlapping_sets():
  rng = np.random.default_rng(6)
  real = rng.normal(size=(200, 10))
  assert gm.precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
  assert gm.precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
  half = np.concatenate([rng.normal(size=(100, 10)), rng.normal(size=(100, 10)) + 100.0])
  precision, recall = gm.precision_recall(real, half, k=3)
  assert 0.4 <= precision <= 0.55 and recall > 0.8


# --- extractors and records ----------------------------------------------------------------------

def test_randinit_is_deterministic_and_handles_dtype_and_channels(randinit):
  other = fe.get_extractor("randinit", batch_size=16, **SMALL)
  assert other.weights_sha256 == randinit.weights_sha256
  assert fe.get_extractor("randinit", seed=1, **SMALL).weights_sha256 != randinit.weights_sha256
  assert fe.get_extractor("randinit").feature_dim == 512
  gray = _images(0, 20)  # 20 images, batch 16: exercises the padded last batch
  feats = randinit.features(gray)
  assert feats.shape == (20, 32) and np.abs(feats).sum() > 0
  np.testing.assert_array_equal(feats, other.features(gray))
  # grayscale is repeated to 3 channels inside the extractor; floats are quantised like PNGs
  np.testing.assert_array_equal(feats, randinit.features(np.repeat(gray, 3, axis=-1)))
  floats = gray.astype(np.float32) / 127.5 - 1.0
  np.testing.assert_array_equal(feats, randinit.features(floats, value_range=(-1, 1)))
  with pytest.raises(ValueError, match="value_range"):
    randinit.features(floats)
  with pytest.raises(ValueError, match="outside the declared"):
    randinit.features(floats * 2, value_range=(-1, 1))


def test_clean_resize_is_pil_bicubic_on_float32():
  img = _images(1, 1, size=37)[0]
  expected = np.asarray(Image.fromarray(img[..., 0].astype(np.float32), mode="F")
                        .resize((50, 50), Image.Resampling.BICUBIC))
  got = fe.clean_resize(img, 50)
  assert got.shape == (50, 50, 3) and got.dtype == np.float32
  for c in range(3):
    np.testing.assert_array_equal(got[..., c], np.clip(expected, 0, 255))


def test_evaluate_records_carry_names_sizes_hash_and_noise_floor(randinit):
  real, fake = _images(2, 40), _images(3, 30, size=24, high=30)  # much darker fakes
  records = gm.evaluate(real, fake, randinit, dataset="test:real", kid_subsets=10)
  assert [r["metric"] for r in records] == ["fd_randinit", "kid_randinit", "precision_randinit",
                                            "recall_randinit"]  # no IS: randinit has no head
  for r in records:
    assert all(field in r for field in RECORD_FIELDS)
    assert (r["extractor"], r["weights_sha256"], r["n_real"], r["n_gen"]) == (
        "randinit", randinit.weights_sha256, 40, 30)
    assert r["noise_floor"] is not None and r["noise_floor_n"] == 20 and r["fallback_from"] is None
    assert r["resize"].startswith("pil_bicubic_float32_16")
  fd = records[0]
  assert fd["value"] > fd["noise_floor"] > 0
  assert any("feature dim" in note for note in fd["notes"])  # 30 < 32
  json.dumps(records)  # the job writes them as JSON
  scalars = gm.as_scalars(records)
  assert scalars["fd_randinit"] == fd["value"] and "kid_randinit_std" in scalars


def test_real_statistics_cache_is_npz_keyed_by_content(randinit, tmp_path):
  real = _images(4, 24)
  first = gm.real_stats(real, randinit, dataset="d", cache_dir=str(tmp_path))
  files = sorted(os.listdir(tmp_path))
  assert len(files) == 1 and files[0].startswith("real_randinit_") and files[0].endswith(".npz")
  with np.load(tmp_path / files[0], allow_pickle=False) as data:  # no pickles inside
    np.testing.assert_array_equal(data["features"], first.features)
  gm._MEMORY_CACHE.clear()
  again = gm.real_stats(real, randinit, dataset="d", cache_dir=str(tmp_path))
  np.testing.assert_array_equal(again.features, first.features)
  assert again.noise_floor == first.noise_floor
  real[0, 0, 0, 0] ^= 1  # one pixel changed: a new entry, never the stale one
  gm.real_stats(real, randinit, dataset="d", cache_dir=str(tmp_path))
  assert len(os.listdir(tmp_path)) == 2


def test_missing_inception_weights_fall_back_only_when_allowed(tmp_path):
  missing = str(tmp_path / "pt_inception-2015-12-05.npz")
  with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05"):
    fe.get_extractor_or_fallback("inception", weights_path=missing)
  with pytest.raises(MissingWeightsError):
    fe.get_extractor("inception")
  fallback = fe.get_extractor_or_fallback("inception", allow_fallback=True, weights_path=missing,
                                          fallback_kwargs=SMALL)
  assert fallback.name == "randinit" and not fallback.standard_fid
  assert "inception" in fallback.fallback_from and missing in fallback.fallback_from
  records = gm.evaluate(_images(5, 12), _images(6, 12), fallback, metrics=("fd",))
  assert records[0]["metric"] == "fd_randinit" and records[0]["fallback_from"] == fallback.fallback_from
  corrupt = tmp_path / "weights.npz"
  np.savez(corrupt, x=np.zeros(3))
  with pytest.raises(ValueError, match="SHA-256"):  # a wrong file is an error, never a fallback
    fe.get_extractor_or_fallback("inception", allow_fallback=True, weights_path=str(corrupt), sha256="0" * 64)


def test_classifier_extractor_from_a_checkpoint(tmp_path):
  from prepnet_jax.models import classifier_factory
  from prepnet_jax.runtime import checkpointing
  from tests.helpers import tiny_classifier_config
  config = tiny_classifier_config(**{"preprocess.image_size": 16})
  workdir = tmp_path / "clf"
  model = classifier_factory.build_classifier(config)
  state = jax.jit(lambda: classifier_factory.create_classifier_state(config, model, jax.random.key(0), 10, 1000))()
  checkpointing.Checkpointer(str(workdir / "checkpoints")).save(1, jax.device_get(state), {})
  (workdir / "config.json").write_text(json.dumps(config.to_dict()))
  extractor = fe.get_extractor(f"classifier:{workdir}", batch_size=8)
  assert extractor.name == "classifier" and extractor.num_classes == 1
  assert extractor.weights_sha256 == fe.tree_sha256(state.variables)
  feats, probs = extractor.features_and_probs(_images(7, 10, size=30))
  assert feats.shape == (10, extractor.feature_dim)
  assert probs.shape == (10, 2) and np.allclose(probs.sum(1), 1.0)
  names = [r["metric"] for r in gm.evaluate(_images(8, 12), _images(9, 10), extractor, is_splits=2,
                                             kid_subsets=5)]
  assert names == ["fd_classifier", "kid_classifier", "precision_classifier", "recall_classifier",
                   "is_classifier"]


# --- the standalone job --------------------------------------------------------------------------

def _job_config(tmp_path, **overrides):
  c = load_config("gen_metrics")
  c.data.phantom_backend = "memory"
  c.randinit.image_size = 16
  c.randinit.widths = (8, 16, 32)
  c.metrics.kid_subsets = 5
  c.batch_size = 16
  real_root = tmp_path / "real"
  for label in ("normal", "covid"):
    (real_root / label).mkdir(parents=True)
    for i, img in enumerate(_images(10 + len(label), 30, size=40)):
      Image.fromarray(img[..., 0]).save(real_root / label / f"{label}_patient{i}.png")
  c.data.train = f"folder:{real_root}"
  c.data.class_folders = {"normal": "non-COVID", "covid": "COVID"}  # labels follow data.class_names
  for key, value in overrides.items():
    node = c
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return c


def test_job_on_a_png_folder_with_fallback(tmp_path):
  gen_dir = tmp_path / "gen"
  gen_dir.mkdir()
  for i, img in enumerate(_images(20, 25, size=24)):
    Image.fromarray(img[..., 0]).save(gen_dir / f"sample_{i:03d}.png")
  config = _job_config(tmp_path, **{"generated.folder": str(gen_dir), "real.labels": (1,)})
  workdir = tmp_path / "work"
  result = gen_metrics_job.run(config, str(workdir))
  metrics = [r["metric"] for r in result["records"]]
  assert metrics == ["fd_randinit", "kid_randinit", "precision_randinit", "recall_randinit"]  # deduplicated
  assert all(r["fallback_from"].startswith("inception") for r in result["records"])
  assert all(r["n_gen"] == 25 for r in result["records"])
  assert result["real"]["labels"] == [1] and 5 < result["real"]["num_images"] <= 30
  assert "matched_24x24x1" in result["records"][0]["dataset"]
  saved = json.loads((workdir / "reports" / "gen_metrics.json").read_text())
  assert saved["records"] == json.loads(json.dumps(result["records"]))
  table = (workdir / "reports" / "gen_metrics.md").read_text()
  assert "fd_randinit" in table and "fallback for inception" in table and "fid |" not in table
  config.allow_fallback = False
  with pytest.raises(MissingWeightsError):
    gen_metrics_job.run(config, str(workdir))


def test_job_samples_a_generator_checkpoint_through_the_generator_interface(tmp_path, monkeypatch):
  calls = []

  class FakeGenerator:
    task, kind, step = "gan", "gan", 7

    def generate(self, num, seed, label=None, truncation_psi=1.0, noise_mode="const"):
      calls.append((num, seed, label, truncation_psi, noise_mode))
      return _images(seed, num, size=24)

  def load_generator(workdir, step=None):
    calls.append((workdir, step))
    return FakeGenerator()

  monkeypatch.setattr(generators, "load_generator", load_generator)
  config = _job_config(tmp_path, **{"generated.workdir": "runs/gan", "generated.num_images": 12,
                                    "generated.label": 1, "extractors": "randinit",
                                    "metrics.names": "fd,kid"})
  result = gen_metrics_job.run(config, str(tmp_path / "work"))
  assert calls == [("runs/gan", None), (12, 0, 1, 1.0, "random")]
  assert result["generated"]["step"] == 7 and result["generated"]["kind"] == "gan"
  assert [r["metric"] for r in result["records"]] == ["fd_randinit", "kid_randinit"]
  assert all(r["label"] == 1 and r["n_gen"] == 12 for r in result["records"])
  config.generated.folder = str(tmp_path)
  with pytest.raises(ValueError, match="exactly one"):
    gen_metrics_job.run(config, str(tmp_path / "work"))
