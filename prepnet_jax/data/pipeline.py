"""grain input pipelines: random-access sources → deterministic, resumable batches.

Every training batch is a pure function of (seed, step): the example order of epoch `e` is a
seeded permutation, and augmentation randomness is seeded by (seed, step, slot). So the
"iterator position" that checkpoints store is the grain iterator state (the next batch index),
a resumed run sees exactly the batches an uninterrupted one would, and the same global batch is
produced whatever the number of devices. Each process keeps its own slice of the global batch.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterator, Sequence

import grain
import jax
import numpy as np

Example = dict[str, Any]
Preprocess = Callable[[Example, np.random.Generator], Example]


class ArraySource:
  """Random-access source over a dict of equal-length arrays (one example per row)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
      raise ValueError(f"arrays of unequal length: {lengths}")
    self.arrays = arrays
    self._n = next(iter(lengths.values())) if lengths else 0

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, i: int) -> Example:
    return {k: v[i] for k, v in self.arrays.items()}

  def column(self, key: str) -> np.ndarray:
    return np.asarray(self.arrays[key])


def column(source, key: str) -> np.ndarray:
  """One field of every example (fast path for ArraySource/ConcatSource)."""
  if hasattr(source, "column"):
    return source.column(key)
  return np.asarray([source[i][key] for i in range(len(source))])


class SubsetSource:
  """The examples of `source` at `indices` (e.g. one class, one split)."""

  def __init__(self, source, indices: Sequence[int]):
    self.source, self.indices = source, np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> Example:
    return self.source[int(self.indices[i])]

  def column(self, key: str) -> np.ndarray:
    return column(self.source, key)[self.indices]


def filter_source(source, key: str, values) -> SubsetSource:
  """Keeps the examples whose `key` is in `values` (e.g. label == 1 for a per-class GAN)."""
  values = np.atleast_1d(values)
  keep = np.flatnonzero(np.isin(column(source, key), values))
  return SubsetSource(source, keep)


class ConcatSource:
  """Several datasets as one, each tagged with its `domain` and repeated `repeats[i]` times.

  Integer repetition is the thesis's dataset up-sampling (Exp. 3): the smaller dataset's
  examples appear `factor` times per epoch.
  """

  def __init__(self, sources: Sequence, domains: Sequence[int] | None = None,
               repeats: Sequence[int] | None = None):
    self.sources = list(sources)
    self.domains = list(domains if domains is not None else range(len(sources)))
    repeats = list(repeats or [1] * len(sources))
    if any(r < 1 or int(r) != r for r in repeats):
      raise ValueError(f"repeat factors must be positive integers, got {repeats}")
    index = [(s, i) for s, src in enumerate(self.sources) for _ in range(int(repeats[s]))
             for i in range(len(src))]
    self._index = np.asarray(index, np.int64).reshape(-1, 2)

  def __len__(self) -> int:
    return len(self._index)

  def __getitem__(self, i: int) -> Example:
    s, j = self._index[i]
    example = dict(self.sources[s][int(j)])
    example["domain"] = np.int32(self.domains[s])
    return example

  def column(self, key: str) -> np.ndarray:
    if key == "domain":
      return np.asarray(self.domains, np.int32)[self._index[:, 0]]
    cols = [column(src, key) for src in self.sources]
    return np.concatenate([cols[s][j:j + 1] for s, j in self._index]) if len(self._index) else np.zeros(0)


def materialize(source, preprocess: Preprocess, seed: int = 0) -> ArraySource:
  """Applies a deterministic preprocessing once and keeps the results in memory.

  Used when no augmentation is on: later epochs then cost no decoding or resizing.
  """
  rows = [preprocess(dict(source[i]), np.random.default_rng([seed, i])) for i in range(len(source))]
  if not rows:
    raise ValueError("cannot materialize an empty source")
  return ArraySource(collate(rows))


