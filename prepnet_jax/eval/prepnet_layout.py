"""A PrepNet run's rows and where it keeps what, under `--workdir` (besides `config.json` and TensorBoard files):

  rows/<row_slug(row)>/seed_<s>/checkpoints/   the row's states after every finished phase
                                               (a rerun skips those phases)
  rows/<row_slug(row)>/seed_<s>/results.json   its evaluation; present = the row/seed is done
  rows/<row_slug(row)>/seed_<s>/e_cov/<set>/reports/calibration.json (+ reliability_*.png)
                                               the temperature of the E_cov trained on COVID
                                               training set <set> ('sars', 'sars+ucsd'), fitted
                                               on that set's validation split
  shared/phases/<phase+phase…>_<ae hash>/      AE/E_img states after shared phases, reused by
                                               later rows with the same AE-side config
  shared/ae_pretrained_<ae hash>/checkpoints/  the pre-trained AE of the pretrained schedules
  reports/prepnet_table.{json,md}, reports/prepnet_results.json   the cross-dataset tables
  reports/<row_slug(row)>/                     diagnostics.json, before/after grids, histograms
"""

from __future__ import annotations

import copy
import os

import ml_collections

ROWS = "rows"
SHARED = "shared"
TABLE_REPORT = "prepnet_table"
RESULTS_REPORT = "prepnet_results"


def row_slug(name: str) -> str:
  """The directory name of a row."""
  return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def row_dir(workdir: str, row_name: str, seed: int) -> str:
  return os.path.join(workdir, ROWS, row_slug(row_name), f"seed_{int(seed)}")


def row_checkpoints(row_directory: str) -> str:
  return os.path.join(row_directory, "checkpoints")


def row_results_file(row_directory: str) -> str:
  return os.path.join(row_directory, "results.json")


def cov_model_dir(row_directory: str, train_set: str) -> str:
  """The directory of one E_cov of a row/seed (its calibration reports)."""
  return os.path.join(row_directory, "e_cov", train_set)


def shared_dir(workdir: str) -> str:
  return os.path.join(workdir, SHARED)


def shared_phase_dir(shared_directory: str, phases: list[str], ae_hash: str) -> str:
  return os.path.join(shared_directory, "phases", "+".join(phases) + "_" + ae_hash)


def pretrained_ae_dir(shared_directory: str, ae_hash: str) -> str:
  return os.path.join(shared_directory, f"ae_pretrained_{ae_hash}")


def diagnostics_report(row_name: str) -> str:
  """The `rundir.write_report` name of a row's diagnostics (its figures sit beside it)."""
  return f"{row_slug(row_name)}/diagnostics"


def row_config(config, row: dict, seed: int) -> ml_collections.ConfigDict:
  """The run config with the row's dotted `overrides` applied and `seed` set."""
  c = copy.deepcopy(config.to_dict())
  for key, value in dict(row.get("overrides", {})).items():
    target = c
    *path, last = key.split(".")
    for p in path:
      target = target[p]
    if last not in target:
      raise KeyError(f"row {row['name']!r} overrides unknown config field {key!r}")
    target[last] = value
  c["seed"] = seed
  return ml_collections.ConfigDict(c)
