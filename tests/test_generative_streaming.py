"""Generator training on data larger than `data.cache_mb`: the training set is streamed (never
materialised), and training batches, losses, Fréchet distances and metrics equal those of the
in-memory cache; the real side of the metrics accumulates batch by batch to the same numbers."""

from __future__ import annotations

import json
import os
import types

import jax
import ml_collections
import numpy as np

from helpers import load_config
from prepnet_jax.data import diffaugment, pipeline
from prepnet_jax.eval import gen_metrics, generators
from prepnet_jax.runtime import checkpointing, writers
from prepnet_jax.tasks.generative import common as gen_common, gan as gan_train
from prepnet_jax.tasks.stylegan2 import snapshots, train as sg2_train
from test_gan_training import tiny_config


def tiny_stylegan2(**data_fields):
  """Two minibatches of 4 of an 8-px StyleGAN2 (lazy R1 and path length included), with metrics
  and the leak check at kimg 0 and at the end."""
  c = load_config("stylegan2")
  c.preprocess.image_size = 8
  c.data.phantom_overrides = {"num_patients": 24, "image_size": 16}
  c.data.update(data_fields)
  c.model.z_dim, c.model.w_dim, c.model.mapping_layers = 8, 8, 1
  c.model.channel_base, c.model.channel_max = 64, 8
  c.batch_size = 4
  c.total_kimg = c.snapshot_kimg = c.checkpoint_kimg = 0.008
  c.log_every_steps = 1
  c.g_reg_interval, c.d_reg_interval = 2, 2
  c.eval.num_generated, c.eval.grid_size, c.eval.metrics = 16, 4, ("fd", "kid", "pr")
  return c


class _RecordingWriter:
  """The run's metric writer, keeping every scalar it writes."""

  def __init__(self, inner):
    self.inner, self.scalars = inner, []

  def write_scalars(self, step, scalars):
    self.scalars.append((int(step), {k: float(v) for k, v in scalars.items()}))
    self.inner.write_scalars(step, scalars)

  def __getattr__(self, name):
    return getattr(self.inner, name)


def _run(train, config, workdir, monkeypatch, *, forbid_materialize: bool):
  """Trains `config` into `workdir`; returns the train/* scalars written. With `forbid_materialize`,
  materialising any dataset (the in-memory cache) fails the test."""
  recorded = []
  create = writers.create_writer

  def create_writer(path):
    recorded.append(_RecordingWriter(create(path)))
    return recorded[-1]

  materialize = pipeline.materialize
  grid_cells = int(config.num_grid_images if "num_grid_images" in config else config.eval.grid_size)

  def no_materialize(source, *args, **kwargs):
    # The few images of reports/reals.png (one per sample-grid cell) may be; the training set not.
    if len(source) > grid_cells:
      raise AssertionError("the training set was materialised although it exceeds data.cache_mb")
    return materialize(source, *args, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(writers, "create_writer", create_writer)
    if forbid_materialize:
      patch.setattr(pipeline, "materialize", no_materialize)
    train.train_and_evaluate(config, str(workdir))
  return [(step, {k: v for k, v in s.items() if k.startswith("train/")}) for step, s in recorded[0].scalars
          if any(k.startswith("train/") for k in s)]


def _leaves(workdir, step):
  tree, meta = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), None).restore_tree(step)
  leaves = [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)
                       else x) for x in jax.tree_util.tree_leaves(tree)]
  return leaves, meta


def test_training_images_are_cached_only_when_small():
  config = tiny_config("cgan")
  cached = gen_common.load_training_images(config)
  assert isinstance(cached.train_source, pipeline.ArraySource) and cached.train_preprocess is pipeline.identity
  config.data.cache_mb = 0
  streamed = gen_common.load_training_images(config)
  assert isinstance(streamed.train_source, generators.LabelledImages)
  np.testing.assert_array_equal(streamed.labels, cached.labels)
  np.testing.assert_array_equal(pipeline.column(streamed.train_source, "label"), cached.labels)
  first = streamed.train_preprocess(dict(streamed.train_source[0]), np.random.default_rng(0))
  np.testing.assert_array_equal(first["image"], cached.train_source[0]["image"])


def test_cgan_streamed_over_cache_mb_trains_as_the_cached_run(tmp_path, monkeypatch):
  """CGAN (balanced batches, conditional Fréchet fakes) with `data.cache_mb=0`: no dataset is
  materialised, and the losses of every step, the Fréchet history and the weights are those of
  the run that keeps its (tiny) training set in memory."""
  overrides = {"fd.enabled": True, "num_steps": 2, "save_every": 2, "sample_every": 2}
  cached = _run(gan_train, tiny_config("cgan", **overrides), tmp_path / "cached", monkeypatch,
                forbid_materialize=False)
  streamed = _run(gan_train, tiny_config("cgan", **overrides, **{"data.cache_mb": 0}), tmp_path / "streamed",
                  monkeypatch, forbid_materialize=True)
  assert [step for step, _ in streamed] == [1, 2] and "train/d_loss" in streamed[0][1]
  assert streamed == cached
  histories = []
  for name in ("cached", "streamed"):
    with open(tmp_path / name / "reports" / "fd_history.json") as f:
      histories.append([{k: v for k, v in r.items() if k != "records"} for r in json.load(f)["history"]])
  assert [r["step"] for r in histories[1]] == [0, 2] and histories[0] == histories[1]
  for a, b in zip(_leaves(tmp_path / "cached", 2)[0], _leaves(tmp_path / "streamed", 2)[0]):
    np.testing.assert_array_equal(a, b)


