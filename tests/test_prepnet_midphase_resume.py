"""PrepNet stopped inside a phase continues after the phase's last checkpointed epoch, not from
the phase's start, and ends with an uninterrupted run's numbers.

This module is also the `main.py` config (`get_config`) of the SIGKILL test: a tiny PrepNet row
whose adversarial phase has several epochs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import REPO  # noqa: E402
from prepnet_jax.tasks.prepnet import job, row_run  # noqa: E402
from helpers import tiny_prepnet_config  # noqa: E402

ADVERSARIAL_EPOCHS = 5
KILL_AFTER = 2  # the adversarial epoch whose log line triggers the kill


def get_config():
  c = tiny_prepnet_config([dict(name="PrepNet", overrides={})])
  c.num_epochs.adversarial = ADVERSARIAL_EPOCHS
  c.cov_train_sets = (("phantom_ct/sars",),)
  c.diagnostics.enabled = False
  return c


def _command(workdir):
  return [sys.executable, os.path.join(REPO, "main.py"), f"--config={os.path.abspath(__file__)}",
          f"--workdir={workdir}"]


def _env():
  return dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")


def _run(workdir) -> str:
  done = subprocess.run(_command(workdir), env=_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout + done.stderr
  return done.stdout


def _load(workdir, *path):
  """A JSON file of a run, with the run's own directory (in calibration paths) named W."""
  with open(os.path.join(workdir, *path)) as f:
    return json.loads(f.read().replace(str(workdir), "W"))


def _row_numbers(workdir, slug: str) -> dict:
  """A row's results.json (evaluation, calibration, curves) less its timings."""
  row = _load(workdir, "rows", slug, "seed_0", "results.json")
  row.pop("_phase_seconds")
  row.pop("_wall_seconds")
  return row


def _numbers(workdir):
  """Everything the run reports, less its timings."""
  results = _load(workdir, "reports", "prepnet_results.json")
  results.pop("wall_seconds")
  for by_seed in results["results"].values():
    for r in by_seed.values():
      r.pop("_phase_seconds")
      r.pop("_wall_seconds")
  return _row_numbers(workdir, "prepnet"), results, _load(workdir, "reports", "prepnet_table.json")


def test_kill_inside_the_adversarial_phase_resumes_after_its_last_checkpointed_epoch(tmp_path):
  reference = tmp_path / "uninterrupted"
  _run(reference)

  killed = tmp_path / "killed"
  proc = subprocess.Popen(_command(killed), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  printed = []
  for line in proc.stdout:
    printed.append(line)
    if f"] adversarial epoch {KILL_AFTER}/{ADVERSARIAL_EPOCHS} | " in line:
      proc.send_signal(signal.SIGKILL)
      break
  proc.wait()
  printed = "".join(printed)
  assert proc.returncode == -signal.SIGKILL, printed
  row_dir = killed / "rows" / "prepnet" / "seed_0"
  for directory in ("checkpoints", "checkpoints_adversarial"):  # one finalised checkpoint in each
    assert len([p for p in os.listdir(row_dir / directory) if p.isdigit()]) == 1, directory

  out = _run(killed)
  assert "resuming after phases ['ae_warmup', 'img_warmup']" in out, out
  resumed = re.search(r"\] adversarial: resuming after epoch (\d+)", out)
  assert resumed, out
  # Epoch 1's checkpoint was written before epoch 2 started; epoch 2's may or may not have been.
  start = int(resumed.group(1))
  assert 1 <= start <= KILL_AFTER, out
  assert re.findall(r"\] adversarial epoch (\d+)/\d+ \|", out) == [str(e) for e in range(start + 1, ADVERSARIAL_EPOCHS + 1)]
  assert "ae_warmup epoch" not in out and "img_warmup epoch" not in out

  # Same curves (every epoch's losses), evaluation, calibration and tables as the uninterrupted run.
  assert _numbers(killed) == _numbers(reference)
  # Only the phase-boundary checkpoint is left; the epoch checkpoints went with their phases.
  assert [p for p in os.listdir(row_dir) if p.startswith("checkpoints")] == ["checkpoints"]


class _Killed(Exception):
  pass


def test_stop_inside_an_e_cov_phase_after_a_diagnostic_phase_resumes_exactly(tmp_path, monkeypatch, capsys):
  """The E_cov phase's own epoch checkpoint (E_cov, its best epoch, the iterators), and the AE a
  resumed row takes into the next training set: Exp. 6 trains the AE on after each E_cov and must
  put it back before its phase-boundary checkpoint. Stopped by an exception, in process."""
  config = tiny_prepnet_config([dict(name="Diagnostic", overrides={"schedule": "diagnostic"})])
  config.num_epochs.diag_cov = 2
  config.diagnostics.enabled = False
  job.train_and_evaluate(config, str(tmp_path / "uninterrupted"))

  log = row_run.RowRun._log
  def log_then_stop(self, phase, epoch, *rest):
    log(self, phase, epoch, *rest)
    if (phase, epoch) == ("cov_ucsd", 2):
      raise _Killed
  monkeypatch.setattr(row_run.RowRun, "_log", log_then_stop)
  stopped = tmp_path / "stopped"
  with pytest.raises(_Killed):
    job.train_and_evaluate(config, str(stopped))
  monkeypatch.undo()
  capsys.readouterr()
  job.train_and_evaluate(config, str(stopped))
  out = capsys.readouterr().out
  assert "resuming after phases ['ae_pretrained', 'img_warmup_pretrain', 'cov_sars', 'diagnostic_sars']" in out
  assert "cov_ucsd: resuming after epoch 1" in out
  assert re.findall(r"\] cov_ucsd epoch (\d+)/\d+ \|", out) == ["2"]
  assert _row_numbers(stopped, "diagnostic") == _row_numbers(tmp_path / "uninterrupted", "diagnostic")
