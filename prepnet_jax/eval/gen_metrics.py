"""Generative metrics on embeddings: Fréchet distance, KID, Inception Score, precision/recall.

One module for the training loops (at every save interval) and the standalone job:

    records = gen_metrics.evaluate(real_images, fake_images, extractor)   # list of dicts
    writer.write_scalars(step, gen_metrics.as_scalars(records))

Conventions (reference/anchors.md §5):
* Fréchet distance in float64 on the host with `scipy.linalg.sqrtm`; when the covariance
  product is singular (non-finite square root) or the root comes out clearly complex, eps·I is
  added to both covariances and the root retaken (pytorch-fid); a small imaginary part is
  dropped, a large one is an error.
* KID: unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y/d + 1)³ over
  `kid_subsets` random subsets of size min(n_real, n_gen, `kid_subset_size`) (stylegan2-ada /
  clean-fid), reported as mean ± std over subsets.
* Inception Score: exp(E_x KL(p(y|x) ‖ p(y))) per split, mean ± std over `is_splits` splits;
  only for extractors with a classifier head.
* Precision / recall (Kynkäänniemi et al. 2019): k-NN (k=3) hyperspheres around each real (resp.
  generated) feature; precision = generated samples inside the real manifold, recall = the reverse.
* Noise floor: the same metric between two random halves of the real set (N_real/2 each,
  medigan's lower bound) is reported next to every value.
* Records are named by the extractor (`fid` only for the standard Inception; else `fd_randinit`,
  `kid_classifier`, ...) and by a resize mode other than clean-fid's 'clean' (`fid_legacy_pytorch`,
  `fd_inception_keras_legacy_tensorflow`), and carry N, extractor, weights hash, resize and mode.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import warnings
from typing import Iterable

import numpy as np
import scipy.linalg
import scipy.special

from prepnet_jax.eval.feature_extractors import (DEFAULT_RESIZE_MODE, FeatureExtractor, Images,  # noqa: F401
                                                 as_uint8_images, get_extractor, get_extractor_or_fallback)

BASE_METRICS = ("fd", "kid", "pr", "is")
_STANDARD_NAMES = {"fd": "fid", "kid": "kid", "precision": "precision", "recall": "recall", "is": "is"}
_KID_WHOLE_GRAM_MAX = 5000  # up to this many samples in total, kernel matrices are computed once


@dataclasses.dataclass(frozen=True)
class MetricOptions:
  metrics: tuple[str, ...] = BASE_METRICS
  kid_subsets: int = 100
  kid_subset_size: int = 1000
  pr_k: int = 3
  is_splits: int = 10
  fd_eps: float = 1e-6
  seed: int = 0

  def __post_init__(self):
    unknown = set(self.metrics) - set(BASE_METRICS)
    if unknown:
      raise ValueError(f"unknown metrics {sorted(unknown)}; expected a subset of {BASE_METRICS}")


# --- the metrics on features ----------------------------------------------------------------------

def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and covariance (float64) of (N, d) features."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 2:
    raise ValueError(f"need (N >= 2, d) features for a covariance, got shape {features.shape}")
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _root_usable(root: np.ndarray, imag_atol: float) -> bool:
  if not np.isfinite(root).all():
    return False
  return not np.iscomplexobj(root) or np.abs(np.diagonal(root).imag).max() <= imag_atol


def frechet_distance_with_info(mu1, sigma1, mu2, sigma2, eps: float = 1e-6,
                               imag_atol: float = 1e-3) -> tuple[float, bool]:
  """(‖μ1−μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), whether the eps·I retry was needed)."""
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
  sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f"Fréchet distance needs matching shapes, got mu {mu1.shape}/{mu2.shape} and "
                     f"sigma {sigma1.shape}/{sigma2.shape}")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scipy warns on singular input; the retry below handles it
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
  retried = not _root_usable(root, imag_atol)
  if retried:
    offset = np.eye(len(mu1)) * eps
    root = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not np.isfinite(root).all():
      raise ValueError(f"sqrtm of the covariance product is not finite even with eps={eps}·I")
  if np.iscomplexobj(root):
    imag = np.abs(np.diagonal(root).imag).max()
    if imag > imag_atol:
      raise ValueError(f"sqrtm of the covariance product has an imaginary part {imag:.3g} > "
                       f"{imag_atol}: the covariances are too ill-conditioned (too few samples?)")
    root = root.real
  diff = mu1 - mu2
  value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(root)
  return float(value), retried


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  return frechet_distance_with_info(mu1, sigma1, mu2, sigma2, eps)[0]


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return (a @ b.T / a.shape[1] + 1.0) ** 3


def kid(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance (unbiased MMD², cubic kernel): mean and std over subsets."""
  x, y = np.asarray(fake, np.float64), np.asarray(real, np.float64)
  m = min(len(x), len(y), int(subset_size))
  if m < 2:
    raise ValueError(f"KID needs at least 2 real and 2 generated samples, got {len(y)} and {len(x)}")
  rng = np.random.default_rng(seed)
  whole = len(x) + len(y) <= _KID_WHOLE_GRAM_MAX
  if whole:
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
  values = []
  for _ in range(int(num_subsets)):
    ix, iy = rng.choice(len(x), m, replace=False), rng.choice(len(y), m, replace=False)
    if whole:
      a, b, c = kxx[np.ix_(ix, ix)], kyy[np.ix_(iy, iy)], kxy[np.ix_(ix, iy)]
    else:
      a, b, c = _poly_kernel(x[ix], x[ix]), _poly_kernel(y[iy], y[iy]), _poly_kernel(x[ix], y[iy])
    within = (a.sum() - np.trace(a) + b.sum() - np.trace(b)) / (m * (m - 1))
    values.append(within - 2.0 * c.mean())
  return float(np.mean(values)), float(np.std(values))


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
  """exp(E KL(p(y|x) ‖ p(y))) per split of `probs` (N, K): mean and std over splits."""
  probs = np.asarray(probs, np.float64)
  n = len(probs)
  if probs.ndim != 2 or n < splits:
    raise ValueError(f"Inception Score needs (N >= splits={splits}, K) probabilities, got {probs.shape}")
  scores = []
  for i in range(splits):
    part = probs[i * n // splits:(i + 1) * n // splits]
    marginal = part.mean(axis=0, keepdims=True)
    scores.append(np.exp(scipy.special.rel_entr(part, marginal).sum(axis=1).mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  return np.maximum((a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :], 0.0)


def _knn_sq_radii(x: np.ndarray, k: int, block: int) -> np.ndarray:
  """Squared distance of each row to its k-th nearest other row (index k counts itself at 0)."""
  return np.concatenate([np.partition(_sq_dists(x[s:s + block], x), k, axis=1)[:, k]
                         for s in range(0, len(x), block)])


def _inside(queries: np.ndarray, refs: np.ndarray, ref_sq_radii: np.ndarray, block: int) -> np.ndarray:
  return np.concatenate([(_sq_dists(queries[s:s + block], refs) <= ref_sq_radii[None, :]).any(axis=1)
                         for s in range(0, len(queries), block)])


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3,
                     block: int = 1024) -> tuple[float, float]:
  """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds (float32)."""
  real, fake = np.asarray(real, np.float32), np.asarray(fake, np.float32)
  if len(real) <= k or len(fake) <= k:
    raise ValueError(f"precision/recall with k={k} needs more than {k} real and generated samples, "
                     f"got {len(real)} and {len(fake)}")
  precision = _inside(fake, real, _knn_sq_radii(real, k, block), block).mean()
  recall = _inside(real, fake, _knn_sq_radii(fake, k, block), block).mean()
  return float(precision), float(recall)


# --- real statistics, noise floor, caches ---------------------------------------------------------

@dataclasses.dataclass
class RealStats:
  """Everything about the real set that the metrics need, computed once per (extractor, data)."""
  features: np.ndarray
  probs: np.ndarray | None
  noise_floor: dict
  noise_floor_n: int
  extractor_key: tuple
  dataset: str
  content_sha256: str

  def __post_init__(self):
    self.mu, self.sigma = feature_stats(self.features)

  @property
  def n(self) -> int:
    return len(self.features)


def _extractor_key(extractor: FeatureExtractor) -> tuple:
  return (extractor.name, extractor.weights_sha256, extractor.resize)


def _hash_images(digest, images: list[np.ndarray]) -> None:
  for img in images:
    digest.update(f"{img.shape};".encode())
    digest.update(np.ascontiguousarray(img).tobytes())


def _content_sha256(images: list[np.ndarray]) -> str:
  digest = hashlib.sha256()
  _hash_images(digest, images)
  return digest.hexdigest()


def _split_half_floor(features: np.ndarray, probs: np.ndarray | None,
                      opts: MetricOptions) -> tuple[dict, int]:
  """Each metric between two random halves of the real set: what 'as good as real' looks like."""
  half = len(features) // 2
  order = np.random.default_rng(opts.seed).permutation(len(features))
  a, b = features[order[:half]], features[order[half:2 * half]]
  floor: dict = {}
  if half >= 2 and "fd" in opts.metrics:
    floor["fd"] = frechet_distance(*feature_stats(a), *feature_stats(b), eps=opts.fd_eps)
  if half >= 2 and "kid" in opts.metrics:
    floor["kid"] = kid(a, b, opts.kid_subsets, opts.kid_subset_size, opts.seed)[0]
  if half > opts.pr_k and "pr" in opts.metrics:
    floor["precision"], floor["recall"] = precision_recall(a, b, opts.pr_k)
  if probs is not None and "is" in opts.metrics and len(probs) >= opts.is_splits:
    floor["is_real"] = inception_score(probs, opts.is_splits)[0]
  return floor, half


_MEMORY_CACHE: collections.OrderedDict = collections.OrderedDict()
_MEMORY_CACHE_SIZE = 4


def real_stats(real_images: Images, extractor: FeatureExtractor, *, value_range=None, dataset: str = "",
               cache_dir: str | None = None, options: MetricOptions | None = None) -> RealStats:
  """Features, class probabilities and noise floor of the real set, from cache when possible.

  Cached in memory (the last few sets) and, with `cache_dir`, as `.npz` files (no pickles) keyed
  by extractor name, weights hash, resize, `dataset`, N, the SHA-256 of the images themselves
  and the metric options, so a stale cache can never be used for different data.
  """
  opts = options or MetricOptions()
  images = as_uint8_images(real_images, value_range)
  content = _content_sha256(images)
  key = dict(extractor=extractor.name, weights_sha256=extractor.weights_sha256, resize=extractor.resize,
             dataset=dataset, n=len(images), content_sha256=content, options=dataclasses.asdict(opts))
  key_json = json.dumps(key, sort_keys=True)
  if key_json in _MEMORY_CACHE:
    _MEMORY_CACHE.move_to_end(key_json)
    return _MEMORY_CACHE[key_json]
  path = None
  if cache_dir:
    digest = hashlib.sha256(key_json.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"real_{extractor.name}_{digest}.npz")
  stats = _load_cached(path, key_json, extractor, dataset, content) if path else None
  if stats is None:
    features, probs = extractor.features_and_probs(images, label="real")
    floor, half = _split_half_floor(features, probs, opts)
    stats = RealStats(features, probs, floor, half, _extractor_key(extractor), dataset, content)
    if path:
      _save_cached(path, key_json, stats)
  _MEMORY_CACHE[key_json] = stats
  while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
    _MEMORY_CACHE.popitem(last=False)
  return stats


def streamed_real_stats(batches: Iterable[Images], extractor: FeatureExtractor, *, value_range=None,
                        dataset: str = "", options: MetricOptions | None = None) -> RealStats:
  """`real_stats` of a real set read batch by batch (a dataset too large to hold as images).

  One pass keeps the features (N × d: KID, precision/recall and the noise floor need them) and
  hashes the content; each batch of images is dropped once extracted. The extractor sees chunks
  of its own batch size whatever the sizes of `batches`, so the statistics equal `real_stats` on
  the same images at once. Not cached: the caller computes them once per run.
  """
  opts = options or MetricOptions()
  digest, pending, features, probs = hashlib.sha256(), [], [], []

  def extract(images: list[np.ndarray]) -> None:
    # One batch per call, so no progress line: "64/64 images" per batch would only mislead.
    f, p = extractor.features_and_probs(images, progress=False)
    features.append(f)
    if p is not None:
      probs.append(p)

  for batch in batches:
    images = as_uint8_images(batch, value_range)
    _hash_images(digest, images)
    pending.extend(images)
    while len(pending) >= extractor.batch_size:
      extract(pending[:extractor.batch_size])
      del pending[:extractor.batch_size]
  if pending:
    extract(pending)
  if not features:
    raise ValueError("no real images given")
  features = np.concatenate(features)
  probs = np.concatenate(probs) if probs else None
  floor, half = _split_half_floor(features, probs, opts)
  return RealStats(features, probs, floor, half, _extractor_key(extractor), dataset, digest.hexdigest())


def _save_cached(path: str, key_json: str, stats: RealStats) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  arrays = dict(features=stats.features, key=np.asarray(key_json),
                noise_floor=np.asarray(json.dumps(stats.noise_floor)),
                noise_floor_n=np.asarray(stats.noise_floor_n))
  if stats.probs is not None:
    arrays["probs"] = stats.probs
  tmp = path + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, path)


def _load_cached(path: str, key_json: str, extractor, dataset: str, content: str) -> RealStats | None:
  if not os.path.isfile(path):
    return None
  with np.load(path, allow_pickle=False) as data:
    if str(data["key"]) != key_json:
      return None
    return RealStats(data["features"], data["probs"] if "probs" in data.files else None,
                     json.loads(str(data["noise_floor"])), int(data["noise_floor_n"]),
                     _extractor_key(extractor), dataset, content)


# --- records --------------------------------------------------------------------------------------

def metric_name(base: str, extractor: FeatureExtractor) -> str:
  """'fid', 'kid', 'is', ... for the standard FID Inception; '<base>_<extractor>' otherwise; then
  '_<mode>' for a resize mode other than 'clean' ('fid_legacy_pytorch'), so a value computed the
  pytorch-fid or TTUR way is never mistaken for a clean-fid one."""
  name = _STANDARD_NAMES[base] if extractor.standard_fid else f"{base}_{extractor.name}"
  mode = extractor.resize_mode
  return name if mode in (None, DEFAULT_RESIZE_MODE) else f"{name}_{mode}"


def evaluate_features(real: RealStats, fake_features: np.ndarray, fake_probs: np.ndarray | None,
                      extractor: FeatureExtractor, *, label: int | None = None,
                      options: MetricOptions | None = None) -> list[dict]:
  """Records for precomputed generated features (see `evaluate`)."""
  opts = options or MetricOptions()
  if real.extractor_key != _extractor_key(extractor):
    raise ValueError(f"real statistics were computed with extractor {real.extractor_key[0]!r} "
                     f"(weights {real.extractor_key[1][:12]}, resize {real.extractor_key[2]!r}), not "
                     f"{extractor.name!r} (weights {extractor.weights_sha256[:12]}, "
                     f"resize {extractor.resize!r})")
  n_real, n_gen = real.n, len(fake_features)
  common = dict(**extractor.describe(), n_real=n_real, n_gen=n_gen, dataset=real.dataset, label=label,
                noise_floor_n=real.noise_floor_n)
  floor = real.noise_floor
  records = []

  def add(base, value, std=None, noise_floor=None, notes=(), **extra):
    records.append(dict(metric=metric_name(base, extractor), value=value, std=std,
                        noise_floor=noise_floor, notes=list(notes), **common, **extra))

  if "fd" in opts.metrics:
    value, retried = frechet_distance_with_info(real.mu, real.sigma, *feature_stats(fake_features),
                                                opts.fd_eps)
    notes = []
    if retried:
      notes.append(f"sqrtm retried with {opts.fd_eps}*I added to both covariances")
    if min(n_real, n_gen) < extractor.feature_dim:
      notes.append(f"N ({min(n_real, n_gen)}) < feature dim ({extractor.feature_dim}): rank-deficient "
                   "covariance, FD biased upward; compare with KID")
    add("fd", value, noise_floor=floor.get("fd"), notes=notes)
  if "kid" in opts.metrics:
    mean, std = kid(real.features, fake_features, opts.kid_subsets, opts.kid_subset_size, opts.seed)
    add("kid", mean, std=std, noise_floor=floor.get("kid"),
        kid_subsets=opts.kid_subsets, kid_subset_size=min(n_real, n_gen, opts.kid_subset_size))
  if "pr" in opts.metrics:
    precision, recall = precision_recall(real.features, fake_features, opts.pr_k)
    add("precision", precision, noise_floor=floor.get("precision"), k=opts.pr_k)
    add("recall", recall, noise_floor=floor.get("recall"), k=opts.pr_k)
  if "is" in opts.metrics and fake_probs is not None:
    mean, std = inception_score(fake_probs, opts.is_splits)
    add("is", mean, std=std, notes=["noise_floor is None for IS; is_real = IS of the real images"],
        is_real=floor.get("is_real"), is_splits=opts.is_splits)
  return records


def evaluate(real: Images | RealStats, fake_images: Images, extractor: FeatureExtractor, *,
             value_range=None, dataset: str = "", label: int | None = None, cache_dir: str | None = None,
             **options) -> list[dict]:
  """Metric records comparing generated images with real ones (or their `RealStats`).

  Images: uint8 (N, H, W[, C]) or floats in `value_range`, 1 or 3 channels. `options` are
  `MetricOptions` fields (metrics=('fd', 'kid', 'pr', 'is'), kid_subsets, kid_subset_size, pr_k,
  is_splits, fd_eps, seed). Real statistics are cached, so calling this at every save interval
  with the same real images extracts their features once.
  """
  opts = MetricOptions(**options)
  if not isinstance(real, RealStats):
    real = real_stats(real, extractor, value_range=value_range, dataset=dataset, cache_dir=cache_dir,
                      options=opts)
  fake_features, fake_probs = extractor.features_and_probs(fake_images, value_range, label="generated")
  return evaluate_features(real, fake_features, fake_probs, extractor, label=label, options=opts)


def as_scalars(records: list[dict]) -> dict[str, float]:
  """Flat {name: value} for TensorBoard: value, `<name>_std`, `<name>_noise_floor`."""
  out = {}
  for r in records:
    suffix = "" if r.get("label") is None else f"_label{r['label']}"
    name = r["metric"] + suffix
    out[name] = float(r["value"])
    if r.get("std") is not None:
      out[f"{name}_std"] = float(r["std"])
    if r.get("noise_floor") is not None:
      out[f"{name}_noise_floor"] = float(r["noise_floor"])
  return out


def _fmt(value) -> str:
  return "–" if value is None else f"{value:.4g}"


def format_table(records: list[dict]) -> str:
  """Markdown table: one row per record, with its noise floor, N, extractor and resize."""
  lines = ["| metric | label | value | ± std | noise floor (real/real, N per half) | N real | N gen | "
           "extractor | weights sha256 | resize | notes |", "|" + "---|" * 11]
  for r in records:
    if r["noise_floor"] is not None:
      floor_text = f"{_fmt(r['noise_floor'])} (n={r['noise_floor_n']})"
    else:
      floor_text = f"IS(real) {_fmt(r['is_real'])}" if r.get("is_real") is not None else "–"
    extractor = r["extractor"] + (f" (fallback for {r['fallback_from']})" if r.get("fallback_from") else "")
    lines.append(f"| {r['metric']} | {'–' if r['label'] is None else r['label']} | {_fmt(r['value'])} | "
                 f"{_fmt(r['std'])} | {floor_text} | {r['n_real']} | {r['n_gen']} | {extractor} | "
                 f"{r['weights_sha256'][:12]} | {r['resize']} | {'; '.join(r['notes'])} |")
  return "\n".join(lines)
