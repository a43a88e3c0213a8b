"""One place that turns a dataset reference from a config into a random-access source.

References:
  'phantom_ct/<site>', 'phantom_cxr/<site>'  the built-in phantom (sites in
                                             `phantom.CT_SITES` / `phantom.CXR_SITES`)
  'sars_cov2_ct', 'ucsd_covid_ct', 'mosmed'  real CT datasets (TFDS, manual download)
  'covidx/<v2|v7b|v8b>', 'deepcovid', 'pediatric_cxr'   real CXR datasets (TFDS, manual download)
  'folder:<path>'                            a user's image folder (class sub-folders)

The phantom is read through its TFDS builder (`config.data.phantom_backend='tfds'`, prepared
once into `config.data.tfds_dir`) or generated in memory ('memory', used by tests and for
size overrides). Both give the same examples and the same patient-level splits.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from prepnet_jax.data import pipeline, splits

REAL_DATASETS = ("sars_cov2_ct", "ucsd_covid_ct", "mosmed", "covidx/v2", "covidx/v7b", "covidx/v8b",
                 "deepcovid", "pediatric_cxr")
DEFAULT_TFDS_DIR = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def _freeze(d: dict | None) -> tuple:
  """Hashable form of the phantom overrides (JSON round trips turn tuples into lists)."""
  def hashable(v):
    return tuple(hashable(x) for x in v) if isinstance(v, (list, tuple)) else v
  return tuple(sorted((k, hashable(v)) for k, v in (d or {}).items()))


@functools.lru_cache(maxsize=16)
def _phantom_arrays(modality: str, site: str, seed: int, overrides: tuple) -> dict[str, np.ndarray]:
  from prepnet_jax.data import phantom
  arrays = phantom.generate_site(modality, site, seed=seed, **dict(overrides))
  arrays["split"] = splits.patient_split(arrays["patient"], seed=0)
  return arrays


def phantom_source(modality: str, site: str, split: str, seed: int = 0,
                   overrides: dict | None = None) -> pipeline.ArraySource:
  """In-memory phantom examples of one site and one patient-level split."""
  if split not in splits.SPLITS + ("all",):
    raise ValueError(f"unknown split {split!r}; expected one of {splits.SPLITS + ('all',)}")
  arrays = _phantom_arrays(modality, site, seed, _freeze(overrides))
  keep = slice(None) if split == "all" else arrays["split"] == split
  return pipeline.ArraySource({k: v[keep] for k, v in arrays.items() if k != "split"})


def _tfds_source(name: str, split: str, data_dir: str, manual_dir: str | None, config: str | None = None):
  import tensorflow_datasets as tfds

  from prepnet_jax.data import ct_datasets, cxr_datasets  # noqa: F401  (registers the builders)
  full = f"{name}/{config}" if config else name
  builder = tfds.builder(full, data_dir=data_dir)

  def prepare():
    if not builder.is_prepared():
      logging.info("preparing %s into %s from manual_dir=%s", full, data_dir, manual_dir)
      builder.download_and_prepare(
          file_format="array_record",
          download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))

  first_process_first(prepare, f"prepare {full}")
  # Labels, domains and patient ids are read from records whose images stay encoded.
  images = {k: tfds.decode.SkipDecoding() for k, f in builder.info.features.items() if len(f.shape) >= 2}
  return TextDecodedSource(builder.as_data_source(split=split),
                           builder.as_data_source(split=split, decoders=images))


def first_process_first(prepare, name: str) -> None:
  """Runs an idempotent preparation (writing a TFDS dataset) on process 0, then on the others.

  On a shared filesystem the others find it done; on per-host disks each host prepares its own
  copy. Never two processes writing the same files at once.
  """
  if jax.process_count() == 1:
    prepare()
    return
  from jax.experimental import multihost_utils
  if jax.process_index() == 0:
    prepare()
  multihost_utils.sync_global_devices(name)
  if jax.process_index() != 0:
    prepare()


class TextDecodedSource:
  """A TFDS data source whose text features come as str (patient ids), not bytes.

  `column(key)` reads one field of every example from `undecoded` (the same records with their
  images left encoded), so labels and domains never cost an image decode; read columns are kept.
  """

  def __init__(self, source, undecoded=None):
    self.source, self.undecoded = source, undecoded if undecoded is not None else source
    self._columns: dict[str, np.ndarray] = {}

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict:
    return _text_as_str(dict(self.source[i]))

  def column(self, key: str) -> np.ndarray:
    if key not in self._columns:
      values = [_text_as_str(dict(self.undecoded[i]))[key] for i in range(len(self.undecoded))]
      self._columns[key] = np.asarray(values, dtype=object if values and isinstance(values[0], str) else None)
    return self._columns[key]


def _text_as_str(example: dict) -> dict:
  for key, value in example.items():
    if isinstance(value, bytes):
      example[key] = value.decode("utf-8")
  example.setdefault("domain", np.int32(0))
  return example


@functools.lru_cache(maxsize=8)
def _image_folder(root: str, on_corrupt: str):
  """One index per folder and run: building it checks every file, and each split, evaluation and
  report asks for the folder again."""
  from prepnet_jax.data.image_folder import ImageFolderSource
  return ImageFolderSource(root, on_corrupt=on_corrupt)


def get_source(ref: str, split: str, data_cfg: Any = None):
  """Random-access examples of dataset `ref` (see module docstring) for `split`."""
  data_cfg = data_cfg or {}
  get = data_cfg.get if hasattr(data_cfg, "get") else (lambda k, d=None: d)
  tfds_dir = get("tfds_dir", None) or DEFAULT_TFDS_DIR
  if ref.startswith("phantom_"):
    modality, _, site = ref[len("phantom_"):].partition("/")
    if modality not in ("ct", "cxr") or not site:
      raise ValueError(f"bad phantom reference {ref!r}; expected 'phantom_ct/<site>' or 'phantom_cxr/<site>'")
    overrides = dict(get("phantom_overrides", None) or {})
    backend = get("phantom_backend", "memory")
    if backend == "memory" or overrides:
      return phantom_source(modality, site, split, seed=int(get("phantom_seed", 0)), overrides=overrides)
    if backend != "tfds":
      raise ValueError(f"data.phantom_backend must be 'memory' or 'tfds', got {backend!r}")
    from prepnet_jax.data import phantom
    first_process_first(lambda: phantom.prepare_tfds(tfds_dir, configs=(modality,)), f"phantom {modality}")
    parts = splits.SPLITS if split == "all" else (split,)
    sources = [_tfds_source("chest_phantom", f"{site}_{p}", tfds_dir, None, config=modality) for p in parts]
    if len(sources) == 1:
      return sources[0]
    domain = int(phantom.CT_SITES.index(site) if modality == "ct" else phantom.CXR_SITES.index(site))
    return pipeline.ConcatSource(sources, domains=[domain] * len(sources))
  if ref.startswith("folder:"):
    source = _image_folder(os.path.abspath(ref[len("folder:"):]), get("on_corrupt", "skip"))
    patients = [str(p) for p in source.column("patient")]
    keep = np.flatnonzero(splits.patient_split(patients, seed=0) == split)
    return pipeline.SubsetSource(source, keep)
  name, _, config = ref.partition("/")
  if ref not in REAL_DATASETS and name not in REAL_DATASETS:
    raise ValueError(f"unknown dataset {ref!r}; known: phantom_ct/<site>, phantom_cxr/<site>, "
                     f"folder:<path>, {', '.join(REAL_DATASETS)}")
  manual_root = get("manual_dir", None)
  manual_dir = os.path.join(manual_root, name) if manual_root else None
  return _tfds_source(name, split, tfds_dir, manual_dir, config=config or None)


def class_filter(data_cfg) -> list[int]:
  """`data.class_filter` as a list of labels ([] = every class). A bare int or None (the form
  StyleGAN2 configs used before they shared the list vocabulary) reads as [int] or []."""
  value = data_cfg.get("class_filter", None) if hasattr(data_cfg, "get") else None
  if value is None:
    return []
  if isinstance(value, (int, np.integer)):
    return [int(value)]
  return [int(v) for v in value]


def training_source(data_cfg):
  """Split `data.train_split` of `data.train`, restricted to the labels of `data.class_filter`
  (on `data.label_key`): the images a generator run learns from."""
  source = get_source(data_cfg.train, data_cfg.train_split, data_cfg)
  labels = class_filter(data_cfg)
  if labels:
    source = pipeline.filter_source(source, data_cfg.label_key, labels)
  if len(source) == 0:
    raise ValueError(f"no training images in {data_cfg.train}:{data_cfg.train_split} with "
                     f"{data_cfg.label_key} in {labels}; check config.data.class_filter")
  return source
