"""Config validation before any work: every field is judged by the name it has in the configs'
one vocabulary (`configs/common.py`), so one table covers every job and every nested job.

A negative learning rate would train by gradient ascent and write reports, `num_epochs=0` would
report an untrained model, `batch_size=0` would end in a ZeroDivisionError minutes later; each is
refused here with one line that names the field, its value and what is allowed:

  config.optim.learning_rate = -0.1: must be > 0

Rules match the end of a field's dotted path (`learning_rate` anywhere, `num_epochs.*` for a
per-phase epoch table); a field set to None is left to the preset that fills it (stylegan2).
Fields with a fixed vocabulary are checked against the registries of the code that reads them:
the optimizer's here, the others handed in by the caller (`validate(..., vocabularies)`), since
the registries of models, data and tasks sit in layers above this one. Vocabulary patterns are
anchored at the job's root, and a section holding its own `task` (a study's stages, an
augmentation experiment's generator) is a job of its own: `'gan:model.kind'` applies to
`model.kind` of every gan job, `'optim.*.name'` to each network's optimizer.
"""

from __future__ import annotations

import fnmatch
import math
import numbers
import os
import re
from typing import Any, Callable, Collection, Iterator, Mapping

import ml_collections

from prepnet_jax.runtime import optimizers


class ConfigError(ValueError):
  """A config field outside what the job accepts; one line per field."""


# --- value checks: (what is allowed, test) ----------------------------------------------------------

