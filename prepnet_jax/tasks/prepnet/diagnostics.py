"""Harmonisation diagnostics the thesis lacked.

- A *fresh* dataset-origin classifier trained after the fact on raw images and, separately, on
  AE outputs: if its balanced accuracy on held-out patients drops to chance (1/K), the dataset
  style is really gone; if it stays high, E_img was merely fooled.
- Reconstruction PSNR/SSIM per dataset (dm-pix, on images mapped back to [0, 1]).
- Per-dataset intensity histograms before/after, and before/after image grids per dataset
  (PNG in reports/, titled with the row and site, and TensorBoard).
"""

from __future__ import annotations

import os

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from prepnet_jax import models
from prepnet_jax.data import pipeline, transforms
from prepnet_jax.eval import classify, figures, metrics as metrics_lib, prepnet_layout
from prepnet_jax.runtime import compile_cache, optimizers, rundir, sharding, writers
from prepnet_jax.runtime.state import create_train_state
from prepnet_jax.tasks.classifier import train as classifier
from prepnet_jax.tasks.prepnet import steps


def _reconstruct_all(run, src) -> np.ndarray:
  """AE outputs of `src` as E_cov sees them (grayscaled if the row grayscales), from the row's cache."""
  x_hat = run.reconstructions(run.ae, src).column("image")
  return np.asarray(steps.grayscale3(jnp.asarray(x_hat))) if run.gray_cov else x_hat


def _to_unit(x: np.ndarray, value_range: str) -> np.ndarray:
  return np.stack([transforms.denormalize(img, value_range) for img in x]).astype(np.float32) / 255.0


def origin_classifier_accuracy(config, train_images, train_domains, test_images, test_domains, mesh,
                               num_domains: int) -> dict:
  """Balanced accuracy of a freshly initialised small CNN predicting the dataset of origin."""
  dc = config.diagnostics
  bs = int(config.batch_size)
  source = pipeline.ArraySource({"image": train_images.astype(np.float32), "label": train_domains.astype(np.int32)})
  spe = pipeline.steps_per_epoch(source, bs)
  model, tx = compile_cache.build_once(build_origin_classifier, dc.origin_model, num_domains,
                                       float(dc.origin_width), config.optim.img, spe, int(dc.origin_epochs))
  state = sharding.replicate(create_train_state(model, tx, jax.random.key(int(config.seed) + 7),
                                                jnp.zeros((1,) + train_images.shape[1:])), mesh)
  it = pipeline.make_iterator(pipeline.train_dataset(source, pipeline.identity, bs, seed=int(config.seed) + 7))
  for _ in range(spe * int(dc.origin_epochs)):
    state, _ = classifier.train_step(state, sharding.shard_batch(next(it), mesh), None)
  test = pipeline.ArraySource({"image": test_images.astype(np.float32), "label": test_domains.astype(np.int32)})
  logits, labels = classify.predict_logits(state, test, pipeline.identity, bs, mesh)
  m = metrics_lib.classification_metrics(labels, classify.logits_to_probs(logits))
  return {"balanced_accuracy": m["balanced_accuracy"], "accuracy": m["accuracy"], "chance": 1.0 / num_domains}


def build_origin_classifier(name: str, num_domains: int, width: float, optim_cfg, spe: int, epochs: int):
  """Module and optimizer of the origin classifier; built through `build_once` so every row
  reuses the compiled training step (the jitted step treats both as static)."""
  model = models.get_classifier(name, num_domains, width_multiplier=width)
  return model, optimizers.make_optimizer(optim_cfg, spe, spe * epochs)


def row_name(config, report_name: str) -> str:
  """The display name of the row whose diagnostics are `report_name` (`prepnet_layout.diagnostics_report`)."""
  slug = os.path.dirname(report_name)
  return next((r["name"] for r in config.rows if prepnet_layout.row_slug(r["name"]) == slug), slug)


