"""Accelerator benchmark suite: one unattended run of at most 8 minutes on one H100 (or TPU chip).

  bash benchmarks/accelerator_suite.sh OUT_DIR          # environment + this script, logs in OUT_DIR
  python benchmarks/bench_accelerator.py --out OUT_DIR  # this script alone
  python benchmarks/bench_accelerator.py --out /tmp/smoke --smoke   # CPU plumbing check, ~1 min

Writes OUT_DIR/results.json (environment, one row per configuration, notes) and results.md:
- classifier train step at 224² (`bench_classifiers.bench`: the classifier task's step, AdamW,
  one logit): ResNet50 and VGG16, float32 and half precision (bfloat16 compute, float32
  parameters), global batch 64, 128, 256; a batch that runs out of device memory is recorded as
  'oom' and the larger ones of that group are skipped with a note;
- PrepNet's U-Net auto-encoder (configs/prepnet_thesis.py: full-width VGG16 U-Net, depth 5) at
  224², its L1 reconstruction step (tasks/prepnet ae_rec_step), batch 32, both precisions;
- StyleGAN2 + DiffAugment at 256², preset paper256 (batch 64, 3 channels as stylegan2-ada's
  reference runs), timed as `bench_stylegan2.bench_resolution` does: G-main + D-main + EMA each
  step plus G-reg / 4 and D-reg / 16, reported as s/kimg; bfloat16, then float32 if time is left.
Every row has the median step time after a warm-up (compilation timed apart, ahead of time), img/s,
the compiled step's FLOPs (`cost_analysis`), MFU against `measure.PEAK_TFLOPS` (omitted, with a
note, on unknown devices), the device's `peak_bytes_in_use` and the compiled program's bytes.

Time: each group (one network in one precision) runs in its own process, so a group's
`peak_bytes_in_use` is its own and an out-of-memory failure cannot poison the next one; a group
is killed at its time cap (its finished rows are kept) and none starts after `--budget_s` (450 s
by default; with start-up and the environment listing the suite ends within 8 minutes). Estimated
for one H100 (not yet measured there; compilation dominates): ResNet50 ~60 s per precision (3
compiles of ~15 s, 10 timed steps each), VGG16 ~35 s per precision, the U-Net ~25 s per
precision, StyleGAN2 ~100 s per precision (5 compiled phases, 5 timed calls each): about 6.5
minutes. The caps (80/50/40/140 s per group) bound each part; the float32 StyleGAN2 group runs
last and is the first to be dropped if compilation is slower than estimated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import bench_classifiers, bench_stylegan2, measure  # noqa: E402
from prepnet_jax.models import prepnet_networks  # noqa: E402
from prepnet_jax.runtime import sharding  # noqa: E402
from prepnet_jax.tasks.prepnet import steps as prepnet_steps  # noqa: E402

# stylegan2-ada-pytorch's README, "expected training time" of its default configuration at 256²
# on one Tesla V100 (the figure this project was given for comparison; ADA instead of DiffAugment).
STYLEGAN2_ADA_V100_S_PER_KIMG = (21.6, 24.2)
# The smoke run's compiles: XLA:CPU at optimisation level 0 compiles about twice as fast.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


@dataclasses.dataclass(frozen=True)
class Group:
  """One network in one precision over increasing batch sizes, run in one process."""
  part: str                 # classifier | autoencoder | stylegan2
  name: str
  half_precision: bool
  size: int
  batches: tuple[int, ...]
  steps: int
  cap_s: float              # time cap of the group's process
  width: float = 1.0

  @property
  def precision(self) -> str:
    return "bfloat16" if self.half_precision else "float32"


def plan(smoke: bool) -> list[Group]:
  """The groups in priority order (the last ones are dropped first when time runs out)."""
  if smoke:
    # The same code paths with networks small enough to compile in seconds on CPU.
    return [Group("classifier", "small_cnn", h, 16, (2,), 2, 120, 1 / 8) for h in (False, True)] + [
        Group("autoencoder", "unet_vgg16", True, 16, (2,), 2, 120, 1 / 16)] + [
        Group("stylegan2", "small", True, 8, (4,), 2, 120)]
  return [Group("classifier", m, h, 224, (64, 128, 256), 10, cap) for m, cap in (("resnet50", 80), ("vgg16", 50))
          for h in (False, True)] + [
      Group("autoencoder", "unet_vgg16", h, 224, (32,), 10, 40) for h in (False, True)] + [
      Group("stylegan2", "paper256", h, 256, (64,), 5, 140) for h in (True, False)]


def _autoencoder(group: Group, batch: int, smoke: bool, compiler_options) -> dict:
  """PrepNet's U-Net AE (configs/prepnet_thesis.py) on its L1 reconstruction step."""
  from configs import prepnet_thesis
  config = prepnet_thesis.get_config()
  config.half_precision = group.half_precision
  config.preprocess.image_size = group.size
  if smoke:
    config.ae.depth, config.ae.width_multiplier = 2, group.width
  mesh = sharding.make_mesh()
  make_state = jax.jit(lambda key: prepnet_networks.make_ae_state(config, key, 1, load_pretrained=False))
  state = sharding.replicate(make_state(jax.random.key(0)), mesh)
  images = np.random.default_rng(0).normal(size=(batch, group.size, group.size, 3)).astype(np.float32)
  data = sharding.shard_batch({"image": images}, mesh)
  step = measure.compile_step(prepnet_steps.ae_rec_step, state, data, compiler_options=compiler_options)
  holder = {"state": state}

  def run():
    holder["state"], out = step["compiled"](holder["state"], data)
    return out

  dt = measure.median_seconds(run, group.steps)
  utilisation, note = measure.mfu(step["flops"], dt, group.half_precision)
  return dict(ms_step=dt * 1e3, img_s=batch / dt, compile_s=step["compile_s"], flops_per_step=step["flops"],
              mfu=utilisation, mfu_note=note, program_bytes=step["program_bytes"])


