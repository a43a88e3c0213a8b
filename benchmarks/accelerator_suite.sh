#!/usr/bin/env bash
# Unattended accelerator benchmark suite (one NVIDIA H100 / TPU chip, at most 8 minutes):
# prints the environment, then runs benchmarks/bench_accelerator.py (its docstring lists what is
# measured and how long each part takes). Everything lands in OUT_DIR: environment.txt,
# bench_accelerator.log, results.json and results.md.
#
#   bash benchmarks/accelerator_suite.sh [OUT_DIR] [bench_accelerator.py options, e.g. --smoke]
#
# OUT_DIR defaults to $OUT, then ./bench_out.
set -euo pipefail

if [[ $# -gt 0 && $1 != --* ]]; then
  out_dir=$1
  shift
else
  out_dir=${OUT:-./bench_out}
fi
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)   # absolute: the script moves to the repository root next
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Let XLA's GPU allocator use 90 % of the device (default 75 %), so the batch sizes that fit are
# the device's, not the allocator's; kept if the caller set it.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.90}
python_bin=${PYTHON:-python}

{
  echo "== date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  host: $(hostname)"
  echo "== commit: $(git rev-parse HEAD 2>/dev/null || echo 'not a git checkout')"
  echo "== XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION XLA_FLAGS=${XLA_FLAGS:-}"
  echo "== nvidia-smi"
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi; else echo "nvidia-smi not found (no NVIDIA driver on this machine)"; fi
  echo "== jax.print_environment_info()"
  "$python_bin" -c 'import jax; jax.print_environment_info(); print("devices:", jax.devices())'
} 2>&1 | tee "$out_dir/environment.txt"

"$python_bin" benchmarks/bench_accelerator.py --out "$out_dir" "$@" 2>&1 | tee "$out_dir/bench_accelerator.log"
echo "== results: $out_dir/results.json, $out_dir/results.md"
