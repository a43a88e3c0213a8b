"""The main job's console output a person can watch, and its TensorBoard runs (issue #16 item 3).

A tiny PrepNet experiment (two rows × two seeds) runs through `main.py` with the environment a
user has: no TF_CPP_MIN_LOG_LEVEL or TF_ENABLE_ONEDNN_OPTS of its own.
"""

from __future__ import annotations

import collections
import glob
import os
import subprocess
import sys

import pytest

from helpers import REPO

TESTS = os.path.join(REPO, "tests")
ROWS = {"auto_encoder": ("Auto-encoder", "ae_only", ["ae_warmup", "cov_sars"]),
        "prepnet": ("PrepNet", "original", ["ae_warmup", "img_warmup", "adversarial", "cov_sars"])}
# Two rows sharing the AE warm-up phase (the second one reuses it), two seeds, one COVID training set.
CONFIG = f'''
import sys
sys.path.insert(0, {TESTS!r})
from helpers import tiny_prepnet_config


def get_config():
  c = tiny_prepnet_config([dict(name="Auto-encoder", overrides={{"schedule": "ae_only"}}),
                           dict(name="PrepNet", overrides={{}})], seeds=(0, 1))
  c.cov_train_sets = (("phantom_ct/sars",),)
  c.diagnostics.enabled = False
  return c
'''


@pytest.fixture(scope="module")
def job(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("console")
  config = tmp / "console_config.py"
  config.write_text(CONFIG)
  env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}
  env.update(PYTHONPATH=REPO, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  workdir = tmp / "w"
  run = subprocess.run([sys.executable, os.path.join(REPO, "main.py"), f"--config={config}",
                        f"--workdir={workdir}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, timeout=600)
  assert run.returncode == 0, run.stdout[-3000:]
  return run.stdout, str(workdir)


def test_no_line_is_printed_twice(job):
  out, _ = job
  # Markdown rules (|---|---|) of the final tables repeat by nature; every other line is one event.
  lines = [line for line in out.splitlines() if line.strip() and set(line) - set("|-: ")]
  repeated = [line for line, n in collections.Counter(lines).items() if n > 1]
  assert not repeated, out


def test_no_start_up_banners(job):
  out, _ = job
  for word in ("oneDNN", "cuda", "TF-TRT", "cpu_feature_guard", "absl::InitializeLog"):
    assert word not in out, out


def test_phases_and_runs_show_elapsed_time_and_eta(job):
  out, _ = job
  lines = out.splitlines()
  for slug, (name, _, phases) in ROWS.items():
    for seed in (0, 1):
      for phase in phases:
        if slug == "prepnet" and phase == "ae_warmup":
          continue  # reused from the Auto-encoder row of the same seed
        [line] = [l for l in lines if l.startswith(f"[prepnet {slug}/s{seed}] {phase} epoch 1/1 | ")]
        assert "| elapsed " in line and "| ETA " in line, line
  runs = [l for l in lines if l.startswith("[prepnet] row ") and " done | run " in l]
  assert [l.split(" | ")[1] for l in runs] == [f"run {k}/4" for k in range(1, 5)], out
  assert runs[0].startswith("[prepnet] row 1/2 'Auto-encoder' seed 0 (1/2) done | ")
  assert all("| elapsed " in l and "| ETA " in l for l in runs)
  assert runs[-1].endswith("| ETA 0s")


def _events(directory: str):
  from tensorboard.backend.event_processing import event_accumulator
  acc = event_accumulator.EventAccumulator(directory, size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  return acc


def test_one_tensorboard_run_per_row_and_seed_with_hparams(job):
  from tensorboard.plugins.hparams import metadata as hparams_metadata, plugin_data_pb2
  _, workdir = job
  assert not glob.glob(os.path.join(workdir, "events.out.tfevents.*"))  # every event belongs to a run
  for slug, (name, schedule, phases) in ROWS.items():
    for seed in (0, 1):
      run_dir = os.path.join(workdir, "rows", slug, f"seed_{seed}")
      assert len(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))) == 1, run_dir
      acc = _events(run_dir)
      content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)[hparams_metadata.SESSION_START_INFO_TAG]
      hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
      assert hparams["row"].string_value == name and hparams["schedule"].string_value == schedule
      assert hparams["seed"].number_value == seed and hparams["batch_size"].number_value == 32
      assert hparams["optim.ae.learning_rate"].number_value == pytest.approx(1e-3)
      # Phase-aware steps: per-phase tags, the row's epoch count across its phases as the step.
      tags = acc.Tags()["tensors"]
      first_steps = []
      for phase in phases:
        [loss] = [t for t in tags if t.startswith(f"{phase}/")][:1]
        first_steps.append([e.step for e in acc.Tensors(loss)])
      assert first_steps == [[k] for k in range(1, len(phases) + 1)], (run_dir, first_steps)
