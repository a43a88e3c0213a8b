"""End-to-end classifier training: reports, resume, SIGKILL recovery, multi-device, NaN guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import REPO, tiny_classifier_config
from prepnet_jax.models import classifier_factory
from prepnet_jax.runtime import checkpointing, checks
from prepnet_jax.tasks.classifier import train as classifier


def _run_cli(workdir, *overrides, env=None, wait=True):
  cmd = [sys.executable, os.path.join(REPO, "main.py"), "--config=" + os.path.join(REPO, "tests", "tiny_classifier_config.py"),
         f"--workdir={workdir}", *overrides]
  full_env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
  if not wait:
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=600)


def _metrics(workdir):
  with open(os.path.join(workdir, "reports", "metrics.json")) as f:
    return json.load(f)


def test_train_report_and_resume_without_retraining(tmp_path, capsys):
  config = tiny_classifier_config()
  results = classifier.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert "| phantom_ct/sars:test |" in out
  report = _metrics(tmp_path)
  assert set(report["results"]) >= {"phantom_ct/sars:train", "phantom_ct/sars:test", "phantom_ct/ucsd:test"}
  for m in report["results"].values():
    assert 0.0 <= m["balanced_accuracy"] <= 1.0
    assert np.asarray(m["confusion_matrix"]).sum() == m["n"]
  assert os.path.exists(tmp_path / "reports" / "metrics.md")
  # Training actually learned something on the training site.
  assert report["results"]["phantom_ct/sars:train"]["balanced_accuracy"] > 0.6
  steps = checkpointing.Checkpointer(str(tmp_path / "checkpoints")).all_steps()
  assert steps, "no checkpoint written"
  # Second run: resumes at the final step, trains nothing, same results.
  again = classifier.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  assert f"resuming from checkpoint step {steps[-1]}" in out
  assert "steps/s" not in out  # no training step ran
  for key in results:
    assert again[key]["confusion_matrix"] == results[key]["confusion_matrix"], key
    np.testing.assert_array_equal(again[key]["auc"], results[key]["auc"])
  # Both classes are present in the held-out split, so the metrics are defined.
  assert np.isfinite(results["phantom_ct/sars:test"]["auc"])


def test_sigkill_half_way_then_resume_matches_uninterrupted(tmp_path):
  reference = tmp_path / "uninterrupted"
  done = _run_cli(str(reference))
  assert done.returncode == 0, done.stdout + done.stderr
  killed = tmp_path / "killed"
  proc = _run_cli(str(killed), wait=False)
  ckpt_dir = killed / "checkpoints"
  deadline = time.time() + 300
  while time.time() < deadline:  # kill as soon as the first epoch checkpoint is finalised
    if ckpt_dir.exists() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
      break
    if proc.poll() is not None:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "run finished before it could be killed; make the tiny config longer"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  first_steps = sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
  resumed = _run_cli(str(killed))
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert f"resuming from checkpoint step {first_steps[-1]}" in resumed.stdout
  a, b = _metrics(reference), _metrics(killed)
  assert a["best_step"] == b["best_step"]
  for key in a["results"]:
    assert a["results"][key]["confusion_matrix"] == b["results"][key]["confusion_matrix"], key
    np.testing.assert_allclose(a["results"][key]["auc"], b["results"][key]["auc"], atol=1e-6)


def test_one_device_and_eight_devices_give_the_same_losses(tmp_path):
  # SGD: the cross-device gradient sum is reordered, which changes the last float bits; Adam
  # divides by sqrt(v) and turns those bits on near-zero gradients into lr-sized steps (a
  # chaotic but legitimate divergence), while SGD keeps the two runs within float rounding.
  sgd = ("--config.optim.name=sgd", "--config.optim.learning_rate=0.002", "--config.num_epochs=1")
  one = _run_cli(str(tmp_path / "one"), *sgd)
  eight = _run_cli(str(tmp_path / "eight"), *sgd,
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert one.returncode == 0, one.stdout + one.stderr
  assert eight.returncode == 0, eight.stdout + eight.stderr
  assert "8 device(s)" in eight.stdout and "1 device(s)" in one.stdout
  l1 = np.asarray(_metrics(tmp_path / "one")["step_losses"])
  l8 = np.asarray(_metrics(tmp_path / "eight")["step_losses"])
  assert l1.shape == l8.shape and len(l1) >= 4
  np.testing.assert_array_equal(l1[:, 0], l8[:, 0])
  np.testing.assert_allclose(l1[:, 1], l8[:, 1], atol=1e-5, rtol=0)


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(tmp_path):
  config = tiny_classifier_config(num_epochs=1)
  classifier.train_and_evaluate(config, str(tmp_path))
  good = checkpointing.Checkpointer(str(tmp_path / "checkpoints")).latest_step()
  bad = tiny_classifier_config(num_epochs=3)
  bad.optim.learning_rate = float("inf")
  with pytest.raises(checks.NonFiniteLossError, match=r"at step \d+"):
    classifier.train_and_evaluate(bad, str(tmp_path))
  ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
  assert ckpt.latest_step() == good
  # The last good checkpoint restores to finite parameters.
  model = classifier_factory.build_classifier(config)
  import jax
  state = classifier_factory.create_classifier_state(config, model, jax.random.key(0), 1, 1)
  restored, _ = ckpt.restore(state)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(restored.params))
