"""Train-step throughput of every classifier: img/s, ms/step and peak memory.

  python benchmarks/bench_classifiers.py                       # all models, 64/128/224, batch 16
  python benchmarks/bench_classifiers.py --models resnet18,vgg16 --sizes 224 --batch 32 --steps 20

Measures the jitted, data-parallel train step of prepnet_jax.tasks.classifier.train (the one every
job uses) on random data after a warm-up (compile) step. Peak memory: the accelerator's
`peak_bytes_in_use` where the backend reports it, else the process's peak RSS (CPU).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from prepnet_jax import models  # noqa: E402
from prepnet_jax.tasks.classifier import train as classifier  # noqa: E402
from prepnet_jax.runtime import sharding  # noqa: E402
from prepnet_jax.runtime.state import create_train_state  # noqa: E402

DEFAULT_MODELS = ("small_cnn", "vgg11", "vgg16", "vgg19", "resnet18", "resnet34", "resnet50", "covidnet")


def peak_memory_mb() -> tuple[float, str]:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2**20, "device peak"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "host RSS"


def bench(name: str, size: int, batch: int, steps: int, width: float, mesh) -> dict:
  model = models.get_classifier(name, 1, width_multiplier=width)
  state = create_train_state(model, optax.adamw(1e-4), jax.random.key(0), jnp.zeros((1, size, size, 3)))
  state = sharding.replicate(state, mesh)
  rng = np.random.default_rng(0)
  batch_np = {"image": rng.normal(size=(batch, size, size, 3)).astype(np.float32),
              "label": rng.integers(0, 2, batch).astype(np.int32)}
  data = sharding.shard_batch(batch_np, mesh)
  t0 = time.perf_counter()
  state, out = classifier.train_step(state, data, None)
  jax.block_until_ready(out)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, out = classifier.train_step(state, data, None)
  jax.block_until_ready(out)
  dt = (time.perf_counter() - t0) / steps
  mem, kind = peak_memory_mb()
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  return dict(model=name, size=size, batch=batch, ms_step=dt * 1e3, img_s=batch / dt, compile_s=compile_s,
              params_m=n_params / 1e6, mem_mb=mem, mem_kind=kind)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=",".join(DEFAULT_MODELS))
  p.add_argument("--sizes", default="64,128,224")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--width", type=float, default=1.0, help="width multiplier of every model")
  args = p.parse_args()
  mesh = sharding.make_mesh()
  print(f"devices: {jax.devices()}  batch={args.batch} width={args.width}")
  print("| model | size | params (M) | ms/step | img/s | compile (s) | peak memory (MB) |")
  print("|---|---|---|---|---|---|---|")
  for name in args.models.split(","):
    for size in (int(s) for s in args.sizes.split(",")):
      r = bench(name, size, args.batch, args.steps, args.width, mesh)
      print(f"| {r['model']} | {r['size']} | {r['params_m']:.1f} | {r['ms_step']:.1f} | {r['img_s']:.1f} | "
            f"{r['compile_s']:.1f} | {r['mem_mb']:.0f} ({r['mem_kind']}) |", flush=True)


if __name__ == "__main__":
  main()