def measure_one(group: Group, batch: int, smoke: bool) -> dict:
  options = FAST_COMPILE if smoke and jax.default_backend() == "cpu" else None
  if group.part == "classifier":
    r = bench_classifiers.bench(group.name, group.size, batch, group.steps, group.width, sharding.make_mesh(),
                                group.half_precision, options)
  elif group.part == "autoencoder":
    r = _autoencoder(group, batch, smoke, options)
  else:
    tiny = dict(z_dim=8, w_dim=8, mapping_layers=1, channel_base=64, channel_max=8) if smoke else {}
    policy = "" if smoke else "color,translation,cutout"  # the smoke run: fewer ops to compile
    r = bench_stylegan2.bench_resolution(group.name, group.size, batch, 1 if smoke else 3, policy,
                                         group.steps, group.half_precision, options, **tiny)
  mem, kind = measure.peak_memory_bytes()
  keys = ("img_s", "compile_s", "flops_per_step", "mfu", "mfu_note", "program_bytes", "s_per_kimg")
  return {"status": "ok", "ms_step": r.get("ms_step", r.get("step_ms")), **{k: r[k] for k in keys if k in r},
          "peak_memory_bytes": mem, "peak_memory_kind": kind}


def run_batches(batches, measure_batch) -> list[dict]:
  """`measure_batch(b)` for increasing batches; after an out-of-memory failure the larger
  batches are skipped (they would fail too), other failures are recorded and the next one runs."""
  rows = []
  for i, batch in enumerate(batches):
    try:
      rows.append({"batch": batch, **measure_batch(batch)})
    except Exception as error:  # noqa: BLE001 - recorded in the results, the suite goes on
      if not measure.is_out_of_memory(error):
        rows.append({"batch": batch, "status": "error", "note": f"{type(error).__name__}: {str(error)[:300]}"})
        continue
      rows.append({"batch": batch, "status": "oom", "note": "out of device memory"})
      rows += [{"batch": b, "status": "skipped", "note": f"batch {batch} ran out of memory"} for b in batches[i + 1:]]
      break
  return rows


def run_group(group: Group, smoke: bool, rows_file: str) -> None:
  """Measures every batch of `group`, appending each finished row to `rows_file` (JSON lines)."""
  def measure_batch(batch):
    row = measure_one(group, batch, smoke)
    print(f"[bench] {group.part} {group.name} {group.precision} {group.size}² batch {batch}: "
          f"{row['img_s']:.1f} img/s, {row['ms_step']:.1f} ms/step", flush=True)
    return row
  for row in run_batches(group.batches, measure_batch):
    with open(rows_file, "a") as f:
      f.write(json.dumps({**_labels(group), **row}) + "\n")


def _labels(group: Group) -> dict:
  return {"part": group.part, "name": group.name, "size": group.size, "precision": group.precision}


def _read_rows(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_suite(out: str, smoke: bool, budget_s: float, in_process: bool) -> dict:
  start = time.time()
  os.makedirs(out, exist_ok=True)
  rows_file = os.path.join(out, "rows.jsonl")
  if os.path.exists(rows_file):
    os.remove(rows_file)
  groups = plan(smoke)
  for index, group in enumerate(groups):
    remaining = budget_s - (time.time() - start)
    done_before = len(_read_rows(rows_file))
    if remaining < 10:
      _append(rows_file, group, group.batches, "skipped", f"suite budget of {budget_s:.0f} s spent")
      continue
    if in_process:
      run_group(group, smoke, rows_file)
      continue
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(index), "--rows", rows_file]
    cmd += ["--smoke"] if smoke else []
    cap = min(group.cap_s, remaining)
    try:
      subprocess.run(cmd, timeout=cap, check=False)
    except subprocess.TimeoutExpired:
      finished = {r["batch"] for r in _read_rows(rows_file)[done_before:]}
      _append(rows_file, group, [b for b in group.batches if b not in finished], "timeout",
              f"group stopped at its {cap:.0f} s cap")
    finished = {r["batch"] for r in _read_rows(rows_file)[done_before:]}
    missing = [b for b in group.batches if b not in finished]
    if missing:  # the worker died (e.g. a crash in the runtime) before writing these rows
      _append(rows_file, group, missing, "error", "worker process ended without a result (see the log)")
  return {"environment": environment(), "smoke": smoke, "budget_s": budget_s, "wall_s": time.time() - start,
          "rows": _read_rows(rows_file),
          "reference": {"stylegan2_ada_pytorch_v100_s_per_kimg": list(STYLEGAN2_ADA_V100_S_PER_KIMG),
                        "note": "stylegan2-ada-pytorch README, default config at 256², one Tesla V100, ADA"}}