def test_stylegan2_streamed_over_cache_mb_trains_as_the_cached_run(tmp_path, monkeypatch):
  """StyleGAN2 with `data.cache_mb=0` and metrics on: the same losses, snapshot metrics (FD, KID,
  precision/recall, leak fractions), data-iterator position and weights as the cached run."""
  cached = _run(sg2_train, tiny_stylegan2(), tmp_path / "cached", monkeypatch, forbid_materialize=False)
  streamed = _run(sg2_train, tiny_stylegan2(cache_mb=0), tmp_path / "streamed", monkeypatch,
                  forbid_materialize=True)
  assert len(streamed) == 2 and streamed == cached
  histories = []
  for name in ("cached", "streamed"):
    with open(tmp_path / name / "reports" / "metrics_history.json") as f:
      histories.append([{k: v for k, v in r.items() if k != "records"} for r in json.load(f)])
  assert [r["kimg"] for r in histories[1]] == [0.0, 0.008] and "fd_randinit" in histories[1][-1]
  assert histories[0] == histories[1]
  (a, meta_a), (b, meta_b) = _leaves(tmp_path / "cached", 2), _leaves(tmp_path / "streamed", 2)
  assert meta_a["data_iterator"] == meta_b["data_iterator"]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def _gray_patched_images(n: int, size: int, seed: int = 0) -> np.ndarray:
  """float32 (n, size, size, 1) in [-1, 1]; every third image has a mid-gray (0) corner block."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, size=(n, size, size, 1)).astype(np.float32)
  images[::3, :size // 2, :size // 2] = 0.0
  return images


def test_streamed_real_stats_equal_the_in_memory_ones():
  extractor = gen_metrics.get_extractor("randinit", seed=0, image_size=16)
  images = writers.to_uint8(_gray_patched_images(150, 16), (-1.0, 1.0))  # > 2 extractor batches of 64
  whole = gen_metrics.real_stats(images, extractor, dataset="d")
  streamed = gen_metrics.streamed_real_stats((images[i:i + 37] for i in range(0, 150, 37)), extractor, dataset="d")
  np.testing.assert_array_equal(streamed.features, whole.features)
  np.testing.assert_array_equal(streamed.sigma, whole.sigma)
  assert streamed.content_sha256 == whole.content_sha256
  assert streamed.noise_floor == whole.noise_floor and streamed.n == 150


def test_uint8_batches_stream_the_preprocessed_source_in_order():
  images = _gray_patched_images(13, 8)
  source = pipeline.ArraySource({"image": images, "label": np.arange(13, dtype=np.int32)})
  batches = list(generators.uint8_batches(source, pipeline.identity, batch_size=5))
  assert [len(b) for b in batches] == [5, 5, 3]
  np.testing.assert_array_equal(np.concatenate(batches), writers.to_uint8(images, (-1.0, 1.0)))


def test_stylegan2_snapshot_streams_a_subset_of_the_reals(tmp_path):
  """`eval.num_real` images drawn as before, streamed: features and leak fractions equal those of
  the subset held in memory."""
  images = _gray_patched_images(150, 16)
  reals = pipeline.ArraySource({"image": images, "label": np.zeros(150, np.int32)})
  config = ml_collections.ConfigDict(dict(
      seed=3, data=dict(train="t", train_split="s", class_filter=[], read_threads=2, worker_processes=0,
                        prefetch_batches=2, cache_mb=0),
      eval=dict(num_real=100, latent_seed=0, extractor="randinit", extractor_seed=0, extractor_image_size=0,
                metrics=("fd", "kid"), leak_check=True, grid_size=4)))
  setup = types.SimpleNamespace(augment=diffaugment.DiffAugment(), hp=types.SimpleNamespace(resolution=16, c_dim=0))
  snapshot = snapshots.Snapshotter(config, setup, str(tmp_path), reals, pipeline.identity, writer=None)
  stats = snapshot.load_real_stats()
  pick = np.sort(np.random.default_rng(3).permutation(150)[:100])
  subset = writers.to_uint8(images[pick], (-1.0, 1.0))
  whole = gen_metrics.real_stats(subset, snapshot.get_extractor(), dataset=snapshot.dataset,
                                 options=gen_metrics.MetricOptions(metrics=("fd", "kid")))
  np.testing.assert_array_equal(stats.features, whole.features)
  assert stats.noise_floor == whole.noise_floor
  assert snapshot.real_leaks == diffaugment.leak_fractions(subset, setup.augment)
  assert snapshot.real_leaks["cutout_leak"] > 0
