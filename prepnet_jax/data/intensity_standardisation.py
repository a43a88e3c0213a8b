"""Per-site intensity standardisation: the classical harmonisation baselines PrepNet is compared to.

Each baseline is fitted per site from that site's own unlabelled training images only (no
labels, no validation or test images), then applied to any batch using each example's `domain`
(site id). It works on the float32 (N, H, W, C) arrays the networks receive (already ImageNet
mean/std normalised), channel by channel, pooling all pixels of a site's training images.

z-scoring ("zscore"): x -> (x - mu_site,c) / sigma_site,c, with the mean and standard deviation of
all training pixels of the site and channel; the simplest scanner normalisation, e.g. as compared
in Reinhold et al. 2019, "Evaluating the impact of intensity normalization on MR image synthesis"
(SPIE Medical Imaging). It equalises the first two moments of each site, not the shape of its
histogram.

Nyul-Udupa standardisation ("nyul"): Nyul, Udupa & Zhang 2000, "New variants of a method of MRI
scale standardization" (IEEE TMI 19(2)). Landmarks are the percentiles NYUL_LANDMARKS (p1, the
deciles, p99) of a site's training pixels; intensities are mapped piecewise linearly so that each
site's landmarks land on the standard scale's, with linear extrapolation beyond the first and last
landmark using the end segments' slopes (no clipping, so outliers keep their order). Unlike the
paper, which learns the standard scale as the mean of the training images' landmarks after a
[p1, p99] -> [s1, s2] rescaling, the standard scale here is the reference site's own landmarks:
every site is mapped onto the reference site's intensity distribution, and the reference site
maps to itself.

Histogram matching ("histogram_matching"): the same mechanism with the 101 percentiles 0..100,
i.e. (piecewise-linear) quantile matching of each site's pooled histogram to the reference site's.

Coinciding landmarks (a flat histogram region, e.g. a constant background covering several
deciles) are separated by a tiny epsilon so every map is strictly increasing and never divides by
zero. Such an epsilon-wide end segment has a meaningless slope (a landmark difference over
epsilon), so extrapolation on that side uses the slope of the outermost segment whose landmarks
were genuinely distinct (1 if there is none, i.e. a constant site).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

METHODS = ("zscore", "nyul", "histogram_matching")
NYUL_LANDMARKS = (1, 10, 20, 30, 40, 50, 60, 70, 80, 90, 99)
HISTOGRAM_MATCHING_PERCENTILES = tuple(range(101))
STD_FLOOR = 1e-6
# Coinciding landmarks are moved apart by this much, relative to the site's intensity magnitude.
LANDMARK_EPSILON = 1e-6


def _check_images(images: Any, what: str) -> np.ndarray:
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[0] == 0:
    raise ValueError(f"{what}: expected a non-empty (N, H, W, C) array, got shape {images.shape}")
  if not np.issubdtype(images.dtype, np.number):
    raise TypeError(f"{what}: expected a numeric array, got dtype {images.dtype}")
  return images


def _strictly_increasing(raw: np.ndarray) -> np.ndarray:
  """Moves coinciding landmarks apart by a tiny epsilon (a no-op on distinct ones)."""
  eps = LANDMARK_EPSILON * max(1.0, float(np.max(np.abs(raw))))
  out = raw.astype(np.float64).copy()
  for i in range(1, len(out)):
    out[i] = max(out[i], out[i - 1] + eps)
  return out


def _genuine_segments(raw: np.ndarray) -> np.ndarray:
  """Which landmark segments were distinct before the epsilon separation (bool, one per segment)."""
  eps = LANDMARK_EPSILON * max(1.0, float(np.max(np.abs(raw))))
  return np.diff(raw) > eps


def _extrapolation_slopes(source_raw: np.ndarray, source: np.ndarray,
                          target: np.ndarray) -> tuple[float, float]:
  """(below, above) slopes: the end segments', or the outermost genuinely distinct segments'."""
  slopes = np.diff(target) / np.diff(source)
  genuine = np.flatnonzero(_genuine_segments(source_raw))
  if len(genuine) == 0:  # a constant site: shift it onto the target, keep its (zero) spread
    return 1.0, 1.0
  return float(slopes[genuine[0]]), float(slopes[genuine[-1]])


def piecewise_linear(x: np.ndarray, source: np.ndarray, target: np.ndarray, slope_below: float,
                     slope_above: float) -> np.ndarray:
  """Maps `source` landmarks onto `target` linearly in between, linearly extrapolated outside.

  `source` must be strictly increasing. Computed in float64 (the caller casts).
  """
  x = np.asarray(x, np.float64)
  y = np.interp(x, source, target)
  below, above = x < source[0], x > source[-1]
  y[below] = target[0] + (x[below] - source[0]) * slope_below
  y[above] = target[-1] + (x[above] - source[-1]) * slope_above
  return y


class SiteStandardiser:
  """A fitted per-site, per-channel intensity map; call it on a batch with its site ids."""

  def __init__(self, method: str, reference_site: int, percentiles: tuple | None,
               sites: Mapping[int, Mapping[str, np.ndarray]]):
    """Use `fit` (or `from_dict`); `sites[k]` holds `mean`/`std` (zscore) or `landmarks`,
    `target` and `slopes` (C x 2: below, above) for the quantile methods."""
    if method not in METHODS:
      raise ValueError(f"unknown standardisation method {method!r}; expected one of {METHODS}")
    self.method, self.reference_site = method, int(reference_site)
    self.percentiles = None if percentiles is None else tuple(percentiles)
    self.sites = {int(k): {name: np.asarray(v, np.float64) for name, v in p.items()}
                  for k, p in sites.items()}
    self.channels = len(next(iter(self.sites.values()))["mean" if method == "zscore" else "landmarks"])

  @classmethod
  def fit(cls, images_by_site: Mapping[int, np.ndarray], method: str, reference_site: int = 0,
          landmarks: tuple = NYUL_LANDMARKS) -> SiteStandardiser:
    """Fits each site's parameters from its unlabelled training images, (N, H, W, C) per site.

    `landmarks` (percentiles in [0, 100]) is used by "nyul" only; "histogram_matching" always
    matches the 101 percentiles 0..100, and "zscore" has none (passing other landmarks to them
    is an error rather than silently ignored).
    """
    if method not in METHODS:
      raise ValueError(f"unknown standardisation method {method!r}; expected one of {METHODS}")
    if not images_by_site:
      raise ValueError("images_by_site is empty: need the training images of at least one site")
    landmarks = tuple(float(p) for p in landmarks)
    if method != "nyul" and landmarks != tuple(map(float, NYUL_LANDMARKS)):
      raise ValueError(f"landmarks are only used by method 'nyul', got landmarks={landmarks} "
                       f"with method {method!r}")
    images = {int(k): _check_images(v, f"site {k}") for k, v in images_by_site.items()}
    bad = sorted(k for k, v in images.items() if not np.all(np.isfinite(v)))
    if bad:
      raise ValueError(f"site(s) {bad}: training images contain NaN or infinite values")
    channels = {v.shape[-1] for v in images.values()}
    if len(channels) != 1:
      raise ValueError(f"every site must have the same channel count, got "
                       f"{ {k: v.shape[-1] for k, v in images.items()} }")
    reference_site = int(reference_site)
    if method != "zscore" and reference_site not in images:
      raise ValueError(f"reference_site {reference_site} has no training images; sites are {sorted(images)}")
    # One channel at a time, in the images' own dtype with float64 accumulators: a site's training
    # set can be gigabytes, and a float64 copy of all of it would double or quadruple that.
    def per_channel(stat, v: np.ndarray) -> np.ndarray:
      return np.asarray([stat(v[..., c]) for c in range(v.shape[-1])], np.float64)

    if method == "zscore":
      sites = {k: dict(mean=per_channel(lambda x: x.mean(dtype=np.float64), v),
                       std=np.maximum(per_channel(lambda x: x.std(dtype=np.float64), v), STD_FLOOR))
               for k, v in images.items()}
      return cls(method, reference_site, None, sites)

    percentiles = landmarks if method == "nyul" else tuple(map(float, HISTOGRAM_MATCHING_PERCENTILES))
    q = np.asarray(percentiles)
    if len(q) < 2 or np.any(np.diff(q) <= 0) or q[0] < 0 or q[-1] > 100:
      raise ValueError(f"landmarks must be >= 2 strictly increasing percentiles in [0, 100], "
                       f"got {percentiles}")
    raw = {k: np.stack([np.percentile(v[..., c], q).astype(np.float64) for c in range(v.shape[-1])])
           for k, v in images.items()}  # C x K per site
    target = np.stack([_strictly_increasing(r) for r in raw[reference_site]])
    sites = {}
    for k, site_raw in raw.items():
      source = np.stack([_strictly_increasing(r) for r in site_raw])
      slopes = np.asarray([_extrapolation_slopes(site_raw[c], source[c], target[c])
                           for c in range(len(source))])
      sites[k] = dict(landmarks=source, target=target, slopes=slopes)
    return cls(method, reference_site, percentiles, sites)

  def __call__(self, images: np.ndarray, domains: np.ndarray) -> np.ndarray:
    """Maps each example with its own site's parameters; float32, same shape as `images`."""
    images = _check_images(images, "images")
    domains = np.asarray(domains)
    if domains.shape != images.shape[:1] or not np.issubdtype(domains.dtype, np.integer):
      raise ValueError(f"domains must be {images.shape[0]} integer site ids (one per image), "
                       f"got shape {domains.shape} dtype {domains.dtype}")
    if images.shape[-1] != self.channels:
      raise ValueError(f"fitted on {self.channels}-channel images, got shape {images.shape}")
    unknown = sorted(set(domains.tolist()) - set(self.sites))
    if unknown:
      raise ValueError(f"unknown site id(s) {unknown}: the standardiser was fitted on sites "
                       f"{sorted(self.sites)}")
    out = np.empty(images.shape, np.float32)
    for site in np.unique(domains):
      rows, params = domains == site, self.sites[int(site)]
      x = images[rows].astype(np.float64)
      for c in range(self.channels):
        if self.method == "zscore":
          y = (x[..., c] - params["mean"][c]) / params["std"][c]
        else:
          y = piecewise_linear(x[..., c], params["landmarks"][c], params["target"][c], *params["slopes"][c])
        out[rows, ..., c] = y
    return out

  def to_dict(self) -> dict:
    """JSON-able parameters (site ids become string keys), for the run's report and `from_dict`."""
    return dict(method=self.method, reference_site=self.reference_site,
                percentiles=None if self.percentiles is None else list(self.percentiles),
                sites={str(k): {name: v.tolist() for name, v in p.items()}
                       for k, p in sorted(self.sites.items())})

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> SiteStandardiser:
    """Rebuilds a standardiser from `to_dict()` output (e.g. a report's JSON)."""
    return cls(d["method"], d["reference_site"], d["percentiles"],
               {int(k): p for k, p in d["sites"].items()})
