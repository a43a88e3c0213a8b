"""The command-line contract: locked configs, task dispatch, the saved resolved config."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import REPO
from prepnet_jax import tasks

CONFIG = os.path.join(REPO, "tests", "tiny_classifier_config.py")


def _main(*args):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, os.path.join(REPO, "main.py"), *args], env=env,
                        capture_output=True, text=True, timeout=300)


def test_mistyped_config_field_is_an_error(tmp_path):
  result = _main(f"--config={CONFIG}", f"--workdir={tmp_path}", "--config.num_epochz=3")
  assert result.returncode != 0
  assert "num_epochz" in result.stderr


def test_unknown_task_lists_known_tasks(tmp_path):
  result = _main(f"--config={CONFIG}", f"--workdir={tmp_path}", "--config.task=clasifier")
  assert result.returncode != 0
  assert "unknown config.task='clasifier'" in result.stderr
  assert "classifier" in result.stderr and "prepnet" in result.stderr
  with pytest.raises(ValueError, match="known tasks"):
    tasks.get_runner("nope")


def test_every_registered_task_module_exists():
  import importlib.util
  for task, module in tasks.TASKS.items():
    assert importlib.util.find_spec(module) is not None, f"task {task}: module {module} missing"
