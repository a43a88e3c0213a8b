"""The streaming input pipeline: per-process slices, padding, caching rule, resume, workers."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from prepnet_jax.data import datasets, pipeline


def _source(n=23, size=6):
  images = np.arange(n * size * size, dtype=np.uint8).reshape(n, size, size, 1)
  return pipeline.ArraySource({"image": images, "label": np.arange(n) % 2, "index": np.arange(n)})


def _augment(example, rng):
  """A random per-example change, so the seeding of every example is visible."""
  out = dict(example)
  out["noise"] = np.float32(rng.normal())
  return out


def _as_processes(monkeypatch, index, count):
  monkeypatch.setattr(jax, "process_index", lambda: index)
  monkeypatch.setattr(jax, "process_count", lambda: count)


def test_process_slices_make_up_the_single_process_batch(monkeypatch):
  source = _source()
  whole = pipeline.train_dataset(source, _augment, 8, seed=3)
  batches = [whole[b] for b in range(5)]
  parts = []
  for p in range(2):
    _as_processes(monkeypatch, p, 2)
    parts.append([pipeline.train_dataset(source, _augment, 8, seed=3)[b] for b in range(5)])
  for b in range(5):
    for key in ("index", "noise"):
      np.testing.assert_array_equal(np.concatenate([parts[0][b][key], parts[1][b][key]]), batches[b][key])
  # Epochs: every example once per epoch (23 examples, 8 per batch → 2 full batches + 7 of the next).
  seen = np.concatenate([batches[b]["index"] for b in range(5)])
  assert sorted(seen[:23]) == list(range(23))


def test_eval_batches_cover_every_example_once_with_padding(monkeypatch):
  source = _source(n=21)
  got = list(pipeline.eval_batches(source, pipeline.identity, 8))
  assert [valid for _, valid in got] == [8, 8, 5]
  indices = np.concatenate([b["index"][:v] for b, v in got])
  np.testing.assert_array_equal(indices, np.arange(21))
  assert got[-1][0]["valid"].tolist() == [True] * 5 + [False] * 3
  # Two processes: each gets half of every global batch, in order.
  halves = []
  for p in range(2):
    _as_processes(monkeypatch, p, 2)
    halves.append(list(pipeline.eval_batches(source, pipeline.identity, 8)))
  for (a, va), (b, vb), (whole, v) in zip(halves[0], halves[1], got):
    assert va == vb == v
    np.testing.assert_array_equal(np.concatenate([a["index"], b["index"]]), whole["index"])


def test_resumed_iterator_continues_exactly():
  source = _source()
  dataset = pipeline.train_dataset(source, _augment, 4, seed=1)
  it = pipeline.make_iterator(dataset)
  first = [next(it) for _ in range(3)]
  state = it.get_state()
  rest = [next(it) for _ in range(4)]
  resumed = pipeline.make_iterator(pipeline.train_dataset(source, _augment, 4, seed=1), state)
  for a, b in zip(rest, [next(resumed) for _ in range(4)]):
    np.testing.assert_array_equal(a["index"], b["index"])
    np.testing.assert_array_equal(a["noise"], b["noise"])
  # The iterator gives the random-access batches, in order.
  np.testing.assert_array_equal(first[1]["noise"], dataset[1]["noise"])


_WORKERS_PROBE = """
import numpy as np
from prepnet_jax.data import pipeline
import test_pipeline_streaming as t
source = t._source()
dataset = pipeline.train_dataset(source, t._augment, 4, seed=2)
threads = pipeline.make_iterator(dataset, options=pipeline.LoaderOptions(read_threads=3))
workers = pipeline.make_iterator(dataset, options=pipeline.LoaderOptions(read_threads=1, worker_processes=2))
for _ in range(5):
  a, b = next(threads), next(workers)
  np.testing.assert_array_equal(a["index"], b["index"])
  np.testing.assert_array_equal(a["noise"], b["noise"])
threads.close(); workers.close()
options = pipeline.LoaderOptions(worker_processes=2)
one = list(pipeline.eval_batches(t._source(n=21), pipeline.identity, 8))
two = list(pipeline.eval_batches(t._source(n=21), pipeline.identity, 8, options))
assert [v for _, v in two] == [8, 8, 5]
for (a, _), (b, _) in zip(one, two):
  np.testing.assert_array_equal(a["index"], b["index"])
print("same batches")
"""


def test_worker_processes_give_the_same_batches():
  """Training and evaluation batches from 2 grain worker processes equal the threads' ones. In a
  fresh interpreter: worker processes and their shared memory stay out of the test process."""
  tests = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(tests), tests]))
  out = subprocess.run([sys.executable, "-c", _WORKERS_PROBE], env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0 and "same batches" in out.stdout, out.stderr[-3000:]


def test_cache_only_when_it_fits():
  source = _source(n=10, size=16)  # preprocessed: 16*16 float32 + 2 ints per example
  def to_float(example, rng):
    return {**example, "image": example["image"].astype(np.float32)}
  cached, pre = pipeline.cache_if_small(source, to_float, cache_mb=1)
  assert isinstance(cached, pipeline.ArraySource) and pre is pipeline.identity
  assert cached.column("image").dtype == np.float32
  streamed, pre = pipeline.cache_if_small(source, to_float, cache_mb=10 * 16 * 16 * 4 / 2**20 / 2)
  assert streamed is source and pre is to_float
  # As one source of preprocessed examples: the same values, in memory or computed on each read.
  in_memory = pipeline.preprocessed_source(source, to_float, cache_mb=1)
  on_read = pipeline.preprocessed_source(source, to_float, cache_mb=0)
  assert isinstance(on_read, pipeline.PreprocessedSource)
  np.testing.assert_array_equal(in_memory[7]["image"], on_read[7]["image"])
  np.testing.assert_array_equal(pipeline.column(on_read, "label"), pipeline.column(source, "label"))
  with pytest.raises(ValueError, match="bad loader options"):
    pipeline.LoaderOptions(read_threads=0)


class _NoImageDecoding:
  """Stands for a TFDS source: reading an example means decoding its image."""

  def __len__(self):
    return 3

  def __getitem__(self, i):
    raise AssertionError("an image was decoded to read a label")


def test_tfds_labels_are_read_without_decoding_images():
  undecoded = [{"image": {"encoded": b"..."}, "label": i % 2, "patient": f"p{i}".encode()} for i in range(3)]
  source = datasets.TextDecodedSource(_NoImageDecoding(), undecoded)
  np.testing.assert_array_equal(pipeline.column(source, "label"), [0, 1, 0])
  assert list(pipeline.column(source, "patient")) == ["p0", "p1", "p2"]
