"""The harmonisation literature's simple baselines, as options of a PrepNet row (`config.baselines`).

Each runs under the same protocol as the PrepNet rows — the same E_cov, data, epochs, model
selection and evaluation — and changes one thing (configs/prepnet_evidence.py has a row for each):

- `standardise`: per-site intensity standardisation of every image before E_cov, fitted on each
  site's own unlabelled training images (`data.intensity_standardisation`: z-scoring, Nyúl's
  piecewise-linear landmarks, full histogram matching to a reference site).
- `dann_weight` > 0: DANN — E_cov trained with a dataset-origin head on its features behind a
  gradient-reversal layer (`models.domain_adversarial`), on every site's training images.
- `test_time_bn`: AdaBN (Li et al., "Revisiting Batch Normalization for Practical Domain
  Adaptation", 2016/2018) — E_cov's BatchNorm statistics re-estimated on each evaluated site's
  training images (unlabelled) before it is evaluated there.
- BigAug-style strong appearance augmentation is a preprocessing option (`preprocess.augment`:
  gamma, blur_sharpen, noise, low_resolution), so it needs nothing here.
"""

from __future__ import annotations

import jax
import numpy as np

from prepnet_jax.data.intensity_standardisation import METHODS, SiteStandardiser
from prepnet_jax.models.domain_adversarial import ganin_lambda
from prepnet_jax.tasks.prepnet.steps import site_batch_statistics

STANDARDISE_OPTIONS = ("",) + tuple(METHODS)  # '' = off
ADABN_CHUNK = 256  # images per training-mode pass when re-estimating BatchNorm statistics


def standardiser(config, data) -> SiteStandardiser | None:
  """The row's fitted per-site standardiser, or None; fitted on every site's training split."""
  b = config.baselines
  if not b.standardise:
    return None
  if config.schedule != "none":
    raise ValueError(f"baselines.standardise={b.standardise!r} is a baseline of its own: it runs with "
                     f"schedule='none' (no AE), got schedule={config.schedule!r}")
  reference = b.reference_site or data.refs[0]
  if reference not in data.refs and reference not in data.names:
    raise ValueError(f"baselines.reference_site={reference!r} is not one of the sites {data.refs}")
  ref_index = data.refs.index(reference) if reference in data.refs else data.names.index(reference)
  images = {d: data.splits[(d, "train")].column("image") for d in range(len(data.refs))}
  return SiteStandardiser.fit(images, b.standardise, reference_site=ref_index)


def check(config) -> None:
  """Combinations the baselines do not support, refused before any training."""
  b = config.baselines
  if float(b.dann_weight) < 0:
    raise ValueError(f"baselines.dann_weight={b.dann_weight} must be ≥ 0 (0 = off)")
  if float(b.dann_weight) > 0 and config.schedule != "none":
    raise ValueError(f"baselines.dann_weight > 0 (DANN) trains E_cov on the raw images: it needs "
                     f"schedule='none', got schedule={config.schedule!r}")


def dann_reversal(config, step: int, total_steps: int) -> np.float32:
  """The gradient-reversal factor at `step`: dann_weight × Ganin's ramp over E_cov's training."""
  progress = min(1.0, step / max(1, total_steps))
  return np.float32(float(config.baselines.dann_weight) * float(ganin_lambda(progress)))


def site_adapted(cov, images: np.ndarray, shard):
  """`cov` with its BatchNorm statistics replaced by those of `images` (one site's training
  images, already as E_cov sees them): chunk statistics pooled exactly for the mean and as
  E[var + mean²] − mean² for the variance, weighted by chunk size."""
  chunks = [images[i:i + ADABN_CHUNK] for i in range(0, len(images), ADABN_CHUNK)]
  # The last chunk joins its predecessor when it is small: a handful of images gives a noisy variance.
  if len(chunks) > 1 and len(chunks[-1]) < ADABN_CHUNK // 4:
    chunks[-2:] = [np.concatenate(chunks[-2:])]
  pooled, total = None, 0
  for chunk in chunks:
    stats = jax.tree.map(lambda v: np.asarray(v, np.float64), site_batch_statistics(cov, shard(chunk)))
    moments = jax.tree.map(lambda v, n=len(chunk): v * n, _moments(stats))
    pooled = moments if pooled is None else jax.tree.map(np.add, pooled, moments)
    total += len(chunk)
  return cov.replace(batch_stats=_from_moments(jax.tree.map(lambda v: v / total, pooled)))


def _moments(stats: dict) -> dict:
  """BatchNorm {'mean', 'var'} leaves → first and second moments (mean, var + mean²)."""
  if "mean" in stats and "var" in stats:
    return {"m1": stats["mean"], "m2": stats["var"] + stats["mean"] ** 2}
  return {k: _moments(v) for k, v in stats.items()}


def _from_moments(moments: dict) -> dict:
  if "m1" in moments:
    return {"mean": moments["m1"].astype(np.float32),
            "var": np.maximum(moments["m2"] - moments["m1"] ** 2, 0.0).astype(np.float32)}
  return {k: _from_moments(v) for k, v in moments.items()}
