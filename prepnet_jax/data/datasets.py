"""One place that turns a dataset reference from a config into a random-access source.

References:
  'phantom_ct/<site>', 'phantom_cxr/<site>'  the built-in phantom (sites in
                                             `phantom.CT_SITES` / `phantom.CXR_SITES`)
  'sars_cov2_ct', 'ucsd_covid_ct', 'mosmed'  real CT datasets (TFDS, manual download)
  'covidx/<v2|v7b|v8b>', 'deepcovid', 'pediatric_cxr'   real CXR datasets (TFDS, manual download)
  'folder:<path>'                            a user's image folder (class sub-folders)

A folder's labels follow `data.class_names`: its sub-folders are matched to them by name (or by
`data.class_folders`; `image_folder.resolve_class_folders`), and images outside predict's side and
pixel limits (`readers.ReadOptions()`) are skipped with the unreadable ones, each with the reason
predict would give. A job that trains on folders records the mapping and the skipped files with
`record_folder_labels`.

The phantom is read through its TFDS builder (`config.data.phantom_backend='tfds'`, prepared
once into `config.data.tfds_dir`) or generated in memory ('memory', used by tests and for
size overrides). Both give the same examples and the same patient-level splits.
"""

from __future__ import annotations

import functools
import os
import pathlib
from typing import Any

import jax
import numpy as np
from absl import logging

from prepnet_jax.data import image_folder, pipeline, readers, splits
from prepnet_jax.runtime import rundir

REAL_DATASETS = ("sars_cov2_ct", "ucsd_covid_ct", "mosmed", "covidx/v2", "covidx/v7b", "covidx/v8b",
                 "deepcovid", "pediatric_cxr")
DEFAULT_TFDS_DIR = os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
FOLDER_PREFIX = "folder:"
LABEL_MAPPING_REPORT = "label_mapping"    # reports/<name>.json of `record_folder_labels`
SKIPPED_FILES_REPORT = "skipped_files"


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
def _image_folder(root: str, on_corrupt: str, class_names: tuple | None, class_folders: tuple | None):
  """One index per folder, label mapping and run: building it checks (decodes) every file, and each
  split, evaluation and report asks for the folder again. Keyed by the resolved mapping, so a
  config that spells it out (`record_folder_labels` stores it) finds the same index."""
  return image_folder.ImageFolderSource(
      root, class_names=class_names, on_corrupt=on_corrupt,
      class_folders=dict(class_folders) if class_folders is not None else None,
      read_options=readers.ReadOptions())


def folder_source(ref: str, data_cfg: Any = None):
  """The whole index of dataset 'folder:<path>' (every split), labelled by `data.class_names`
  through `data.class_folders`; without class names (no config) each sorted sub-folder is a class."""
  get = data_cfg.get if hasattr(data_cfg, "get") else (lambda k, d=None: d)
  root = os.path.abspath(ref[len(FOLDER_PREFIX):])
  if not os.path.isdir(root):
    raise FileNotFoundError(f"dataset {ref!r}: image folder {root} does not exist")
  class_names = get("class_names", None)
  mapping = None
  if class_names:
    class_names = tuple(str(c) for c in class_names)
    mapping = image_folder.resolve_class_folders(
        image_folder.class_folders_in(pathlib.Path(root)), class_names,
        dict(get("class_folders", None) or {}) or None, root)
    mapping = tuple(sorted(mapping.items()))
  return _image_folder(root, get("on_corrupt", "skip"), class_names or None, mapping)


def folder_splits(source) -> np.ndarray:
  """The split name of every example of a folder index (patient-level, as `get_source` splits)."""
  return splits.patient_split([str(p) for p in source.column("patient")], seed=0)


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
  if ref.startswith(FOLDER_PREFIX):
    source = folder_source(ref, data_cfg)
    keep = np.flatnonzero(folder_splits(source) == split)
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


def record_folder_labels(config, workdir: str) -> dict | None:
  """Records how the job's `folder:` datasets (`data.train`, `data.eval`) were labelled and read.

  Writes `reports/label_mapping.json` (+ .md: per dataset, class index -> name -> folders and
  the images per class and split) and `reports/skipped_files.json` (every file left out, with
  the reason), prints one line per folder, and stores the resolved folder -> class mapping as
  `config.data.class_folders` in `config` and the run's config.json, so predict, serve, the
  evaluation and a rerun use the same names. Returns the label mapping report; None (nothing
  written) when the job reads no folder.
  """
  train = config.data.train
  refs = [train] if isinstance(train, str) else list(train)
  refs = list(dict.fromkeys(r for r in refs + list(config.data.eval) if r.startswith(FOLDER_PREFIX)))
  if not refs:
    return None
  class_names = [str(c) for c in config.data.class_names]
  mapping, skipped, resolved = {}, {}, {}
  for ref in refs:
    source = folder_source(ref, config.data)
    split_of = folder_splits(source)
    labels = np.asarray(source.labels, np.int64)
    classes = []
    for label, name in enumerate(class_names):
      counts = {s: int(np.sum((labels == label) & (split_of == s))) for s in splits.SPLITS}
      classes.append({"label": label, "name": name,
                      "folders": [f for f, c in source.class_folders.items() if c == name],
                      "images": {**counts, "all": int(np.sum(labels == label))}})
    left_out = [f for f, c in source.class_folders.items() if not c]
    mapping[ref] = {"root": str(source.root), "classes": classes, "left_out_folders": left_out,
                    "skipped_files": len(source.skipped)}
    skipped[ref] = {"root": str(source.root), "kept": len(source), "skipped": [
        {"file": os.path.relpath(path, source.root), "reason": reason} for path, reason in source.skipped]}
    resolved.update(source.class_folders)
    folders = ", ".join(f"{c['label']}={c['name']}<-{'+'.join(c['folders'])} ({c['images']['all']})"
                        for c in classes)
    print(f"[data] {ref}: {folders}; {len(source.skipped)} file(s) skipped"
          + (f", left out folders {left_out}" if left_out else ""), flush=True)
  report = {"class_names": class_names, "class_folders": resolved, "datasets": mapping}
  rows = [f"| {ref} | {c['label']} | {c['name']} | {', '.join(c['folders'])} | "
          + " | ".join(str(c["images"][s]) for s in (*splits.SPLITS, "all")) + " |"
          for ref, m in mapping.items() for c in m["classes"]]
  rundir.write_report(workdir, LABEL_MAPPING_REPORT, report, "\n".join([
      "# label mapping", "", "Labels follow config.data.class_names; stored as config.data.class_folders.", "",
      "| dataset | label | class | folders | train | val | test | all |", "|---|---|---|---|---|---|---|---|",
      *rows]))
  total = sum(len(s["skipped"]) for s in skipped.values())
  path = rundir.write_report(workdir, SKIPPED_FILES_REPORT, {"total": total, "datasets": skipped})
  if total:
    print(f"[data] {total} file(s) skipped (corrupt, unreadable or outside the sides predict accepts): "
          f"{path}", flush=True)
  config.data.class_folders = resolved
  rundir.write_config(config, workdir)
  return report
