"""The package metadata: pinned requirements, the console command, configs importable anywhere."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

from helpers import REPO


def _requirements(name: str) -> list[str]:
  with open(os.path.join(REPO, name)) as f:
    lines = [line.split("#", 1)[0].strip() for line in f]
  return [line for line in lines if line]


def test_every_requirement_is_pinned_and_runtime_test_bench_are_split():
  runtime, test = _requirements("requirements.txt"), _requirements("requirements-test.txt")
  for line in runtime + test:
    assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z0-9,]+\])?==[0-9][0-9A-Za-z.+]*", line), line
  names = lambda lines: {re.split(r"[=\[]", line)[0].lower() for line in lines}  # noqa: E731
  assert not names(runtime) & {"torch", "pytest", "pytest-xdist", "selenium", "keras"}
  assert {"torch", "pytest", "selenium"} <= names(test)
  assert _requirements("requirements-bench.txt") == ["-r requirements.txt", "-r requirements-test.txt"]


def test_pyproject_reads_the_requirement_files_and_names_the_console_command():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)
  assert project["project"]["requires-python"] == ">=3.11"
  assert project["project"]["scripts"] == {"prepnet-jax": "prepnet_jax.cli:run"}
  dynamic = project["tool"]["setuptools"]["dynamic"]
  assert dynamic["dependencies"]["file"] == ["requirements.txt"]
  assert dynamic["optional-dependencies"]["test"]["file"] == ["requirements-test.txt"]


def test_console_entry_point_runs_a_config_from_another_directory(tmp_path):
  """What `prepnet-jax` runs (prepnet_jax.cli:run), started outside the repository: the config
  file (which imports `configs.common`) loads and an unknown field fails as main.py does."""
  code = "import sys; from prepnet_jax.cli import run; sys.argv[0] = 'prepnet-jax'; run()"
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  out = subprocess.run([sys.executable, "-c", code, f"--config={REPO}/configs/classifier.py",
                        f"--workdir={tmp_path / 'w'}", "--config.num_epochz=1"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode != 0
  assert "num_epochz" in out.stderr + out.stdout
