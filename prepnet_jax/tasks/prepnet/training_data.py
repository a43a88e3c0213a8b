"""PrepNet's data: every site's splits in memory, tagged with the site id (the imaging label)."""

from __future__ import annotations

import numpy as np

from prepnet_jax.data import datasets, pipeline, transforms


class Data:
  """Preprocessed, in-memory splits of every dataset plus the combined AE/E_img training set."""

  def __init__(self, config):
    self.refs = list(config.data.train)
    self.names = [r.split("/")[-1] for r in self.refs]
    pre = transforms.make_preprocess(config.preprocess, training=False)
    self.pre = pre
    self.splits = {}
    for d, ref in enumerate(self.refs):
      for split in ("train", "val", "test"):
        raw = datasets.get_source(ref, split, config.data)
        if len(raw) == 0:
          raise ValueError(f"dataset {ref} has an empty {split} split; use more patients")
        src = pipeline.materialize(raw, pre, seed=config.seed)
        src.arrays["domain"] = np.full(len(src), d, np.int32)
        self.splits[(d, split)] = src
    self.raw_train = {d: datasets.get_source(ref, "train", config.data) for d, ref in enumerate(self.refs)}
    sizes = [len(self.splits[(d, "train")]) for d in range(len(self.refs))]
    self.repeats = upsample_factors(sizes) if config.upsample else [1] * len(sizes)
    self.all_train = pipeline.ConcatSource([self.splits[(d, "train")] for d in range(len(self.refs))],
                                           domains=list(range(len(self.refs))), repeats=self.repeats)
    self.origin_raw_cache: dict[tuple, dict] = {}  # see diagnostics.run_all
    self._val: dict[tuple, pipeline.ConcatSource] = {}

  def cov_train(self, members: list[int], config):
    """E_cov training data: the train splits of `members` (up-sampled if config.upsample)."""
    repeats = [self.repeats[d] for d in members] if config.upsample else None
    if transforms.augments(config.preprocess.augment):
      train_pre = transforms.make_preprocess(config.preprocess, training=True)
      sources = [self.raw_train[d] for d in members]
      return pipeline.ConcatSource(sources, domains=members, repeats=repeats), train_pre
    return (pipeline.ConcatSource([self.splits[(d, "train")] for d in members], domains=members, repeats=repeats),
            pipeline.identity)

  def val(self, members: list[int]):
    """The validation splits of `members` (one object per set, so its AE outputs can be cached)."""
    key = tuple(members)
    if key not in self._val:
      self._val[key] = pipeline.ConcatSource([self.splits[(d, "val")] for d in members], domains=members)
    return self._val[key]


def upsample_factors(sizes: list[int]) -> list[int]:
  """Thesis Exp. 3: duplicate each smaller dataset by round(largest / its size)."""
  largest = max(sizes)
  return [max(1, int(round(largest / max(n, 1)))) for n in sizes]
