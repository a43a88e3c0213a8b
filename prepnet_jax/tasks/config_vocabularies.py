"""Which registry holds the allowed values of each fixed-vocabulary config field.

`runtime.config_checks.validate(config, VOCABULARIES)` checks every such field against the
registry of the code that reads it, never against a second copy of the list. The table lives here,
above every layer whose registries it names; each registry is imported only when a config has
the field (the CXR dataset registry pulls in TensorFlow, which `predict`/`serve` never start).
Keys: `'[task:]dotted.path'` from the job's root, `*` = any one name (see `config_checks`).
"""

from __future__ import annotations

import importlib
from typing import Callable, Collection


def _registry(module: str, name: str) -> Callable[[], Collection[str]]:
  return lambda: getattr(importlib.import_module(module), name)


_CLASSIFIERS = _registry("prepnet_jax.models", "CLASSIFIER_NAMES")
_NOISE_MODES = _registry("prepnet_jax.models.stylegan2", "NOISE_MODES")
_GEN_METRICS = _registry("prepnet_jax.eval.gen_metrics", "BASE_METRICS")

VOCABULARIES: dict[str, Callable[[], Collection[str]]] = {
    "task": _registry("prepnet_jax.tasks", "TASKS"),
    # classifiers (models.get_classifier)
    "model.name": _CLASSIFIERS,
    "prepnet:e_img.name": _CLASSIFIERS,
    "prepnet:e_cov.name": _CLASSIFIERS,
    "prepnet:diagnostics.origin_model": _CLASSIFIERS,
    # generative models
    "gan:model.kind": _registry("prepnet_jax.models.gan", "KINDS"),
    "gan:model.conditioning": _registry("prepnet_jax.models.gan", "CONDITIONINGS"),
    "gan:model.d_norm": _registry("prepnet_jax.models.gan", "NORMS"),
    "vae:model.kind": _registry("prepnet_jax.models.vae", "VAE_KINDS"),
    "vae:model.recon_loss": _registry("prepnet_jax.models.vae", "RECON_LOSSES"),
    "stylegan2:preset": _registry("prepnet_jax.models.stylegan2_hparams", "PRESETS"),
    "sample:noise_mode": _NOISE_MODES,
    "gen_metrics:generated.noise_mode": _NOISE_MODES,
    "augment_experiment:generator.noise_mode": _NOISE_MODES,
    "fd.metrics": _GEN_METRICS,
    "stylegan2:eval.metrics": _GEN_METRICS,
    "gen_metrics:inception.resize_mode": _registry("prepnet_jax.eval.feature_extractors", "RESIZE_MODES"),
    # data and preprocessing
    "preprocess.resize_method": _registry("prepnet_jax.data.transforms", "RESIZE_METHODS"),
    "preprocess.value_range": _registry("prepnet_jax.data.transforms", "VALUE_RANGES"),
    "data.on_corrupt": _registry("prepnet_jax.data.cxr_datasets", "ON_CORRUPT"),
    # job-specific schedules and arms
    "prepnet:schedule": _registry("prepnet_jax.tasks.prepnet.schedules", "SCHEDULES"),
    "prepnet:baselines.standardise": _registry("prepnet_jax.tasks.prepnet.baselines", "STANDARDISE_OPTIONS"),
    "prepnet:patient_aggregation": _registry("prepnet_jax.eval.paired_stats", "PATIENT_AGGREGATIONS"),
    "augment_experiment:arms": _registry("prepnet_jax.tasks.augment_experiment.arms", "ARMS"),
    "augment_experiment:classical.preset": _registry("prepnet_jax.data.classical_augment", "PRESETS"),
    "serve:server": _registry("prepnet_jax.tasks.serve.app", "SERVERS"),
}
