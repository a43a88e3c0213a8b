"""grain input pipelines: random-access sources → deterministic, resumable batches.

Every training batch is a pure function of (seed, step): the example order of epoch `e` is a
seeded permutation, and augmentation randomness is seeded by (seed, step, slot). So the
"iterator position" that checkpoints store is the grain iterator state (the next batch index),
a resumed run sees exactly the batches an uninterrupted one would, and the same global batch is
produced whatever the number of devices. Each process keeps its own slice of the global batch.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Iterator, Sequence

import grain
import jax
import numpy as np
from absl import flags

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
  """Applies a deterministic preprocessing once and keeps the results in memory."""
  rows = [preprocess(dict(source[i]), np.random.default_rng([seed, i])) for i in range(len(source))]
  if not rows:
    raise ValueError("cannot materialize an empty source")
  return ArraySource(collate(rows))


def cache_if_small(source, preprocess: Preprocess, cache_mb: float, seed: int = 0):
  """(source, preprocess) a loader reads from: the preprocessed examples in memory (and an identity
  preprocess) when they fit in `cache_mb` MB, else `source` as is, preprocessed on every read.

  Small data then costs no decoding or resizing after the first pass; large data streams, so
  memory is bounded by the loader's buffers instead of growing with the dataset. `preprocess`
  must be deterministic (the evaluation preprocessing).
  """
  if not len(source):
    raise ValueError("cannot read an empty source")
  first = preprocess(dict(source[0]), np.random.default_rng([seed, 0]))
  per_example = sum(np.asarray(v).nbytes for v in first.values() if not isinstance(v, (str, bytes)))
  if per_example * len(source) <= cache_mb * 2**20:
    return materialize(source, preprocess, seed), identity
  return source, preprocess


class PreprocessedSource:
  """`source` with a deterministic `preprocess` applied on every read (streamed, nothing kept):
  what `cache_if_small` stands for when the preprocessed examples do not fit in memory."""

  def __init__(self, source, preprocess: Preprocess, seed: int = 0):
    self.source, self.preprocess, self.seed = source, preprocess, seed

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> Example:
    return self.preprocess(dict(self.source[i]), np.random.default_rng([self.seed, i]))

  def column(self, key: str) -> np.ndarray:
    return column(self.source, key)


def preprocessed_source(source, preprocess: Preprocess, cache_mb: float, seed: int = 0):
  """A source of preprocessed examples: in memory when they fit in `cache_mb`, else streamed."""
  source, preprocess = cache_if_small(source, preprocess, cache_mb, seed)
  return source if preprocess is identity else PreprocessedSource(source, preprocess, seed)


def identity(example: Example, rng: np.random.Generator) -> Example:
  """The preprocessing of already preprocessed examples."""
  return example


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


class _GlobalBatches:
  """Batch index → the example indices of the whole (global) batch, the same for every process."""

  def __init__(self, streams: list[tuple[_IndexStream, int]]):
    self.streams = streams  # (stream, examples per batch from it)
    self.batch_size = sum(k for _, k in streams)

  @functools.lru_cache(maxsize=64)  # the examples of one batch ask for it one after another
  def __getitem__(self, b: int) -> np.ndarray:
    return np.concatenate([stream.take(b * k, k) for stream, k in self.streams])


def process_slice(global_batch_size: int) -> tuple[int, int]:
  """(first slot, number of slots) of this process's share of every global batch."""
  count = jax.process_count()
  if global_batch_size % count:
    raise ValueError(f"global batch {global_batch_size} not divisible by {count} processes")
  local = global_batch_size // count
  return jax.process_index() * local, local


_ENDLESS = 2**40  # batches of a training stream: epochs are counted by the caller


class _TrainExample:
  """Local position → one preprocessed example of a training batch (a class so it pickles into
  grain worker processes). Augmentation randomness is seeded by (seed, batch, global slot), so a
  batch is the same whatever the number of processes and workers."""

  def __init__(self, source, preprocess: Preprocess, batches: _GlobalBatches, seed: int,
               first: int, local: int):
    self.source, self.preprocess, self.batches, self.seed = source, preprocess, batches, seed
    self.first, self.local = first, local

  def __call__(self, position: int) -> Example:
    b, slot = divmod(int(position), self.local)
    slot += self.first
    example = self.source[int(self.batches[b][slot])]
    return self.preprocess(dict(example), np.random.default_rng([self.seed, b, slot]))


