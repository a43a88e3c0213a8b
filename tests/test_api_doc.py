"""docs/api.md's code blocks run as written, each in a fresh interpreter, and import nothing that
changes a global setting."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from helpers import REPO, tiny_classifier_config
from prepnet_jax.runtime import rundir
from prepnet_jax.tasks.classifier import train as classifier

with open(os.path.join(REPO, "docs", "api.md")) as f:
  BLOCKS = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)


def _run(code: str, cwd) -> str:
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


def test_the_doc_has_the_four_uses():
  assert len(BLOCKS) == 4


@pytest.mark.parametrize("index", [0, 1, 3])
def test_block_runs(index, tmp_path):
  out = _run(BLOCKS[index], tmp_path)
  assert out.strip()


def test_predict_block_runs_on_a_trained_workdir(tmp_path):
  config, workdir = tiny_classifier_config(num_epochs=1), str(tmp_path / "runs" / "classifier")
  rundir.write_config(config, workdir)  # what main.py writes before the job
  classifier.train_and_evaluate(config, workdir)
  out = _run(BLOCKS[2], tmp_path)
  probabilities = [float(v) for v in re.findall(r"\(([0-9.]+)\)", out)]
  assert "'COVID'" in out and len(probabilities) == 2 and abs(sum(probabilities) - 1) < 2e-3, out
