"""Per-layer convolution timing: XLA's library conv vs patches x matrix vs what `models.conv` picks.

  python benchmarks/bench_conv.py                 # ResNet18's conv shapes at 224 px / batch 16 and 64 px / batch 32
  python benchmarks/bench_conv.py --batch 8 --torch

Each row times forward + both gradients (input and kernel) of one 2-D convolution, jitted, data on
the device, median of `--steps` calls after a compile call. `chosen` is the route
`prepnet_jax.models.conv.conv_general_dilated` takes for that shape on this backend; `--torch` adds
PyTorch eager's conv2d forward + backward (channels_last, same thread count) as the reference.
This is the measurement behind the routing rule in prepnet_jax/models/conv.py.

Measured on 2 CPU cores (jax 0.10.2, torch 2.13.0), ms for forward + backward, batch 16:
  224² 7x7/2 3->64: library 320, patches 190, torch 155
  56² 3x3 64->64: library 162, patches 133, torch 43 (the kernel-gradient GEMM: XLA ~110 GF/s vs
    oneDNN's ~370 GF/s — the limit of every large-image row of bench_vs_torch.py)
  56² 1x1/2 64->128: library 18, patches 5, torch 5
  14² 3x3 256->256: library 47, patches 59, torch 34 (the library stays)
  2² 3x3 512->512 (batch 32, ResNet18 at 64 px): library 262, patches 5, torch 12
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

from prepnet_jax.models import conv  # noqa: E402

# (input side, in channels, out channels, kernel, stride): ResNet18's convolutions.
RESNET18_LAYERS = [(1.0, 3, 64, 7, 2), (0.25, 64, 64, 3, 1), (0.25, 64, 128, 3, 2), (0.125, 128, 128, 3, 1),
                   (0.25, 64, 128, 1, 2), (0.125, 128, 256, 3, 2), (0.0625, 256, 256, 3, 1),
                   (0.0625, 256, 512, 3, 2), (0.03125, 512, 512, 3, 1)]
DIMS = ("NHWC", "HWIO", "NHWC")


def _median_ms(fn, *args, steps: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return float(np.median(times)) * 1e3


def _forward_backward(conv_fn, stride: int, pad: int):
  def loss(x, w):
    return jnp.sum(conv_fn(x, w, (stride, stride), ((pad, pad), (pad, pad))) ** 2)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _library(x, w, strides, pads):
  return lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DIMS)


def _patches(x, w, strides, pads):
  return conv.patches_conv(x, w, strides, pads)


def _routed(x, w, strides, pads):
  return conv.conv_general_dilated(x, w, strides, pads, dimension_numbers=DIMS)


def _torch_ms(x, w, stride: int, pad: int, steps: int) -> float:
  import torch
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  xt = torch.from_numpy(np.asarray(x)).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
  wt = torch.from_numpy(np.asarray(w)).permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
  xt.requires_grad_(True)
  wt.requires_grad_(True)
  times = []
  for i in range(steps + 1):
    xt.grad = wt.grad = None
    t0 = time.perf_counter()
    (torch.nn.functional.conv2d(xt, wt, stride=stride, padding=pad) ** 2).sum().backward()
    times.append(time.perf_counter() - t0)
  return float(np.median(times[1:])) * 1e3


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--settings", default="224x16,64x32", help="image side x batch, comma-separated")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--torch", action="store_true", help="add PyTorch eager as the reference")
  args = p.parse_args()
  print(f"backend {jax.default_backend()}, {len(os.sched_getaffinity(0))} cores")
  print("| input | conv | library ms | patches ms | chosen | chosen ms |" + (" torch ms |" if args.torch else ""))
  print("|---|---|---|---|---|---|" + ("---|" if args.torch else ""))
  rng = np.random.default_rng(0)
  for setting in args.settings.split(","):
    side, batch = (int(v) for v in setting.split("x"))
    for frac, cin, cout, k, s in RESNET18_LAYERS:
      h = max(1, int(side * frac))
      x = jnp.asarray(rng.normal(size=(batch, h, h, cin)).astype(np.float32))
      w = jnp.asarray(0.05 * rng.normal(size=(k, k, cin, cout)).astype(np.float32))
      lib, pat = (_median_ms(_forward_backward(f, s, k // 2), x, w, steps=args.steps) for f in (_library, _patches))
      out = (h + 2 * (k // 2) - k) // s + 1
      chosen = "patches" if conv.uses_patches((k, k), cin, (s, s), (out, out)) else "library"
      row = (f"| {batch}x{h}²x{cin} | {k}x{k}/{s} -> {cout} | {lib:.1f} | {pat:.1f} | {chosen} | "
             f"{pat if chosen == 'patches' else lib:.1f} |")
      if args.torch:
        row += f" {_torch_ms(x, w, s, k // 2, args.steps):.1f} |"
      print(row, flush=True)


if __name__ == "__main__":
  main()
