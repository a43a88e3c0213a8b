"""benchmarks/bench_pipeline.py --quick end to end: a loader row per data set and worker setting,
the train step's row and a bottleneck line per size, every rate positive."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def table_rows(output: str) -> list[list[str]]:
  """The cells of every markdown table row below the header (the separator row left out)."""
  lines = [line for line in output.splitlines() if line.startswith("| ")]
  return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines[1:]]


def test_quick_run_prints_every_loader_row_the_train_step_and_the_bottleneck():
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  # ~40 s on 2 idle cores (4 of the rows start 2 worker processes); the limit leaves room for a
  # machine shared with other test workers.
  proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "bench_pipeline.py"), "--quick"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  out = proc.stdout
  assert "load average (" in out
  rows = table_rows(out)
  loader_rows = [r for r in rows if "train step" not in r[1]]
  loader = {(r[1].split(" (")[0], int(r[2]), int(r[3])): float(r[6]) for r in loader_rows}
  assert set(loader) == {(data, threads, processes) for data in ("phantom sars PNG ~128²", "JPEG 512² L")
                         for threads in (1, 2) for processes in (0, 2)}, out
  assert all(img_s > 0 for img_s in loader.values()), out
  assert all(int(r[0]) == 64 and int(r[4]) == 4 and float(r[7]) > 0 for r in loader_rows), out
  [train] = [r for r in rows if r[1] == "train step resnet18 (consumer)"]
  assert float(train[6]) > 0, out
  assert "- 64², batch 8: phantom sars PNG" in out
  assert out.count("**train step**") + out.count("**input pipeline**") == 2, out  # one per data set
