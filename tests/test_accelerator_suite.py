"""The accelerator benchmark suite end to end in its CPU smoke mode, its peak-FLOP table and its
out-of-memory handling (the real run needs a GPU/TPU: benchmarks/accelerator_suite.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from benchmarks import bench_accelerator, measure

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_smoke_run_writes_the_environment_and_every_part(tmp_path):
  out = tmp_path / "bench"
  env = {**os.environ, "PYTHON": sys.executable, "JAX_PLATFORMS": "cpu"}
  env.pop("OUT", None)
  proc = subprocess.run(["bash", os.path.join(REPO, "benchmarks", "accelerator_suite.sh"), str(out), "--smoke"],
                        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  environment = (out / "environment.txt").read_text()
  assert "nvidia-smi" in environment and "jax:" in environment  # jax.print_environment_info()
  results = json.loads((out / "results.json").read_text())
  assert results["smoke"] and results["environment"]["backend"] == "cpu"
  assert results["reference"]["stylegan2_ada_pytorch_v100_s_per_kimg"] == [21.6, 24.2]
  rows = results["rows"]
  assert {(r["part"], r["precision"]) for r in rows} >= {
      ("classifier", "float32"), ("classifier", "bfloat16"), ("autoencoder", "bfloat16"), ("stylegan2", "bfloat16")}
  for r in rows:
    assert r["status"] == "ok", r
    assert r["img_s"] > 0 and r["ms_step"] > 0 and r["compile_s"] > 0 and r["peak_memory_bytes"] > 0
    assert r["flops_per_step"] > 0 and r["program_bytes"] > 0
    assert r["mfu"] is None and "not in the peak table" in r["mfu_note"]  # CPU: no peak, a note
  [sg2] = [r for r in rows if r["part"] == "stylegan2"]
  assert sg2["s_per_kimg"] == pytest.approx(1000 * sg2["ms_step"] / 1e3 / sg2["batch"])
  table = (out / "results.md").read_text()
  assert "SMOKE" in table and "21.6–24.2 s/kimg" in table and table.count("| ok |") == len(rows)


def test_peak_table_knows_the_accelerators_and_says_when_it_does_not():
  assert measure.peak_tflops("NVIDIA H100 80GB HBM3", True)[0] == 989.4
  assert measure.peak_tflops("NVIDIA H100 80GB HBM3", False)[0] == 494.7
  assert measure.peak_tflops("NVIDIA H100 PCIe", True)[0] == 756.0
  assert measure.peak_tflops("NVIDIA H200", True)[0] == 989.4
  assert measure.peak_tflops("NVIDIA A100-SXM4-80GB", False)[0] == 156.0
  assert measure.peak_tflops("TPU v5 lite", True)[0] == 197.0
  assert measure.peak_tflops("TPU v4", False)[0] == 275.0
  value, note = measure.peak_tflops("Tesla V100-SXM2-16GB", True)
  assert value is None and "no bf16 peak" in note
  value, note = measure.peak_tflops("Some New Chip", True)
  assert value is None and "not in the peak table" in note


def test_out_of_memory_skips_the_larger_batches_and_other_errors_do_not():
  def fake(batch):
    if batch == 128:
      raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9.1GiB")
    return {"status": "ok", "img_s": float(batch)}
  rows = bench_accelerator.run_batches((64, 128, 256), fake)
  assert [(r["batch"], r["status"]) for r in rows] == [(64, "ok"), (128, "oom"), (256, "skipped")]
  assert "ran out of memory" in rows[2]["note"]

  def broken(batch):
    if batch == 64:
      raise ValueError("bad shape")
    return {"status": "ok"}
  rows = bench_accelerator.run_batches((64, 128), broken)
  assert [r["status"] for r in rows] == ["error", "ok"] and "bad shape" in rows[0]["note"]
