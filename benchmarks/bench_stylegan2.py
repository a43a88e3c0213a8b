"""StyleGAN2 + DiffAugment training throughput: img/s, kimg/hour and s/kimg per resolution.

  python benchmarks/bench_stylegan2.py                      # 64, 128, 256
  python benchmarks/bench_stylegan2.py --res 64,128 --batch 8 --steps 5
  python benchmarks/bench_stylegan2.py --preset paper256    # paper widths (a GPU job)
  python benchmarks/bench_stylegan2.py --preset paper256 --res 256 --batch 64 --half_precision

One training step = G-main + D-main + EMA every minibatch, plus the lazy G-reg (path length,
every 4 steps) and D-reg (R1, every 16 steps) phases, so the reported step time is
main + G-reg/4 + D-reg/16, each phase compiled ahead of time and timed separately (median of
`--steps` calls after a warm-up, `benchmarks/measure.py`); FLOPs per step are amortised the same
way. img/s counts real images shown to D (the kimg convention). The same script runs on CPU, GPU
and TPU; the network widths come from `--preset` (default: 'small' on CPU, 'paper256' on an
accelerator) with the resolution and batch from the flags.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import measure  # noqa: E402
from prepnet_jax.data import diffaugment  # noqa: E402
from prepnet_jax.models import stylegan2_hparams as hparams_lib  # noqa: E402
from prepnet_jax.runtime import precision, sharding  # noqa: E402
from prepnet_jax.tasks.stylegan2 import steps as steps_lib  # noqa: E402


def stylegan2_config(preset: str, resolution: int, batch_size: int, channels: int, policy: str,
                     half_precision: bool = False, **model_overrides):
  """configs/stylegan2.py's config at this preset, size, batch, policy and precision."""
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "stylegan2.py")
  spec = importlib.util.spec_from_file_location("stylegan2_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.preset, config.preprocess.image_size, config.preprocess.channels = preset, resolution, channels
  config.batch_size = batch_size
  config.diffaugment.policy = policy
  config.half_precision = half_precision
  config.model.update(model_overrides)
  return config


def bench_resolution(preset: str, resolution: int, batch_size: int, channels: int, policy: str,
                     steps: int, half_precision: bool = False, compiler_options: dict | None = None,
                     **model_overrides) -> dict:
  mesh = sharding.make_mesh()
  config = stylegan2_config(preset, resolution, batch_size, channels, policy, half_precision, **model_overrides)
  hp = hparams_lib.resolve_hparams(config)
  setup = steps_lib.make_setup(hp, diffaugment.DiffAugment(policy), mesh, precision.compute_dtype(config))
  state = sharding.replicate(steps_lib.create_state(setup, 0), mesh)
  images = np.random.default_rng(0).uniform(-1, 1, (batch_size, resolution, resolution, channels))
  batch = sharding.shard_batch({"image": images.astype(np.float32),
                                "label": np.zeros(batch_size, np.int32)}, mesh)
  holder = {"state": state}
  phases = {name: measure.compile_step(fn, setup, state, batch, phase, compiler_options=compiler_options)
            for name, fn, phase in (("g_main", steps_lib.g_step_jit, "main"), ("g_reg", steps_lib.g_step_jit, "reg"),
                                    ("d_main", steps_lib.d_step_jit, "main"), ("d_reg", steps_lib.d_step_jit, "reg"))}
  phases["ema"] = measure.compile_step(steps_lib.ema_step_jit, setup, state, compiler_options=compiler_options)

  def call(name):
    def run():
      if name == "ema":
        holder["state"] = phases["ema"]["compiled"](holder["state"])
      else:
        holder["state"], _ = phases[name]["compiled"](holder["state"], batch)
      return holder["state"].step
    return run

  main = measure.median_seconds(lambda: (call("g_main")(), call("d_main")(), call("ema")())[-1], steps)
  greg, dreg = measure.median_seconds(call("g_reg"), steps), measure.median_seconds(call("d_reg"), steps)
  step_s = main + greg / hp.g_reg_interval + dreg / hp.d_reg_interval
  flops = [phases[name]["flops"] for name in ("g_main", "d_main", "ema", "g_reg", "d_reg")]
  step_flops = None if None in flops[:2] + flops[3:] else (
      flops[0] + flops[1] + (flops[2] or 0.0) + flops[3] / hp.g_reg_interval + flops[4] / hp.d_reg_interval)
  utilisation, mfu_note = measure.mfu(step_flops, step_s, half_precision)
  mem, mem_kind = measure.peak_memory_bytes()
  count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))  # noqa: E731
  return dict(res=resolution, batch=batch_size, preset=preset, widths=f"{hp.channel_base}/{hp.channel_max}",
              precision="bfloat16" if half_precision else "float32",
              g_params=count(holder["state"].g.params), d_params=count(holder["state"].d.params),
              compile_s=sum(p["compile_s"] for p in phases.values()),
              main_ms=main * 1e3, greg_ms=greg * 1e3, dreg_ms=dreg * 1e3, step_ms=step_s * 1e3,
              img_s=batch_size / step_s, kimg_h=batch_size / step_s * 3.6, s_per_kimg=1000 * step_s / batch_size,
              flops_per_step=step_flops, mfu=utilisation, mfu_note=mfu_note,
              program_bytes=max((p["program_bytes"] or 0) for p in phases.values()) or None,
              mem_mb=mem / 2**20, mem_kind=mem_kind)


def format_table(rows: list[dict]) -> str:
  header = ("| res | batch | precision | base/max | G params | D params | compile s | main ms | G-reg ms | D-reg ms "
            "| step ms | img/s | s/kimg | MFU |")
  lines = [header, "|" + "---|" * 14]
  for r in rows:
    mfu = "–" if r["mfu"] is None else f"{100 * r['mfu']:.1f} %"
    lines.append(f"| {r['res']} | {r['batch']} | {r['precision']} | {r['widths']} | {r['g_params'] / 1e6:.2f}M | "
                 f"{r['d_params'] / 1e6:.2f}M | {r['compile_s']:.1f} | {r['main_ms']:.1f} | {r['greg_ms']:.1f} | "
                 f"{r['dreg_ms']:.1f} | {r['step_ms']:.1f} | {r['img_s']:.2f} | {r['s_per_kimg']:.2f} | {mfu} |")
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
  parser.add_argument("--half_precision", action="store_true", help="bfloat16 compute, float32 parameters")
  args = parser.parse_args(argv)
  backend = jax.default_backend()
  preset = args.preset or ("small" if backend == "cpu" else "paper256")
  print(f"StyleGAN2 + DiffAugment ({args.policy}) training step, preset {preset!r} widths, "
        f"{args.channels} channel(s), {jax.device_count()} {backend} device(s): {jax.devices()[0].device_kind}",
        flush=True)
  rows = []
  for res in (int(r) for r in args.res.split(",")):
    rows.append(bench_resolution(preset, res, args.batch, args.channels, args.policy, args.steps, args.half_precision))
    print(f"  {res}²: {rows[-1]['step_ms']:.1f} ms/step, {rows[-1]['img_s']:.2f} img/s", flush=True)
  print(format_table(rows), flush=True)
  return rows


if __name__ == "__main__":
  main()
