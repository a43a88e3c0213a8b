"""Train-step time of every network the project trains: prepnet_jax against PyTorch eager.

  pip install -r requirements-bench.txt     # torch (the CPU wheel: see that file)
  python benchmarks/bench_vs_torch.py --json runs/bench_vs_torch.json    # default rows, minutes
  python benchmarks/bench_vs_torch.py --quick                            # three small rows
  python benchmarks/bench_vs_torch.py --rows resnet18@224x16,unet_ae@48x32 --steps 9
  python benchmarks/bench_vs_torch.py --jax-only                         # without torch
  python benchmarks/bench_vs_torch.py --library-conv   # every conv through lax: before models/conv.py

A row is `<network>@<size>x<batch>`; networks: resnet18|34|50, vgg16|19[_bn][_gap] (`_gap`: the
project's global-average-pool head, dropout 0.2 as PrepNet; otherwise torchvision's head,
dropout 0.5), covidnet, unet_ae (configs/prepnet.py's AE), dcgan (configs/dcgan.py),
stylegan2_small (configs/stylegan2.py); `_w<m>` sets the width multiplier (`vgg19_bn_gap_w0.125`).

What is compared, per row, in one process (the rows: benchmarks/bench_vs_torch_pairs.py): the
project's jitted train step (the one the jobs run) against the same architecture written in
torch.nn (benchmarks/torch_reference*.py) and trained eagerly. Same batch (one random batch,
placed once: `sharding.shard_batch` on the JAX side, torch tensors on the other), same loss,
same optimizer settings:
- classifiers: `tasks.classifier.train.train_step` with `optax.adamw(1e-4)` (weight decay 1e-4)
  from `create_train_state`, as benchmarks/bench_classifiers.py; torch `AdamW(lr=1e-4,
  weight_decay=1e-4)`; one logit + BCE (the project's binary tasks), COVID-Net 3 classes + CE;
- unet_ae: PrepNet's `ae_rec_step` (L1 reconstruction) with the config's AdamW (1e-3, 1e-2);
- dcgan: the 'gan' task's jitted step (D on a real and a fresh fake batch, then G on fresh
  latents) with the config's Adam settings (G 1e-3, D 2e-4, β1 0.5, ε 1e-7);
- stylegan2_small: G-main + D-main + G_ema of `tasks.stylegan2.steps` with the preset's lazy-
  regularisation Adam settings; the lazy regularisers (path length, R1) are left out on both
  sides and so is DiffAugment (policy ''), so the row times the networks, not the augmentation.
Parameter counts (BatchNorm statistics and other buffers excluded) must be equal on both sides:
the row stops with an assertion otherwise. The table's params column is that count (G + D for
the GANs).

Fairness rules: torch uses `torch.set_num_threads(<CPUs this process may use>)` (XLA:CPU sizes
its pool the same way), `channels_last` for every convnet (`--torch-format contiguous` to
compare), fused AdamW/Adam (its fastest CPU optimizer), and `requires_grad` off for the frozen
network of a GAN phase, as JAX differentiates only the trained one. Warm-up is excluded: two JAX
calls (the first compiles) and two torch steps. Then `--steps` repeats alternate A/B and B/A
order, and each side reports the median; ratio = torch ms / JAX ms (> 1: prepnet_jax is
faster). Each row also logs the min and the 1-minute load average: the machines are shared, so
compare ratios from one invocation, and only rows whose load stayed near the CPU count.

What was tried and what it gave (2 shared CPU cores, jax 0.10.2, torch 2.13.0+cpu, the working
tree of 2026-12-06 with models/conv.py in use):
- default rows, near idle (load 1.4-2.5, this run's own threads included): every ratio < 1.
  ResNet18 224/16 0.42, 64/32 0.87; ResNet34 0.42; ResNet50 0.64; VGG16 0.45, VGG19 0.37;
  VGG16/19-BN gap 0.37/0.36; VGG19-BN gap x0.125 48/32 0.71, x0.5 64/32 0.45; COVID-Net x0.125
  0.81; U-Net AE 0.53; DCGAN 0.28; StyleGAN2 small 32/16 0.90.
- the same rows while other jobs held both cores (load 5-7): ratios 0.38 to 36, torch's steps
  spread up to 10x within a row. Its OpenMP threads stall when a core is taken (vgg19_bn_gap_w0.125
  @48x32: 2.1 s with 2 threads, 43 ms with 1); XLA's pool degrades gracefully. Such runs say
  nothing about the frameworks; OMP_WAIT_POLICY=PASSIVE is no cure (COVID-Net 25 -> 180 ms).
- DCGAN: JAX G forward+backward (batch 32) 112 ms against torch's 10 ms, D 14 ms against 7:
  the stride-2 transposed convolutions are an XLA:CPU slow case.
- --torch-format contiguous: ResNet18 64/32 164 ms (channels_last 201); U-Net AE, DCGAN,
  VGG19-BN x0.5 7-20 % slower. --torch-threads 1: 1.5-1.9x slower when idle. --jax-only times
  equal the interleaved ones (the two thread pools do not disturb each other).

On the prepnet_jax side (each decided by this benchmark or benchmarks/bench_conv.py, idle cores):
- kept: prepnet_jax/models/conv.py, the Conv every model uses, computes XLA:CPU's slow shapes as
  patches x matrix (2x2-or-smaller outputs, 1x1 kernels, RGB inputs, strided convs with 64+
  channels). ResNet18 64/32: ratio 0.11 -> 0.87 (the 2x2x512 conv: 262 -> 5 ms fwd+bwd);
  ResNet18 224/16: 0.39 -> 0.42 (1.73 -> 1.61 s; stem 320 -> 190 ms, 1x1 shortcuts 18 -> 5 ms);
  ResNet50 224/8: 0.64 (its 1x1 bottleneck convs: 467 -> 103 ms each at 56²).
- what limits every row still below 1: the kernel gradient of stride-1 3x3 convolutions. XLA:CPU
  computes it with Eigen GEMMs over a long contraction (N*H*W) at ~110 GF/s; torch's oneDNN
  brgemm (AVX-512) reaches ~370 GF/s: 56², 64 -> 64, batch 16: 117 ms against 10 ms. Written
  instead as 9 shifted matmuls (87 ms), patches^T x dy (99 ms), K-chunked batched matmuls
  (145 ms) or a CHWN-layout convolution (186 ms): no formulation in jnp/lax is fast, and at
  small channel counts (8-32, the 48-px PrepNet networks) the library call stays the best of them.
  DCGAN's stride-2 transposed convolutions (lhs dilation) were the other slow case (G 112 ms vs
  10): computed as one small convolution per output phase (models/conv.py `subpixel_conv`), the
  DCGAN G + D step went 147 -> 72 ms, ratio 0.28 -> 0.56.
- before/after in one sitting (`--library-conv` = before; steps 9, idle): ResNet18 64/32 1872 ->
  228 ms (0.10 -> 0.87), ResNet50 224/8 3752 -> 1528 ms (0.25 -> 0.61), ResNet18 224/16 1588 ->
  1553 ms (0.40 -> 0.44), VGG19-BN x0.125 48/32 56 -> 56 ms (0.61-0.67 both: its convs stay on the
  library path).
- tried without effect (kept out): XLA_FLAGS --xla_cpu_experimental_onednn_custom_call=true,
  --xla_cpu_use_onednn=true with --xla_cpu_experimental_onednn_fusion_type=dot (plain dots go
  through oneDNN brgemm, 177 -> 209 GF/s on 50176x576x64, convolutions unchanged: jaxlib 0.10.2
  offers only dot/eltwise/reduce fusion types), the ynn/xnn fusion types dot and individual_dot,
  --xla_cpu_use_xnnpack=true; NCHW/OIHW layouts for small-channel convs (no consistent gain);
  --xla_backend_optimization_level=0 (compile no faster, steps 2x slower) and =1 (no gain);
  bfloat16 dots on CPU (46 vs 54 GF/s: no AMX path); glibc malloc thresholds raised (fewer page
  faults, VGG19-BN x0.125 48/32 within noise, 47-55 ms either way).
- the main job (configs/prepnet.py): steps that differ only in an optimizer argument its schedule
  ignores compile once (4 train steps no longer compile again for the up-sampled row; compile
  time is 36 s over 226 compilations); grey images replicated to 3 channels are warped once by the
  E_cov augmentation (half its input-pipeline time). 7 min 19 s -> 6 min 56 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks import bench_vs_torch_pairs as pairs  # noqa: E402
from benchmarks.bench_vs_torch_pairs import count, make_pair, torch_count  # noqa: E402
from prepnet_jax.models import conv  # noqa: E402
from prepnet_jax.runtime import jax_settings, sharding  # noqa: E402

torch = pairs.torch  # None without PyTorch: --jax-only, or the install message

DEFAULT_ROWS = ("resnet18@224x16", "resnet18@64x32", "resnet34@224x16", "resnet50@224x8", "vgg16@224x8",
                "vgg19@224x8", "vgg16_bn_gap@224x8", "vgg19_bn_gap@224x8", "vgg19_bn_gap_w0.125@48x32",
                "vgg19_bn_gap_w0.5@64x32", "covidnet_w0.125@64x8", "unet_ae@48x32", "dcgan@64x32",
                "stylegan2_small@32x16")
QUICK_ROWS = ("resnet18_w0.25@64x8", "vgg19_bn_gap_w0.125@48x32", "dcgan@64x32")
INSTALL_HINT = "pip install -r requirements-bench.txt"


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def bench_row(spec: str, steps: int, memory_format, jax_only: bool, mesh) -> dict:
  pair = make_pair(spec)
  holder = [sharding.replicate(pair.jax_init(), mesh)]
  row = {"row": spec, "images_per_step": pair.images, "jax_params": count(pair.jax_params(holder[0])),
         "load_average_before": os.getloadavg()[0]}
  jax_fn = pair.jax_step(mesh)

  def run_jax():
    holder[0] = jax_fn(holder[0])
    jax.block_until_ready(holder[0])

  runs = {"jax": run_jax}
  if not jax_only:
    torch.manual_seed(0)
    modules = pair.torch_build()
    row["torch_params"] = torch_count(modules)
    assert row["jax_params"] == row["torch_params"], (
        f"{spec}: the architectures differ: prepnet_jax has {row['jax_params']:,} parameters, "
        f"torch {row['torch_params']:,}")
    runs["torch"] = pair.torch_step(modules, memory_format)
  row["jax_compile_s"] = timed(run_jax)
  for fn in runs.values():  # warm-up (a second JAX call; torch's first steps build its kernels)
    fn()
  if "torch" in runs:
    row["torch_warmup_s"] = timed(runs["torch"])
  times = {side: [] for side in runs}
  for i in range(steps):
    for side in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
      times[side].append(timed(runs[side]))
  for side, values in times.items():
    row[f"{side}_ms_all"] = [t * 1e3 for t in values]
    row[f"{side}_ms"] = statistics.median(values) * 1e3
    row[f"{side}_ms_min"] = min(values) * 1e3
    row[f"{side}_img_s"] = pair.images / statistics.median(values)
  if "torch" in runs:
    row["ratio"] = row["torch_ms"] / row["jax_ms"]
  row["load_average_after"] = os.getloadavg()[0]  # 1-minute: > CPUs means other work shared them
  return row


def format_table(rows: list[dict]) -> str:
  lines = ["| network | input, batch | params | prepnet_jax ms/step | img/s | PyTorch ms/step | img/s "
           "| ratio |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    name, geometry = r["row"].split("@")
    size, batch = geometry.split("x")
    torch_cols = (f"{r['torch_ms']:.1f} | {r['torch_img_s']:.1f} | {r['ratio']:.2f}" if "ratio" in r
                  else "— | — | —")
    lines.append(f"| {name} | {size}², {batch} | {r['jax_params'] / 1e6:.2f} M | {r['jax_ms']:.1f} | "
                 f"{r['jax_img_s']:.1f} | {torch_cols} |")
  return "\n".join(lines)


def environment(memory_format_name: str, jax_only: bool) -> dict:
  import flax
  import jaxlib
  env = {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
         "optax": optax.__version__, "numpy": np.__version__, "python": platform.python_version(),
         "platform": platform.platform(), "backend": jax.default_backend(),
         "devices": [f"{d} ({d.device_kind})" for d in jax.devices()],
         "jax_environment_info": jax.print_environment_info(return_string=True),
         "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "cpu_count": os.cpu_count(),
         "cpus_allowed": len(os.sched_getaffinity(0)),
         "xla_threads": "XLA:CPU's intra-op pool, sized from the CPUs this process may use",
         "prng_impl": str(jax.config.jax_default_prng_impl)}
  if not jax_only:
    env.update(torch=torch.__version__, torch_num_threads=torch.get_num_threads(),
               torch_num_interop_threads=torch.get_num_interop_threads(),
               torch_parallel_info=torch.__config__.parallel_info(),
               torch_memory_format=memory_format_name)
  return env


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", default=None, help="comma-separated <network>@<size>x<batch> (default: "
                      "the configs' sizes)")
  parser.add_argument("--steps", type=int, default=None, help="timed repeats per side (default 5, --quick 2)")
  parser.add_argument("--quick", action="store_true", help=f"small rows only: {', '.join(QUICK_ROWS)}")
  parser.add_argument("--json", default=None, help="write every row's numbers and the environment here")
  parser.add_argument("--jax-only", action="store_true", help="time the JAX side only (torch not needed)")
  parser.add_argument("--torch-format", default="channels_last", choices=("channels_last", "contiguous"))
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="torch.set_num_threads (default: the CPUs this process may use)")
  parser.add_argument("--library-conv", action="store_true",
                      help="route every convolution to lax.conv_general_dilated (the 'before' of "
                           "prepnet_jax/models/conv.py)")
  args = parser.parse_args(argv)
  if torch is None and not args.jax_only:
    print(f"PyTorch is not installed: install the benchmark dependencies with `{INSTALL_HINT}`, "
          "or run with --jax-only", flush=True)
    sys.exit(2)
  jax_settings.configure()
  if args.library_conv:
    conv.uses_patches = lambda *unused: False
  rows = args.rows.split(",") if args.rows else list(QUICK_ROWS if args.quick else DEFAULT_ROWS)
  steps = args.steps or (2 if args.quick else 5)
  memory_format = None
  if not args.jax_only:
    torch.set_num_threads(args.torch_threads or len(os.sched_getaffinity(0)))
    formats = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
    memory_format = formats[args.torch_format]
  env = environment(args.torch_format, args.jax_only)
  threads = f", torch threads {env['torch_num_threads']} ({args.torch_format})" if not args.jax_only else ""
  print(f"prepnet_jax (jax {env['jax']}) vs PyTorch {env.get('torch', '(not run)')} eager on "
        f"{env['devices'][0]} ×{len(env['devices'])}, {env['cpus_allowed']} CPUs{threads}; "
        f"median of {steps} interleaved steps", flush=True)
  mesh = sharding.make_mesh()
  results = []
  for spec in rows:
    row = bench_row(spec, steps, memory_format, args.jax_only, mesh)
    results.append(row)
    versus = (f", torch {row['torch_ms']:.1f} ms (min {row['torch_ms_min']:.1f}) → ratio {row['ratio']:.2f}"
              if "ratio" in row else "")
    print(f"  {spec}: {row['jax_params']:,} params, jax {row['jax_ms']:.1f} ms (min {row['jax_ms_min']:.1f}, "
          f"first call {row['jax_compile_s']:.1f} s){versus}; load {row['load_average_after']:.1f}", flush=True)
  print(format_table(results), flush=True)
  if args.json:
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
      json.dump({"rows": results, "steps": steps, "environment": env}, f, indent=1)
    print(f"wrote {args.json}", flush=True)
  return results


if __name__ == "__main__":
  main()