def run_all(config, data, run, workdir: str, report_name: str, writer, with_figures: bool = True) -> dict:
  """Writes `reports/<report_name>.json` and the figures beside it; returns the report. Without
  `with_figures` (the later seeds of a row) only the numbers, to `reports/<report_name>_seed_<s>.json`."""
  mesh = run.mesh
  out_dir = os.path.dirname(os.path.join(rundir.reports_dir(workdir), report_name))
  os.makedirs(out_dir, exist_ok=True)
  vr = config.preprocess.value_range
  k = len(data.refs)
  # Like with like: PSNR/SSIM and the origin classifiers see the raw images through the same
  # preprocessing E_cov's input gets (grayscaled on both sides when the row grayscales).
  result = {"datasets": data.names, "reconstruction": {}, "seed": int(config.seed),
            "comparison": "grayscaled raw vs grayscaled AE output" if config.grayscale_cov else "raw vs AE output"}
  raw = {s: np.concatenate([data.splits[(d, s)].column("image") for d in range(k)]) for s in ("train", "test")}
  dom = {s: np.concatenate([data.splits[(d, s)].column("domain") for d in range(k)]) for s in ("train", "test")}
  recon = {s: np.concatenate([_reconstruct_all(run, data.splits[(d, s)]) for d in range(k)]) for s in ("train", "test")}
  if config.grayscale_cov:  # compare like with like: the classifier sees grayscaled inputs both times
    raw_view = {s: np.asarray(steps.grayscale3(jnp.asarray(v))) for s, v in raw.items()}
  else:
    raw_view = raw
  # The raw-image origin classifier is the same for every row of a seed (same data, same
  # classifier seed): train it once per (seed, grayscale, diagnostics settings) and reuse it.
  raw_key = (int(config.seed), bool(config.grayscale_cov), compile_cache.setting_key(config.diagnostics))
  if raw_key not in data.origin_raw_cache:
    data.origin_raw_cache[raw_key] = origin_classifier_accuracy(config, raw_view["train"], dom["train"],
                                                                raw_view["test"], dom["test"], mesh, k)
  result["origin_raw"] = data.origin_raw_cache[raw_key]
  result["origin_normalised"] = origin_classifier_accuracy(config, recon["train"], dom["train"], recon["test"],
                                                           dom["test"], mesh, k)
  row = row_name(config, report_name)
  after_label = "AE output\n(grayscaled)" if config.grayscale_cov else "AE output"
  # A Figure object, not pyplot: no global backend switch (safe in notebooks and threads).
  hist_fig = Figure(figsize=(4 * k, 3))
  axes = hist_fig.subplots(1, k, squeeze=False)
  grids = {}
  for d, name in enumerate(data.names):
    mask = dom["test"] == d
    x = _to_unit(raw_view["test"][mask], vr)
    y = _to_unit(recon["test"][mask], vr)
    result["reconstruction"][name] = {
        "psnr": float(jnp.mean(dm_pix.psnr(jnp.asarray(x), jnp.asarray(y)))),
        "ssim": float(jnp.mean(dm_pix.ssim(jnp.asarray(x), jnp.asarray(y)))),
        "n": int(mask.sum())}
    if not with_figures:
      continue
    ax = axes[0, d]
    ax.hist(x.mean(-1).ravel(), bins=64, range=(0, 1), alpha=0.6, density=True, label="before")
    ax.hist(y.mean(-1).ravel(), bins=64, range=(0, 1), alpha=0.6, density=True, label="after AE")
    ax.set_title(f"{row} — {name}: intensity", fontsize=9)
    ax.legend()
    n = min(8, int(mask.sum()))
    before = writers.to_uint8(x[:n])
    after = writers.to_uint8(y[:n])
    grids[name] = writers.image_grid(np.concatenate([before, after]), ncols=n)
    figures.before_after_grid(os.path.join(out_dir, f"before_after_{name}.png"), before, after,
                              f"{row} — site {name} (test slices, seed {int(config.seed)})",
                              ("raw (grayscaled)" if config.grayscale_cov else "raw", after_label))
  if with_figures:
    hist_fig.tight_layout()
    hist_fig.savefig(os.path.join(out_dir, "intensity_histograms.png"), dpi=90)
    writer.write_images(0, {f"{os.path.basename(out_dir)}/before_after_{n}": g[None] for n, g in grids.items()})
  rundir.write_report(workdir, report_name if with_figures else f"{report_name}_seed_{int(config.seed)}", result, indent=1)
  print(f"[prepnet] diagnostics {os.path.basename(out_dir)}: fresh origin classifier BA raw="
        f"{result['origin_raw']['balanced_accuracy']:.3f} normalised={result['origin_normalised']['balanced_accuracy']:.3f}"
        f" (chance {1.0 / k:.3f}); PSNR " + ", ".join(f"{n}={v['psnr']:.1f}dB" for n, v in result["reconstruction"].items()),
        flush=True)
  return result