def collate(rows: Sequence[Example]) -> dict[str, np.ndarray]:
  out = {}
  for key in rows[0]:
    values = [r[key] for r in rows]
    if isinstance(values[0], (str, bytes)):
      out[key] = np.asarray([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
    else:
      out[key] = np.stack([np.asarray(v) for v in values])
  return out


class _IndexStream:
  """Position p of an endless stream = element perm_e[p % n] with epoch e = p // n."""

  def __init__(self, indices: np.ndarray, seed: int, shuffle: bool = True):
    self.indices, self.seed, self.shuffle = np.asarray(indices, np.int64), seed, shuffle
    if not len(self.indices):
      raise ValueError("cannot draw batches from an empty dataset")

  @functools.lru_cache(maxsize=4)
  def _epoch(self, e: int) -> np.ndarray:
    if not self.shuffle:
      return self.indices
    return self.indices[np.random.default_rng([self.seed, e]).permutation(len(self.indices))]

  def take(self, start: int, count: int) -> np.ndarray:
    n = len(self.indices)
    return np.asarray([self._epoch(p // n)[p % n] for p in range(start, start + count)], np.int64)


class _BatchIndexSource:
  """Random-access batch index → example indices of this process's share of the batch."""

  def __init__(self, streams: list[tuple[_IndexStream, int]], process_index: int, process_count: int):
    self.streams = streams  # (stream, examples per batch from it)
    self.batch_size = sum(k for _, k in streams)
    if self.batch_size % process_count:
      raise ValueError(f"global batch {self.batch_size} not divisible by {process_count} processes")
    self.local = self.batch_size // process_count
    self.process_index = process_index

  def __len__(self) -> int:
    return 2**62  # endless: epochs are counted by the caller

  def __getitem__(self, b: int) -> np.ndarray:
    parts = [stream.take(b * k, k) for stream, k in self.streams]
    idx = np.concatenate(parts)
    return idx[self.process_index * self.local:(self.process_index + 1) * self.local]


def train_dataset(source, preprocess: Preprocess, batch_size: int, seed: int, *,
                  balance: tuple[str, int, float] | None = None, shuffle: bool = True) -> grain.MapDataset:
  """Endless grain MapDataset of training batches, random access by step.

  balance=(key, value, fraction): a fixed `fraction` of every batch has `key == value`
  (e.g. ~30 % COVID per batch, seed 002); the rest is drawn from the other examples.
  """
  n = len(source)
  if n < batch_size and balance is None:
    raise ValueError(f"dataset has {n} examples, fewer than batch_size={batch_size}")
  if balance is None:
    streams = [(_IndexStream(np.arange(n), seed, shuffle), batch_size)]
  else:
    key, value, fraction = balance
    if not 0.0 < fraction < 1.0:
      raise ValueError(f"balance fraction must be in (0, 1), got {fraction}")
    hit = column(source, key) == value
    k = max(1, int(round(fraction * batch_size)))
    streams = [(_IndexStream(np.flatnonzero(hit), seed, shuffle), k),
               (_IndexStream(np.flatnonzero(~hit), seed + 1, shuffle), batch_size - k)]
  index = _BatchIndexSource(streams, jax.process_index(), jax.process_count())

  def load(b_and_idx):
    b, idx = b_and_idx
    rows = [preprocess(dict(source[int(i)]), np.random.default_rng([seed, b, slot]))
            for slot, i in enumerate(idx)]
    return collate(rows)

  return grain.MapDataset.range(len(index)).map(lambda b: (b, index[b])).map(load)


def steps_per_epoch(source, batch_size: int) -> int:
  return max(1, len(source) // batch_size)


def make_iterator(dataset: grain.MapDataset, state: dict | None = None, num_threads: int = 2):
  """A checkpointable iterator (`get_state()` / `set_state()`) with background prefetch."""
  it = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=4)))
  if state:
    it.set_state(state)
  return it


def eval_batches(source, preprocess: Preprocess, batch_size: int) -> Iterator[tuple[dict, int]]:
  """Sequential batches over the whole source, the last one zero-padded; yields (batch, n_valid)."""
  n = len(source)
  for start in range(0, n, batch_size):
    rows = [preprocess(dict(source[i]), np.random.default_rng([0, i])) for i in range(start, min(n, start + batch_size))]
    valid = len(rows)
    rows += [rows[-1]] * (batch_size - valid)
    yield collate(rows), valid


def class_weights(labels: np.ndarray, num_classes: int, spec: str | Sequence[float] = "balanced") -> np.ndarray:
  """Per-class loss weights: explicit list (e.g. 1/1/6, seed 002), 'balanced' (n / (K n_c)) or 'none'."""
  if isinstance(spec, str):
    if spec == "none":
      return np.ones(num_classes, np.float32)
    if spec != "balanced":
      raise ValueError(f"class_weights must be 'balanced', 'none' or a list, got {spec!r}")
    counts = np.bincount(np.asarray(labels, int), minlength=num_classes).astype(np.float64)
    return (counts.sum() / (num_classes * np.maximum(counts, 1))).astype(np.float32)
  weights = np.asarray(list(spec), np.float32)
  if weights.shape != (num_classes,):
    raise ValueError(f"class_weights has {weights.size} entries for {num_classes} classes")
  return weights
