"""One short run of every PrepNet schedule on a tiny phantom, plus the table and resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from helpers import load_config, tiny_prepnet_config
from prepnet_jax.eval import prepnet_layout
from prepnet_jax.models import prepnet_networks
from prepnet_jax.tasks.prepnet import job as prepnet, schedules, training_data


def _check_results(results: dict, keys=("sars", "ucsd")):
  for key in keys:
    for dataset in keys:
      for split in ("train", "val", "test"):
        m = results[key]["eval"][dataset][split]
        assert 0.0 <= m["balanced_accuracy"] <= 1.0
        assert np.asarray(m["confusion_matrix"]).sum() == m["n"] > 0


@pytest.mark.parametrize("schedule", schedules.SCHEDULES)
def test_every_schedule_runs_one_step(tmp_path, schedule):
  overrides = {"schedule": schedule}
  if schedule == "diagnostic":
    overrides["diagnostic_variant"] = "adv"
  config = tiny_prepnet_config([dict(name=schedule, overrides=overrides)])
  config.diagnostics.enabled = False
  tables = prepnet.train_and_evaluate(config, str(tmp_path))
  row = json.load(open(tmp_path / "rows" / prepnet_layout.row_slug(schedule) / "seed_0" / "results.json"))
  _check_results(row)
  curves = row["_curves"]
  if schedule == "none":
    assert set(curves) == {"cov_sars", "cov_ucsd"}
  if schedule in ("original", "joint"):
    assert {"ae_warmup", "img_warmup", "adversarial"} <= set(curves)
    assert np.isfinite(curves["adversarial"][0]["l_pseu"])
  if schedule == "four_step":
    assert len(curves["cov_sars"]) == 2  # growing batch curriculum: epochs 1 and 2
  if schedule == "diagnostic":
    assert any(k.startswith("diagnostic_adv") for k in curves)
  assert np.isfinite(tables[schedule]["Within"]["mean"])


def test_table_rows_seeds_diagnostics_and_resume(tmp_path, capsys):
  rows = [dict(name="Original", overrides={"schedule": "none"}),
          dict(name="PrepNet + gray + up", overrides={"upsample": True, "grayscale_cov": True})]
  config = tiny_prepnet_config(rows, seeds=(0, 1))
  tables = prepnet.train_and_evaluate(config, str(tmp_path))
  text = capsys.readouterr().out
  assert "| Method | Within |" in text and "PrepNet + gray + up" in text
  reports = tmp_path / "reports"
  assert (reports / "prepnet_table.md").exists() and (reports / "prepnet_results.json").exists()
  row_reports = reports / prepnet_layout.row_slug("PrepNet + gray + up")
  diag = json.load(open(row_reports / "diagnostics.json"))
  assert 0.0 <= diag["origin_raw"]["balanced_accuracy"] <= 1.0
  assert diag["reconstruction"]["sars"]["psnr"] > 5.0
  for name in ("before_after_sars.png", "before_after_ucsd.png", "intensity_histograms.png"):
    assert (row_reports / name).stat().st_size > 1000
  from PIL import Image
  width, height = Image.open(row_reports / "before_after_sars.png").size
  assert height >= 2 * 128 and width > height  # a raw row over an AE row, tiles enlarged to >= 128 px
  # Two seeds → mean ± std; the baseline's own delta is exactly zero.
  assert len(tables["Original"]["Within"]["values"]) == 2
  assert tables["Original"]["Cross_delta_pp"]["mean"] == 0.0
  # Within/Cross follow the thesis definitions.
  r = json.load(open(tmp_path / "rows" / "original" / "seed_0" / "results.json"))
  within = np.mean([r["sars"]["eval"]["sars"]["test"]["balanced_accuracy"],
                    r["ucsd"]["eval"]["ucsd"]["test"]["balanced_accuracy"]])
  cross = np.mean([np.mean([r[a]["eval"][b][s]["balanced_accuracy"] for s in ("train", "val", "test")])
                   for a, b in (("sars", "ucsd"), ("ucsd", "sars"))])
  assert tables["Original"]["Within"]["values"][0] == pytest.approx(within)
  assert tables["Original"]["Cross"]["values"][0] == pytest.approx(cross)
  # Upsampling duplicated the smaller dataset for the AE/E_img training set.
  assert training_data.upsample_factors([300, 100, 60]) == [1, 3, 5]
  # A rerun loads finished rows instead of retraining them.
  again = prepnet.train_and_evaluate(config, str(tmp_path))
  assert "finished earlier, results loaded" in capsys.readouterr().out
  assert again["Original"]["Within"] == tables["Original"]["Within"]


def test_phase_checkpoint_resume(tmp_path, capsys):
  config = tiny_prepnet_config([dict(name="PrepNet", overrides={})])
  config.diagnostics.enabled = False
  prepnet.train_and_evaluate(config, str(tmp_path))
  row_dir = tmp_path / "rows" / "prepnet" / "seed_0"
  first = json.load(open(row_dir / "results.json"))
  os.remove(row_dir / "results.json")  # as if killed after the last phase checkpoint
  prepnet.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "resuming after phases" in out
  second = json.load(open(row_dir / "results.json"))
  assert second["sars"]["eval"]["ucsd"]["test"] == first["sars"]["eval"]["ucsd"]["test"]


def test_a_new_e_cov_reuses_the_compiled_step():
  """Every row, seed and E_cov training set builds a fresh E_cov; its module and optimizer are
  static parts of the jitted step's input, so they must be the same objects or every new
  network compiles the step again (~10 s each on CPU)."""
  import jax
  import jax.numpy as jnp

  from prepnet_jax.tasks.prepnet import steps as prepnet_steps

  config = tiny_prepnet_config([dict(name="Original", overrides={"schedule": "none"})])
  make = lambda seed: prepnet_networks.make_classifier_state(config, config.e_cov, 1, jax.random.key(seed), 3,
                                                     config.optim.cov)
  first, second = make(0), make(1)
  assert first.tx is second.tx and first.apply_fn == second.apply_fn
  assert not np.allclose(jax.tree.leaves(first.params)[0], jax.tree.leaves(second.params)[0])
  batch = {"image": jnp.zeros((4, 32, 32, 3)), "label": jnp.array([0, 1, 0, 1])}
  prepnet_steps.cov_step(first, None, batch)
  compiled = prepnet_steps.cov_step._cache_size()
  prepnet_steps.cov_step(second, None, batch)
  assert prepnet_steps.cov_step._cache_size() == compiled


def test_rows_share_identical_ae_phases_and_only_those(tmp_path, capsys):
  """PrepNet's AE warm-up is the Auto-encoder row's whole AE training, and '+ grayscaling' differs
  from PrepNet only after the AE phases: those phases run once. Up-sampling changes the AE's data,
  so that row trains its own."""
  rows = [dict(name="Auto-encoder", overrides={"schedule": "ae_only"}),
          dict(name="PrepNet", overrides={}),
          dict(name="PrepNet + gray", overrides={"grayscale_cov": True}),
          dict(name="PrepNet + up", overrides={"upsample": True})]
  config = tiny_prepnet_config(rows)
  config.diagnostics.enabled = False
  prepnet.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  reused = [line for line in out.splitlines() if "reused the identical phase" in line]
  gray = f"[prepnet {prepnet_layout.row_slug('PrepNet + gray')}/s0"
  assert [line.split("]")[0] for line in reused] == ["[prepnet prepnet/s0"] + [gray] * 3, reused
  curves = {r: json.load(open(tmp_path / "rows" / prepnet_layout.row_slug(r) / "seed_0" / "results.json"))["_curves"]
            for r in ("Auto-encoder", "PrepNet", "PrepNet + gray", "PrepNet + up")}
  assert curves["PrepNet"]["ae_warmup"] == curves["Auto-encoder"]["ae_warmup"]
  assert curves["PrepNet + gray"]["adversarial"] == curves["PrepNet"]["adversarial"]
  assert curves["PrepNet + up"]["ae_warmup"] != curves["PrepNet"]["ae_warmup"]
  # A fresh run of the PrepNet row alone trains the same AE: reuse changes no number.
  alone = tiny_prepnet_config([rows[1]])
  alone.diagnostics.enabled = False
  prepnet.train_and_evaluate(alone, str(tmp_path / "alone"))
  solo = json.load(open(tmp_path / "alone" / "rows" / "prepnet" / "seed_0" / "results.json"))
  shared = json.load(open(tmp_path / "rows" / "prepnet" / "seed_0" / "results.json"))
  assert solo["_curves"]["adversarial"] == shared["_curves"]["adversarial"]
  assert solo["sars"]["eval"]["ucsd"]["test"]["balanced_accuracy"] == \
      shared["sars"]["eval"]["ucsd"]["test"]["balanced_accuracy"]


PREPNET_CONFIGS = sorted(os.path.basename(p)[:-3] for p in __import__("glob").glob(
    os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "prepnet*.py")))


@pytest.mark.parametrize("name", PREPNET_CONFIGS)
def test_every_row_of_every_prepnet_config_builds_its_networks(name):
  """A row's overrides must name real fields and give each network arguments it accepts
  (found the hard way: a ResNet18 row inheriting VGG-only head kwargs failed 37 minutes in)."""
  from prepnet_jax import models
  from prepnet_jax.data import transforms
  config = load_config(name)
  for row in config.rows:
    rc = prepnet_layout.row_config(config, row, 0)
    assert rc.schedule in schedules.SCHEDULES, (name, row["name"])
    for net in (rc.e_img, rc.e_cov):
      models.get_classifier(net.name, 2, width_multiplier=float(net.width_multiplier), **dict(net.kwargs))
    transforms.make_preprocess(rc.preprocess, training=True)  # bad augmentation settings raise here
