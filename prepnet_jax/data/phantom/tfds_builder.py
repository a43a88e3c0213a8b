"""The phantom as a TFDS dataset, `chest_phantom/<ct|cxr>`, stored as array_record so
`tfds.data_source` gives random access for grain.

Splits are `<site>_<train|val|test>` by patient (`splits.assign_split(patient, seed=0)`); a
split that gets no patient (only at tiny override sizes) is left out.
Images keep their site's size and channel count (a zlib-compressed uint8 tensor of unknown
shape), so a 1-channel 128x128 site and a 3-channel 96x96 site live in one dataset.

    from prepnet_jax.data.phantom import tfds_builder  # registers 'chest_phantom'
    tfds_builder.prepare(data_dir)
    source = tfds.data_source("chest_phantom/ct", split="sars_train", data_dir=data_dir)
"""

from __future__ import annotations

import json
from typing import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from prepnet_jax.data import splits
from prepnet_jax.data.phantom.generate import generate_site
from prepnet_jax.data.phantom.sites import SITES_BY_MODALITY, site_profile


class ChestPhantom(tfds.core.GeneratorBasedBuilder):
  """Built-in multi-site chest phantom (CT slices or chest X-rays), generated offline.

  `seed` and size `overrides` (e.g. tiny sizes for tests) are builder arguments, recorded in
  the dataset's metadata; readers need not know them.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name="ct", description=f"Axial CT slices of sites {SITES_BY_MODALITY['ct']}."),
      tfds.core.BuilderConfig(name="cxr", description=f"Frontal chest X-rays of sites {SITES_BY_MODALITY['cxr']}."),
  ]

  def __init__(self, *, seed: int = 0, overrides: Mapping | None = None, file_format: str = "array_record",
               **kwargs):
    self.seed = int(seed)
    self.overrides = dict(overrides or {})
    super().__init__(file_format=file_format, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(None, None, None), dtype=np.uint8, encoding="zlib"),
            "label": tfds.features.Scalar(dtype=np.int32, doc="1 = COVID-19"),
            "label3": tfds.features.Scalar(dtype=np.int32, doc="0 normal, 1 pneumonia, 2 COVID-19"),
            "severity": tfds.features.Scalar(dtype=np.int32, doc="MosMed CT grade 1-4 for COVID, else 0"),
            "lesion_fraction": tfds.features.Scalar(dtype=np.float32),
            "patient": tfds.features.Text(),
            "domain": tfds.features.Scalar(dtype=np.int32, doc="index of the site"),
            "slice_index": tfds.features.Scalar(dtype=np.int32),
            "view": tfds.features.Text(),
            "source": tfds.features.Text(),
        }),
        metadata=tfds.core.MetadataDict(seed=self.seed, overrides=dict(self.overrides),
                                        sites=list(SITES_BY_MODALITY[self.builder_config.name])),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    modality = self.builder_config.name
    generators = {}
    for site in SITES_BY_MODALITY[modality]:
      arrays = generate_site(modality, site, seed=self.seed, **self.overrides)
      assignment = splits.patient_split(arrays["patient"], seed=0)
      for split in splits.SPLITS:
        indices = np.flatnonzero(assignment == split)
        if indices.size:  # TFDS cannot store an empty split (tiny test sizes)
          generators[f"{site}_{split}"] = self._generate_examples(arrays, indices)
    return generators

  def _generate_examples(self, arrays: dict, indices: np.ndarray):
    for i in indices:
      example = {key: values[i] for key, values in arrays.items()}
      yield f"{example['patient']}-{int(example['slice_index'])}", example


def prepare(data_dir: str, configs: Sequence[str] = ("ct", "cxr"), seed: int = 0,
            overrides: Mapping | None = None) -> None:
  """Generates each config into data_dir unless it is already there; an existing copy made
  with another seed or other overrides is an error (delete it or use another data_dir)."""
  overrides = dict(overrides or {})
  for name in configs:
    if name not in SITES_BY_MODALITY:
      raise ValueError(f"unknown chest_phantom config {name!r}; expected one of {tuple(SITES_BY_MODALITY)}")
    for site in SITES_BY_MODALITY[name]:
      site_profile(name, site, **overrides)  # validates the overrides before any work
    builder = ChestPhantom(config=name, data_dir=data_dir, seed=seed, overrides=overrides)
    if builder.is_prepared():
      stored = dict(builder.info.metadata or {})
      wanted = json.loads(json.dumps({"seed": int(seed), "overrides": overrides}))  # as stored
      if {k: stored.get(k) for k in wanted} != wanted:
        raise ValueError(f"chest_phantom/{name} in {builder.data_path} was made with seed={stored.get('seed')} "
                         f"overrides={stored.get('overrides')}, not seed={seed} overrides={overrides}")
      continue
    builder.download_and_prepare(file_format="array_record")
