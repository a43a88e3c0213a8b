"""StyleGAN2 snapshots: Fréchet distance / KID with the named feature extractor, the
augmentation-leak check and a fixed-latent sample grid (TensorBoard and
`reports/fakes_<kimg>.png`), every `snapshot_kimg` and at kimg 0; the records accumulate in
`reports/metrics_history.json`, drawn as `reports/curve_<metric>.png` against kimg. Beside the
fakes, `reports/reals.png` shows training images at the same layout (and labels).
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np

from prepnet_jax.data import diffaugment, pipeline
from prepnet_jax.eval import figures, generators
from prepnet_jax.runtime import rundir, writers
from prepnet_jax.tasks.stylegan2 import steps

HISTORY = "metrics_history"


class Snapshotter:
  """Metrics, leak check and sample grids at one kimg; keeps reports/metrics_history.json."""

  def __init__(self, config, setup: steps.Setup, workdir: str, reals, preprocess: pipeline.Preprocess, writer):
    """`reals`/`preprocess`: the training set as the input pipeline reads it (examples with a [-1, 1]
    `image` and a `label`); its images are streamed once, at the first snapshot with metrics."""
    self.config, self.setup, self.writer = config, setup, writer
    self.workdir = workdir
    self.reports = rundir.reports_dir(workdir)
    self.history_path = os.path.join(self.reports, f"{HISTORY}.json")
    eval_cfg = config.eval
    self.labels = pipeline.column(reals, "label")
    self.grid_columns = int(math.ceil(math.sqrt(int(eval_cfg.grid_size))))
    if jax.process_index() == 0 and not os.path.exists(os.path.join(self.reports, "reals.png")):
      self.save_reals(reals, preprocess, setup.hp.c_dim > 0)
    num_real = int(eval_cfg.num_real) or len(reals)
    if num_real < len(reals):  # a fixed random subset, in dataset order
      pick = np.random.default_rng(int(config.seed)).permutation(len(reals))[:num_real]
      reals = pipeline.SubsetSource(reals, np.sort(pick))
    self.reals, self.preprocess = reals, preprocess
    key = jax.random.PRNGKey(int(eval_cfg.latent_seed))
    self.grid_key, self.metric_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
    self.dataset = f"{config.data.train}:{config.data.train_split}:class_filter={config.data.class_filter}"
    self.extractor = None
    self.real_stats, self.real_leaks = None, {}

  def save_reals(self, reals, preprocess: pipeline.Preprocess, conditional: bool) -> str:
    """`reports/reals.png`: the fakes' grid drawn with training images. A conditional grid's fakes
    take the labels of the first training examples in turn (`steps.generate_uint8`), so those
    examples fill it; an unconditional one shows images spread evenly over the set."""
    count = int(self.config.eval.grid_size)
    picks = (np.arange(count) % len(reals) if conditional
             else np.linspace(0, len(reals) - 1, count).round().astype(int))
    images = pipeline.materialize(pipeline.SubsetSource(reals, picks), preprocess).column("image")
    grid = writers.image_grid(writers.to_uint8(images, (-1.0, 1.0)), ncols=self.grid_columns)
    return writers.save_png(os.path.join(self.reports, "reals.png"), grid)

  def get_extractor(self):
    """The named feature extractor (built once); 'randinit' sees images at `extractor_image_size`."""
    if self.extractor is None:
      from prepnet_jax.eval import gen_metrics
      spec, eval_cfg = self.config.eval.extractor, self.config.eval
      kwargs = {}
      if spec == "randinit":
        kwargs = dict(seed=int(eval_cfg.extractor_seed),
                      image_size=int(eval_cfg.extractor_image_size) or self.setup.hp.resolution)
      self.extractor = gen_metrics.get_extractor(spec, **kwargs)
    return self.extractor

  def load_real_stats(self):
    """Features of the real images (and their DiffAugment leak fractions), from one streamed pass
    over them: only their features stay in memory."""
    if self.real_stats is None:
      from prepnet_jax.eval import gen_metrics
      leaks, total = {}, 0

      def batches():
        nonlocal total
        for images in generators.uint8_batches(self.reals, self.preprocess,
                                               options=pipeline.loader_options(self.config.data)):
          if self.config.eval.leak_check:  # per-batch fractions → counts of images
            for k, v in diffaugment.leak_fractions(images, self.setup.augment).items():
              leaks[k] = leaks.get(k, 0) + round(v * len(images))
          total += len(images)
          yield images

      options = gen_metrics.MetricOptions(metrics=tuple(self.config.eval.metrics))
      self.real_stats = gen_metrics.streamed_real_stats(batches(), self.get_extractor(), dataset=self.dataset,
                                                        options=options)
      self.real_leaks = {k: count / total for k, count in leaks.items()}
    return self.real_stats

  def load_history(self, kimg: float) -> list[dict]:
    """History up to `kimg` (entries from after the restored checkpoint are dropped)."""
    if not os.path.exists(self.history_path):
      return []
    with open(self.history_path) as f:
      return [r for r in json.load(f) if r["kimg"] <= kimg + 1e-9]

  def __call__(self, state: steps.StyleGAN2State, history: list[dict]) -> dict:
    from prepnet_jax.eval import gen_metrics
    eval_cfg, hp = self.config.eval, self.setup.hp
    nimg = int(jax.device_get(state.step)) * hp.batch_size
    kimg = nimg / 1000.0
    record = {"kimg": kimg, "nimg": nimg, "step": int(jax.device_get(state.step))}
    if int(eval_cfg.num_generated) > 0:
      fakes = steps.generate_uint8(self.setup, state, self.metric_key, int(eval_cfg.num_generated), self.labels,
                             float(eval_cfg.truncation_psi))
      records = gen_metrics.evaluate(self.load_real_stats(), fakes, self.get_extractor(),
                                     dataset=self.dataset, metrics=tuple(eval_cfg.metrics))
      record.update(gen_metrics.as_scalars(records))
      record["records"] = records
      if eval_cfg.leak_check:
        record.update({f"fake_{k}": v for k, v in diffaugment.leak_fractions(fakes, self.setup.augment).items()})
        record.update({f"real_{k}": v for k, v in self.real_leaks.items()})
    grid = steps.generate_uint8(self.setup, state, self.grid_key, int(eval_cfg.grid_size), self.labels,
                          float(eval_cfg.truncation_psi), noise_mode="const")
    grid = writers.image_grid(grid, ncols=self.grid_columns)
    writers.save_png(os.path.join(self.reports, f"fakes_{kimg:010.3f}.png"), grid)
    self.writer.write_images(nimg, {"fakes": grid[None]})
    numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    self.writer.write_scalars(nimg, {f"snapshot/{k}": v for k, v in numbers.items()})
    history.append(record)
    rundir.write_report(self.workdir, HISTORY, history)
    if jax.process_index() == 0:
      figures.history_curves(self.reports, history, "kimg", "kimg", "StyleGAN2")
    shown = ", ".join(f"{k}={v:.4g}" for k, v in numbers.items()
                      if k not in ("nimg", "step") and not k.endswith(("_std", "_noise_floor")))
    print(f"[stylegan2] snapshot {shown}", flush=True)
    return record