def _number(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _integer(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _range(lo: float | None, hi: float | None, *, lo_open: bool = False, hi_open: bool = False,
           integer: bool = False) -> tuple[str, Callable[[Any], bool]]:
  kind = "an integer" if integer else "a finite number"
  parts = []
  if lo is not None:
    parts.append(f"{'>' if lo_open else '>='} {lo:g}")
  if hi is not None:
    parts.append(f"{'<' if hi_open else '<='} {hi:g}")
  if lo is not None and hi is not None:
    text = f"{kind} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
  else:
    text = f"{kind} {' and '.join(parts)}" if integer else " and ".join(parts)

  def test(x) -> bool:
    if not (_integer(x) if integer else _number(x)):
      return False
    x = float(x)
    return ((lo is None or (x > lo if lo_open else x >= lo))
            and (hi is None or (x < hi if hi_open else x <= hi)))

  return text, test


POSITIVE_INT = _range(1, None, integer=True)
NONNEGATIVE_INT = _range(0, None, integer=True)
POSITIVE = _range(0, None, lo_open=True)
NONNEGATIVE = _range(0, None)
UNIT = _range(0, 1)                   # fractions, probabilities, ratios
UNIT_OPEN_TOP = _range(0, 1, hi_open=True)  # decay rates and momenta (1 would never forget)
UNIT_OPEN = _range(0, 1, lo_open=True, hi_open=True)
INTEGER = ("an integer", _integer)
SHA256 = ("'' or 64 hexadecimal digits",
          lambda x: isinstance(x, str) and bool(re.fullmatch(r"|[0-9a-fA-F]{64}", x)))
CHANNELS = ("1 or 3", lambda x: _integer(x) and x in (1, 3))


def _int_list(x) -> bool:
  return isinstance(x, (tuple, list)) and len(x) > 0 and all(_integer(v) for v in x)


def _balance(x) -> bool:
  return (isinstance(x, (tuple, list)) and (len(x) == 0 or (
      len(x) == 2 and _integer(x[0]) and x[0] >= 0 and _number(x[1]) and 0 < x[1] < 1)))


# Field-name conventions → allowed values. A pattern matches the last components of a field's
# path ('*' = any one name); the first matching rule decides.
RULES: tuple[tuple[tuple[str, ...], tuple[str, Callable[[Any], bool]]], ...] = (
    # BigAug appearance ranges (data/transforms.py), before the optimizer's `gamma` (> 0) matches
    (("augment.gamma", "augment.blur_sharpen", "augment.noise"), NONNEGATIVE),
    (("augment.low_resolution",), UNIT_OPEN_TOP),
    (("augment.bigaug_probability",), UNIT),
    # learning rates and the optimizer (runtime/optimizers.py)
    (("learning_rate", "*_learning_rate", "lr"), POSITIVE),
    (("weight_decay", "grad_clip", "plateau_min_lr", "warmup_epochs"), NONNEGATIVE),
    (("momentum", "b1", "b2", "rms_decay", "adam_beta1", "adam_beta2"), UNIT_OPEN_TOP),
    (("eps", "adam_eps", "gamma", "onecycle_div_factor", "onecycle_final_div_factor"), POSITIVE),
    (("onecycle_pct_start", "plateau_factor"), UNIT_OPEN),
    (("step_epochs",), POSITIVE_INT),
    (("plateau_patience", "early_stopping_patience"), NONNEGATIVE_INT),
    # how long: epochs, steps, kimg, intervals
    (("num_epochs", "num_epochs.*", "num_steps", "origin_epochs", "n_critic"), POSITIVE_INT),
    (("head_only_epochs", "keep_checkpoints", "d_reg_interval", "g_reg_interval",
      "checkpoint_every_epochs"), NONNEGATIVE_INT),
    (("log_every_steps", "*_every_steps", "save_every", "sample_every"), POSITIVE_INT),
    (("total_kimg", "snapshot_kimg", "checkpoint_kimg"), POSITIVE),
    (("ema_kimg", "ema_rampup"), NONNEGATIVE),
    # batches and sizes
    (("batch_size", "image_size", "num_grid_images", "min_side", "max_side"), POSITIVE_INT),
    (("extractor_image_size", "crop_resize", "crop_margin", "worker_processes", "prefetch_batches"),
     NONNEGATIVE_INT),
    (("channels",), CHANNELS),
    (("width_multiplier", "origin_width"), POSITIVE),
    (("cache_mb",), NONNEGATIVE),
    # fractions, probabilities, ratios, rates
    (("*_fraction", "*_ratio", "*_prob", "cam_alpha", "affine_translate", "brightness", "contrast"), UNIT),
    (("dropout_rate", "d_dropout", "ema_decay", "w_avg_beta", "affine_scale"), UNIT_OPEN_TOP),
    (("affine_degrees", "clip_value", "gp_weight", "r1_gamma", "pl_weight", "kl_weight", "recon_weight",
      "feature_weight", "eta_*", "pseudo_sigma"), NONNEGATIVE),
    (("balance",), ("() or (class label >= 0, fraction in (0, 1))", _balance)),
    # seeds and hashes
    (("seed", "*_seed"), INTEGER),
    (("seeds",), ("a non-empty sequence of integers", lambda x: isinstance(x, str) or _int_list(x))),
    (("*sha256",), SHA256),
)

# Paths the job reads: they must exist once set ('' = unset, '@<stage>' = a study stage's output).
INPUT_FILES = ("*_path",)
INPUT_DIRS = ("manual_dir", "*_workdir", "workdirs", "generated.workdir", "generated.folder")

Vocabularies = Mapping[str, Callable[[], Collection[str]]]
OWN_VOCABULARIES: dict[str, Callable[[], Collection[str]]] = {
    "optim.name": lambda: optimizers.OPTIMIZERS, "optim.*.name": lambda: optimizers.OPTIMIZERS,
    "optim.schedule": lambda: optimizers.SCHEDULES, "optim.*.schedule": lambda: optimizers.SCHEDULES,
}


def _matches(path: tuple[str, ...], pattern: str, anchored: bool) -> bool:
  parts = pattern.split(".")
  if len(parts) > len(path) or (anchored and len(parts) != len(path)):
    return False
  return all(fnmatch.fnmatchcase(p, q) for p, q in zip(path[-len(parts):], parts))


def _path_problem(path: tuple[str, ...], value: Any) -> str | None:
  values = value if isinstance(value, (tuple, list)) else (value,)
  for kind, patterns, exists in (("file", INPUT_FILES, os.path.isfile),
                                 ("directory", INPUT_DIRS, os.path.isdir)):
    if not any(_matches(path, p, anchored=False) for p in patterns):
      continue
    for v in values:
      if not isinstance(v, str):
        return f"must be a path (a string), got {type(v).__name__}"
      if v and not v.startswith("@") and not exists(v):
        return f"no such {kind}" if len(values) == 1 else f"no such {kind}: {v!r}"
  return None


def _value_problem(path: tuple[str, ...], value: Any) -> str | None:
  if value is None:  # filled later from a preset
    return None
  for patterns, (allowed, test) in RULES:
    if any(_matches(path, p, anchored=False) for p in patterns):
      return None if test(value) else f"must be {allowed}"
  return _path_problem(path, value)


def vocabulary_applies(pattern: str, task: str, path: tuple[str, ...]) -> bool:
  """Whether a `'[task:]dotted.path'` key names the field at `path` (from its job's root)."""
  scope, _, dotted = pattern.rpartition(":")
  return (not scope or scope == task) and _matches(path, dotted, anchored=True)


def _vocabulary_problem(task: str, path: tuple[str, ...], value: Any,
                        vocabularies: Vocabularies) -> str | None:
  if value is None:
    return None
  for pattern, names in vocabularies.items():
    if not vocabulary_applies(pattern, task, path):
      continue
    allowed = tuple(names())
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if v not in allowed:
        return f"must be one of {', '.join(map(str, allowed))}"
  return None


def fields(config: ml_collections.ConfigDict) -> Iterator[tuple[str, tuple, tuple, Any, Any]]:
  """(task, path from the job's root, full path, value, enclosing section) of every leaf field; a
  section holding its own `task` (the top level, a study stage, a nested generator) is a job."""

  def walk(section, full: tuple[str, ...], job_root: int, task: str):
    if "task" in section:
      job_root, task = len(full), str(section["task"])
    for key in section.keys():
      value, path = section[key], full + (str(key),)
      if isinstance(value, ml_collections.ConfigDict):
        yield from walk(value, path, job_root, task)
      else:
        yield task, path[job_root:], path, value, section

  yield from walk(config, (), 0, "")


def problems(config: ml_collections.ConfigDict, vocabularies: Vocabularies | None = None) -> list[str]:
  """One line per field outside its allowed values (empty: the config is fine)."""
  vocabularies = {**OWN_VOCABULARIES, **(vocabularies or {})}
  found = []
  for task, local, path, value, section in fields(config):
    why = _vocabulary_problem(task, local, value, vocabularies) or _value_problem(local, value)
    if (not why and path[-1] == "checkpoint_every_epochs" and value == 0
        and _integer(section.get("num_epochs"))):  # one training loop: it checkpoints every n-th epoch
      why = "must be an integer >= 1 (0, 'at phase boundaries only', needs per-phase num_epochs)"
    if why:
      found.append(f"config.{'.'.join(path)} = {value!r}: {why}")
  return found


def validate(config: ml_collections.ConfigDict, vocabularies: Vocabularies | None = None) -> None:
  """Raises `ConfigError` naming every field outside its allowed values, one line each.

  `vocabularies`: `'[task:]dotted.path'` → a callable giving the allowed names (from the
  registry of the code that reads the field; called only when such a field exists).
  """
  found = problems(config, vocabularies)
  if found:
    raise ConfigError("\n".join(found))