def _append(rows_file: str, group: Group, batches, status: str, note: str) -> None:
  with open(rows_file, "a") as f:
    for batch in batches:
      f.write(json.dumps({**_labels(group), "batch": batch, "status": status, "note": note}) + "\n")


def environment() -> dict:
  device = jax.devices()[0]
  return {"jax": jax.__version__, "python": platform.python_version(), "backend": jax.default_backend(),
          "device_kind": device.device_kind, "device_count": jax.device_count(),
          **{f"peak_tflops_{name}": dict(zip(("tflops", "note"), measure.peak_tflops(device.device_kind, half)))
             for name, half in (("bf16", True), ("f32", False))}}


def markdown(results: dict) -> str:
  env = results["environment"]
  lines = [f"# Accelerator benchmarks: {env['device_count']} × {env['device_kind']} ({env['backend']}), "
           f"jax {env['jax']}{' — SMOKE (CPU plumbing check, not a measurement)' if results['smoke'] else ''}", "",
           "| part | network | size | batch | precision | img/s | ms/step | s/kimg | compile s | GFLOP/step | MFU "
           "| peak memory (GiB) | status |", "|" + "---|" * 13]
  fmt = lambda v, spec: "–" if v is None else format(v, spec)  # noqa: E731
  for r in results["rows"]:
    gflop = None if r.get("flops_per_step") is None else r["flops_per_step"] / 1e9
    mfu = None if r.get("mfu") is None else 100 * r["mfu"]
    mem = None if r.get("peak_memory_bytes") is None else r["peak_memory_bytes"] / 2**30
    status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('note', '')}"
    lines.append(f"| {r['part']} | {r['name']} | {r['size']} | {r['batch']} | {r['precision']} | "
                 f"{fmt(r.get('img_s'), '.1f')} | {fmt(r.get('ms_step'), '.1f')} | {fmt(r.get('s_per_kimg'), '.2f')} | "
                 f"{fmt(r.get('compile_s'), '.1f')} | {fmt(gflop, '.4g')} | {fmt(mfu, '.1f')}{' %' if mfu else ''} | "
                 f"{fmt(mem, '.2f')} | {status} |")
  lo, hi = results["reference"]["stylegan2_ada_pytorch_v100_s_per_kimg"]
  ours = [f"{r['s_per_kimg']:.2f} s/kimg ({r['precision']}, preset {r['name']}, {r['size']}², batch {r['batch']})"
          for r in results["rows"] if r["part"] == "stylegan2" and r["status"] == "ok"]
  notes = sorted({r["mfu_note"] for r in results["rows"] if r.get("mfu") is None and r.get("mfu_note")})
  lines += ["", f"StyleGAN2 at 256²: stylegan2-ada-pytorch reports {lo}–{hi} s/kimg on one V100 (its default "
            f"config, ADA); here, with DiffAugment: {'; '.join(ours) or 'not measured'}."]
  lines += [f"MFU: {n}" for n in notes]
  lines += ["", f"Wall time {results['wall_s']:.0f} s of a {results['budget_s']:.0f} s budget."]
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict | None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default=os.environ.get("OUT", "bench_out"), help="output directory")
  p.add_argument("--smoke", action="store_true", help="tiny sizes on any backend: checks the plumbing")
  p.add_argument("--budget_s", type=float, default=450.0, help="no group starts after this many seconds")
  p.add_argument("--in_process", action=argparse.BooleanOptionalAction, default=None,
                 help="run every group in this process (default: only with --smoke; else one process per group)")
  p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
  p.add_argument("--rows", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker is not None:
    run_group(plan(args.smoke)[args.worker], args.smoke, args.rows)
    return None
  os.makedirs(args.out, exist_ok=True)
  in_process = args.smoke if args.in_process is None else args.in_process
  results = run_suite(args.out, args.smoke, args.budget_s, in_process)
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  text = markdown(results)
  with open(os.path.join(args.out, "results.md"), "w") as f:
    f.write(text)
  print(text, flush=True)
  return results


if __name__ == "__main__":
  main()
