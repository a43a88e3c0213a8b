"""benchmarks/bench_vs_torch.py: every default row pairs equal architectures (parameter counts,
buffers excluded), a one-step run writes its table and JSON, and a missing torch is one clear
line and exit status 2."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="benchmark-only dependency: requirements-bench.txt")
from benchmarks import bench_vs_torch, bench_vs_torch_pairs  # noqa: E402


@pytest.mark.parametrize("spec", bench_vs_torch.DEFAULT_ROWS)
def test_every_default_pair_has_equal_parameter_counts(spec):
  jax_count, torch_count = bench_vs_torch_pairs.param_counts(spec)
  assert jax_count == torch_count > 0


def test_a_one_step_run_writes_the_table_and_the_json(tmp_path, capsys):
  path = tmp_path / "bench.json"
  bench_vs_torch.main(["--quick", "--steps", "1", "--rows", "resnet18_w0.25@32x4", "--json", str(path)])
  out = capsys.readouterr().out
  assert "| network | input, batch | params | prepnet_jax ms/step |" in out
  assert "| resnet18_w0.25 | 32², 4 | 0.70 M |" in out
  report = json.loads(path.read_text())
  (row,) = report["rows"]
  assert row["jax_params"] == row["torch_params"]
  assert row["jax_ms"] > 0 and row["torch_ms"] > 0 and row["ratio"] > 0
  assert report["environment"]["torch"] == torch.__version__
  assert report["environment"]["torch_num_threads"] == report["environment"]["cpus_allowed"]


def test_without_torch_it_says_how_to_install_it(monkeypatch, capsys):
  monkeypatch.setattr(bench_vs_torch, "torch", None)
  with pytest.raises(SystemExit) as exit_info:
    bench_vs_torch.main(["--quick"])
  assert exit_info.value.code == 2
  assert "pip install -r requirements-bench.txt" in capsys.readouterr().out
