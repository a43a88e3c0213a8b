"""The run directory (`--workdir`): its resolved config and its reports, written one way.

Layout: `config.json` (the resolved config; a later job rebuilds the model from it),
`checkpoints/` (see `checkpointing`), `reports/<name>.json` (machine-readable) beside
`reports/<name>.md` (human-readable) and figures. Only process 0 writes, so a multi-host run
produces one copy.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections

CONFIG_FILE = "config.json"
REPORTS = "reports"
# Fields added after runs were written, with the value those runs used: a model rebuilt from an
# older config.json computes as it was trained (float32 before `half_precision` existed).
LEGACY_DEFAULTS = {"half_precision": False}


def reports_dir(workdir: str) -> str:
  path = os.path.join(workdir, REPORTS)
  os.makedirs(path, exist_ok=True)
  return path


def write_config(config, workdir: str, overwrite: bool = True) -> str:
  """`config.json` of the run (main.py writes it before dispatching the job)."""
  path = os.path.join(workdir, CONFIG_FILE)
  if jax.process_index() == 0 and (overwrite or not os.path.exists(path)):
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(config.to_dict() if hasattr(config, "to_dict") else config, f, indent=2, default=str)
  return path


def read_config(workdir: str, what: str = "training") -> ml_collections.ConfigDict:
  """The resolved config a finished run left in its workdir; a clear error when there is none."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} does not exist; expected the workdir of a finished {what} run "
                            "(main.py writes config.json there)")
  with open(path) as f:
    values = json.load(f)
  return ml_collections.ConfigDict({**LEGACY_DEFAULTS, **values})


def write_report(workdir: str, name: str, payload: Any, markdown: str | None = None, *,
                 indent: int = 2) -> str:
  """`reports/<name>.json` and, when given, `reports/<name>.md`; returns the JSON path.

  `name` may contain folders (`'rowA/diagnostics'`). Floats from numpy are written as floats.
  """
  path = os.path.join(workdir, REPORTS, f"{name}.json")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(payload, f, indent=indent, default=_to_json)
    if markdown is not None:
      with open(os.path.join(workdir, REPORTS, f"{name}.md"), "w") as f:
        f.write(markdown if markdown.endswith("\n") else markdown + "\n")
  return path


def _to_json(value):
  if hasattr(value, "item"):  # numpy / jax scalars
    return value.item()
  if hasattr(value, "tolist"):
    return value.tolist()
  return str(value)
