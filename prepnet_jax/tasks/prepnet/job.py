"""PrepNet: cross-dataset CT harmonisation (task 'prepnet'), every schedule of the thesis.

For each table row (a named set of config overrides) and each seed:
  1. build the training data: the train split of every dataset of `data.train`, tagged with its
     dataset id (the imaging label), optionally up-sampled (Exp. 3) — `training_data`;
  2. run the row's schedule (`schedules`, epochs per phase in `num_epochs`) over three explicit
     states (AE, E_img, E_cov) with the jitted steps of `steps` — `row_run`;
  3. for every COVID training set (one dataset, or several for Exp. 2) train E_cov on AE outputs,
     select the epoch by same-dataset validation balanced accuracy, and evaluate on
     train/val/test of every dataset (every image passes the trained AE first); fit E_cov's
     temperature on that same validation data (`prepnet_layout.cov_model_dir`: the
     calibration that predict/serve apply to the row's AE + E_cov pipeline);
  4. write the cross-dataset tables (`report`) and harmonisation diagnostics (`diagnostics`).

Resume: states are checkpointed after every phase (`layout` says where) and, inside a phase,
every `checkpoint_every_epochs` epochs (`row_run`); a rerun skips finished rows and phases and
continues a killed phase after its last checkpointed epoch.

Console: the phases' progress lines (`row_run`) and, after every row/seed, one with the runs done,
elapsed time and the ETA of the whole experiment (from the runs this process did). TensorBoard: one
run per row/seed, its event files in the row's directory (`rows/<row>/seed_<s>/`), starting with its
hyperparameters (the row's resolved config) and holding the curves of every phase (`row_run`) and
the first seed's diagnostics images.
"""

from __future__ import annotations

import json
import os
import time

from prepnet_jax.eval import prepnet_layout
from prepnet_jax.runtime import compile_cache, sharding, writers
from prepnet_jax.tasks.prepnet import diagnostics, evidence, report
from prepnet_jax.tasks.prepnet.row_run import RowRun
from prepnet_jax.tasks.prepnet.training_data import Data


def _data_for(row_cfg, data_cache: dict) -> Data:
  """Rows with the same data, preprocessing, up-sampling and seed share one in-memory copy."""
  key = (bool(row_cfg.upsample), int(row_cfg.seed), compile_cache.setting_key(row_cfg.preprocess),
         compile_cache.setting_key(row_cfg.data))
  if key not in data_cache:
    data_cache[key] = Data(row_cfg)
  return data_cache[key]


def _hparams(row_cfg, row_name: str) -> dict:
  """A row/seed's TensorBoard hyperparameters: its resolved config (clu flattens it), without the
  list of every row of the table."""
  return {"row": row_name, **{k: v for k, v in row_cfg.to_dict().items() if k != "rows"}}


def train_and_evaluate(config, workdir: str) -> dict:
  if int(config.checkpoint_every_epochs) < 0:
    raise ValueError(f"checkpoint_every_epochs={config.checkpoint_every_epochs} must be ≥ 0 (0 = checkpoints "
                     "at phase boundaries only)")
  mesh = sharding.make_mesh()
  t_start = time.time()
  data_cache: dict[tuple, Data] = {}
  all_results: dict[str, dict[int, dict]] = {}
  n_rows, n_seeds = len(config.rows), len(config.seeds)
  to_run = sum(not os.path.exists(prepnet_layout.row_results_file(prepnet_layout.row_dir(workdir, row["name"], s)))
               for row in config.rows for s in config.seeds)
  runs = writers.Progress(to_run, every=1, name="prepnet", unit="run")
  runs_done = 0
  for i, row in enumerate(config.rows, 1):
    name = row["name"]
    all_results[name] = {}
    for j, seed in enumerate(config.seeds, 1):
      where = f"row {i}/{n_rows} {name!r} seed {seed} ({j}/{n_seeds})"
      rc = prepnet_layout.row_config(config, row, int(seed))
      row_dir = prepnet_layout.row_dir(workdir, name, seed)
      done_file = prepnet_layout.row_results_file(row_dir)
      if os.path.exists(done_file):
        with open(done_file) as f:
          all_results[name][int(seed)] = json.load(f)
        print(f"[prepnet] {where}: finished earlier, results loaded", flush=True)
        continue
      t_run = time.time()
      data = _data_for(rc, data_cache)
      print(f"[prepnet] {where}: schedule={rc.schedule} upsample={rc.upsample} (repeats {data.repeats}) "
            f"grayscale_cov={rc.grayscale_cov} E_cov={rc.e_cov.name}", flush=True)
      writer = writers.create_writer(row_dir)
      writer.write_hparams(_hparams(rc, name))
      run = RowRun(rc, data, row_dir, prepnet_layout.shared_dir(workdir), mesh, writer,
                   f"{prepnet_layout.row_slug(name)}/s{seed}")
      results = run.run()
      if run.schedule.uses_ae and config.diagnostics.enabled:  # every seed: the report gives mean ± std
        results["_diagnostics"] = diagnostics.run_all(rc, data, run, workdir, prepnet_layout.diagnostics_report(name),
                                                      writer, with_figures=int(seed) == int(config.seeds[0]))
      results["_curves"] = run.meta["curves"]
      results["_phase_seconds"] = run.meta["phase_seconds"]
      results["_wall_seconds"] = round(time.time() - t_run, 1)
      os.makedirs(row_dir, exist_ok=True)
      with open(done_file, "w") as f:  # written last: its presence marks the row/seed finished
        json.dump(results, f)
      all_results[name][int(seed)] = results
      writer.close()
      runs_done += 1
      runs(runs_done, what=f"{where} done")
  tables = report.build_tables(all_results, config)
  # The experiment's compute time: the row/seed runs' own wall times when every result has one
  # (so a rerun that only loads finished rows reports the time they took, not its own seconds).
  run_seconds = [r.get("_wall_seconds") for by in all_results.values() for r in by.values()]
  seconds = sum(run_seconds) if all(run_seconds) else time.time() - t_start
  text = report.write(workdir, tables, all_results, config, seconds)
  print("\n" + text, flush=True)
  evidence.write(workdir, tables, all_results, config, seconds)
  return tables
