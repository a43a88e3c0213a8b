"""StyleGAN2 + DiffAugment training throughput: img/s and kimg/hour per resolution.

  python benchmarks/bench_stylegan2.py                      # 64, 128, 256
  python benchmarks/bench_stylegan2.py --res 64,128 --batch 8 --steps 5
  python benchmarks/bench_stylegan2.py --preset paper256    # paper widths (a GPU job)

One training step = G-main + D-main + EMA every minibatch, plus the lazy G-reg (path length,
every 4 steps) and D-reg (R1, every 16 steps) phases, so the reported step time is
main + G-reg/4 + D-reg/16, each phase timed separately after a warm-up that compiles it.
img/s counts real images shown to D (the kimg convention). The same script runs on CPU, GPU
and TPU; the network widths come from `--preset` (default: 'small' on CPU, 'paper256' on an
accelerator) with the resolution and batch from the flags.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from prepnet_jax.data import diffaugment  # noqa: E402
from prepnet_jax.runtime import sharding  # noqa: E402
from prepnet_jax.models import stylegan2_hparams as hparams_lib  # noqa: E402
from prepnet_jax.tasks.stylegan2 import steps as steps_lib  # noqa: E402


def _config(preset: str, resolution: int, batch_size: int, channels: int, policy: str):
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "stylegan2.py")
  spec = importlib.util.spec_from_file_location("stylegan2_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.preset, config.preprocess.image_size, config.preprocess.channels = preset, resolution, channels
  config.batch_size = batch_size
  config.diffaugment.policy = policy
  return config


def _timed(fn, repeats: int) -> float:
  """Mean seconds per call of fn() (which returns something to block on)."""
  start = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / repeats


def bench_resolution(preset: str, resolution: int, batch_size: int, channels: int, policy: str,
                     steps: int) -> dict:
  mesh = sharding.make_mesh()
  hp = hparams_lib.resolve_hparams(_config(preset, resolution, batch_size, channels, policy))
  setup = steps_lib.make_setup(hp, diffaugment.DiffAugment(policy), mesh)
  state = sharding.replicate(steps_lib.create_state(setup, 0), mesh)
  images = np.random.default_rng(0).uniform(-1, 1, (batch_size, resolution, resolution, channels))
  batch = sharding.shard_batch({"image": images.astype(np.float32),
                                "label": np.zeros(batch_size, np.int32)}, mesh)
  holder = {"state": state}

  def phase(step_fn, name):
    def run():
      holder["state"], _ = step_fn(setup, holder["state"], batch, name)
      return holder["state"].step
    return run

  def ema():
    holder["state"] = steps_lib.ema_step_jit(setup, holder["state"])
    return holder["state"].step

  g_main, g_reg = phase(steps_lib.g_step_jit, "main"), phase(steps_lib.g_step_jit, "reg")
  d_main, d_reg = phase(steps_lib.d_step_jit, "main"), phase(steps_lib.d_step_jit, "reg")
  t0 = time.perf_counter()
  for fn in (g_main, g_reg, d_main, d_reg, ema):  # compile every phase
    jax.block_until_ready(fn())
  compile_s = time.perf_counter() - t0
  main = _timed(lambda: (g_main(), d_main(), ema())[-1], steps)
  greg, dreg = _timed(g_reg, steps), _timed(d_reg, steps)
  step_s = main + greg / hp.g_reg_interval + dreg / hp.d_reg_interval
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))  # noqa: E731
  return dict(res=resolution, batch=batch_size, widths=f"{hp.channel_base}/{hp.channel_max}",
              g_params=count(state.g.params), d_params=count(state.d.params), compile_s=compile_s,
              main_ms=main * 1e3, greg_ms=greg * 1e3, dreg_ms=dreg * 1e3, step_ms=step_s * 1e3,
              img_s=batch_size / step_s, kimg_h=batch_size / step_s * 3.6)


def format_table(rows: list[dict]) -> str:
  header = ("| res | batch | base/max | G params | D params | compile s | main ms | G-reg ms | D-reg ms "
            "| step ms | img/s | kimg/h |")
  lines = [header, "|" + "---|" * 12]
  for r in rows:
    lines.append(f"| {r['res']} | {r['batch']} | {r['widths']} | {r['g_params'] / 1e6:.2f}M | "
                 f"{r['d_params'] / 1e6:.2f}M | {r['compile_s']:.1f} | {r['main_ms']:.1f} | {r['greg_ms']:.1f} | "
                 f"{r['dreg_ms']:.1f} | {r['step_ms']:.1f} | {r['img_s']:.2f} | {r['kimg_h']:.2f} |")
  return "\n".join(lines)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--res", default="64,128,256", help="comma-separated resolutions")
  parser.add_argument("--batch", type=int, default=4, help="global batch size")
  parser.add_argument("--steps", type=int, default=3, help="timed calls per phase after the warm-up")
  parser.add_argument("--preset", default=None, choices=hparams_lib.PRESETS,
                      help="network widths; default 'small' on CPU, 'paper256' on GPU/TPU")
  parser.add_argument("--channels", type=int, default=1, choices=(1, 3))
  parser.add_argument("--policy", default="color,translation,cutout", help="DiffAugment policy")
  args = parser.parse_args(argv)
  backend = jax.default_backend()
  preset = args.preset or ("small" if backend == "cpu" else "paper256")
  print(f"StyleGAN2 + DiffAugment ({args.policy}) training step, preset {preset!r} widths, "
        f"{args.channels} channel(s), {jax.device_count()} {backend} device(s): {jax.devices()[0].device_kind}",
        flush=True)
  rows = []
  for res in (int(r) for r in args.res.split(",")):
    rows.append(bench_resolution(preset, res, args.batch, args.channels, args.policy, args.steps))
    print(f"  {res}²: {rows[-1]['step_ms']:.1f} ms/step, {rows[-1]['img_s']:.2f} img/s", flush=True)
  print(format_table(rows), flush=True)
  return rows


if __name__ == "__main__":
  main()