def train_dataset(source, preprocess: Preprocess, batch_size: int, seed: int, *,
                  balance: tuple[str, int, float] | None = None, shuffle: bool = True) -> BatchedDataset:
  """Endless dataset of this process's training batches (`make_iterator` reads it).

  Each element is read and preprocessed on its own (in grain's read threads or worker processes);
  nothing but the source's own storage is held. balance=(key, value, fraction): a fixed
  `fraction` of every batch has `key == value` (e.g. ~30 % COVID per batch, seed 002); the rest
  is drawn from the other examples.
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
  first, local = process_slice(batch_size)
  read = _TrainExample(source, preprocess, _GlobalBatches(streams), seed, first, local)
  return BatchedDataset(grain.MapDataset.range(_ENDLESS * local).map(read), local)


def steps_per_epoch(source, batch_size: int) -> int:
  return max(1, len(source) // batch_size)


@dataclasses.dataclass(frozen=True)
class LoaderOptions:
  """How many threads read and preprocess examples, in how many worker processes (0 = in this
  process), and how many batches wait ready (`config.data.read_threads`, `.worker_processes`,
  `.prefetch_batches`)."""
  read_threads: int = 2
  worker_processes: int = 0
  prefetch_batches: int = 4

  def __post_init__(self):
    if self.read_threads < 1 or self.worker_processes < 0 or self.prefetch_batches < 1:
      raise ValueError(f"bad loader options {self}: read_threads and prefetch_batches must be ≥ 1, "
                       "worker_processes ≥ 0")


def loader_options(data_cfg) -> LoaderOptions:
  """The loader options of a config's `data` section."""
  return LoaderOptions(int(data_cfg.read_threads), int(data_cfg.worker_processes),
                       int(data_cfg.prefetch_batches))


class BatchedDataset:
  """A per-example grain MapDataset grouped into batches of `batch_size` (this process's share of
  each global batch); `[b]` is batch b, built directly (for tests and inspection)."""

  def __init__(self, examples: grain.MapDataset, batch_size: int):
    self.examples, self.batch_size = examples, batch_size
    self.batches = examples.batch(batch_size, drop_remainder=True, batch_fn=collate)

  def __len__(self) -> int:
    return len(self.batches)

  def __getitem__(self, b: int) -> dict[str, np.ndarray]:
    return self.batches[b]


def make_iterator(dataset: BatchedDataset, state: dict | None = None, options: LoaderOptions | None = None):
  """A checkpointable iterator of batches (`get_state()` / `set_state()`; the state is the next
  batch index, so it does not depend on the thread count). Batches are made in parallel, each
  from per-example reads and preprocessing, in threads or worker processes (each worker makes
  whole batches, handed out in order)."""
  options = options or LoaderOptions()
  read = grain.ReadOptions(num_threads=options.read_threads, prefetch_buffer_size=options.prefetch_batches)
  batches = dataset.batches.to_iter_dataset(read)
  if options.worker_processes:
    # grain's workers read an absl flag; outside `app.run` (tests, notebooks) flags are unparsed.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    batches = batches.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=options.worker_processes, per_worker_buffer_size=options.prefetch_batches))
  it = iter(batches)
  if state:
    it.set_state(state)
  return it


class _EvalExample:
  """Local position → (example of the padded global order, valid flag); see `eval_batches`."""

  def __init__(self, source, preprocess: Preprocess, batch_size: int, first: int, local: int):
    self.source, self.preprocess, self.batch_size = source, preprocess, batch_size
    self.first, self.local = first, local

  def __call__(self, position: int) -> Example:
    b, slot = divmod(int(position), self.local)
    i = b * self.batch_size + self.first + slot
    n = len(self.source)
    example = self.preprocess(dict(self.source[min(i, n - 1)]), np.random.default_rng([0, min(i, n - 1)]))
    example["valid"] = np.bool_(i < n)
    return example


def eval_batches(source, preprocess: Preprocess, batch_size: int,
                 options: LoaderOptions | None = None) -> Iterator[tuple[dict, int]]:
  """The whole source in order, in global batches of `batch_size` (the last one padded by repeating
  the last example); yields (this process's slice of the batch, number of valid examples in the
  global batch). The slice has a boolean `valid` field. Same loader as training."""
  n = len(source)
  if not n:
    return
  first, local = process_slice(batch_size)
  num_batches = -(-n // batch_size)
  read = _EvalExample(source, preprocess, batch_size, first, local)
  iterator = make_iterator(BatchedDataset(grain.MapDataset.range(num_batches * local).map(read), local),
                           options=options)
  try:
    for b, batch in zip(range(num_batches), iterator):
      yield batch, min(batch_size, n - b * batch_size)
  finally:  # its threads (and worker processes) end now, not when the garbage collector runs
    if hasattr(iterator, "close"):
      iterator.close()


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
