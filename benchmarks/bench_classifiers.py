"""Train-step throughput of every classifier: img/s, ms/step, FLOPs, MFU and peak memory.

  python benchmarks/bench_classifiers.py                       # all models, 64/128/224, batch 16
  python benchmarks/bench_classifiers.py --models resnet18,vgg16 --sizes 224 --batch 32 --steps 20
  python benchmarks/bench_classifiers.py --models resnet50 --sizes 224 --batch 128 --half_precision

Measures the jitted, data-parallel train step of prepnet_jax.tasks.classifier.train (the one every
job uses) on random data: compiled ahead of time (its FLOPs and memory come from the compiled
program), then the median of `--steps` timed calls after a warm-up (`benchmarks/measure.py`).
`--half_precision` computes in bfloat16 with float32 parameters (`config.half_precision`).
Peak memory: the accelerator's `peak_bytes_in_use` where the backend reports it, else the
process's peak RSS (CPU).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks import measure  # noqa: E402
from prepnet_jax import models  # noqa: E402
from prepnet_jax.runtime import precision, sharding  # noqa: E402
from prepnet_jax.runtime.state import create_train_state  # noqa: E402
from prepnet_jax.tasks.classifier import train as classifier  # noqa: E402

DEFAULT_MODELS = ("small_cnn", "vgg11", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "covidnet")


def bench(name: str, size: int, batch: int, steps: int, width: float, mesh, half_precision: bool = False,
          compiler_options: dict | None = None) -> dict:
  """One classifier's train step (one logit, BCE) at `size`² and global batch `batch`."""
  model = models.get_classifier(name, 1, width_multiplier=width,
                                dtype=precision.half_precision_dtype(half_precision))
  tx = optax.adamw(1e-4)
  # One jitted program for init + optimizer state (eagerly, the optimizer's init compiles per leaf).
  state = jax.jit(lambda key: create_train_state(model, tx, key, jnp.zeros((1, size, size, 3))))(jax.random.key(0))
  state = sharding.replicate(state, mesh)
  rng = np.random.default_rng(0)
  batch_np = {"image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
              "label": rng.integers(0, 2, batch).astype(np.int32)}
  data = sharding.shard_batch(batch_np, mesh)
  step = measure.compile_step(classifier.train_step, state, data, None, compiler_options=compiler_options)
  holder = {"state": state}

  def run():
    holder["state"], out = step["compiled"](holder["state"], data, None)
    return out

  dt = measure.median_seconds(run, steps)
  mem, kind = measure.peak_memory_bytes()
  utilisation, mfu_note = measure.mfu(step["flops"], dt, half_precision)
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(holder["state"].params))
  return dict(model=name, size=size, batch=batch, precision="bfloat16" if half_precision else "float32",
              ms_step=dt * 1e3, img_s=batch / dt, compile_s=step["compile_s"], params_m=n_params / 1e6,
              flops_per_step=step["flops"], mfu=utilisation, mfu_note=mfu_note,
              program_bytes=step["program_bytes"], mem_mb=mem / 2**20, mem_kind=kind)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(DEFAULT_MODELS))
  p.add_argument("--sizes", default="64,128,224")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--width", type=float, default=1.0, help="width multiplier of every model")
  p.add_argument("--half_precision", action="store_true", help="bfloat16 compute, float32 parameters")
  args = p.parse_args()
  mesh = sharding.make_mesh()
  print(f"devices: {jax.devices()}  batch={args.batch} width={args.width} half_precision={args.half_precision}")
  print("| model | size | params (M) | ms/step | img/s | compile (s) | MFU | peak memory (MB) |")
  print("|---|---|---|---|---|---|---|---|")
  for name in args.models.split(","):
    for size in (int(s) for s in args.sizes.split(",")):
      r = bench(name, size, args.batch, args.steps, args.width, mesh, args.half_precision)
      mfu = "–" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
      print(f"| {r['model']} | {r['size']} | {r['params_m']:.1f} | {r['ms_step']:.1f} | {r['img_s']:.1f} | "
            f"{r['compile_s']:.1f} | {mfu} | {r['mem_mb']:.0f} ({r['mem_kind']}) |", flush=True)


if __name__ == "__main__":
  main()
