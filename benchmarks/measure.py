"""What every benchmark script measures the same way: compile once, time the median step, FLOPs,
memory and MFU.

- `compile_step(jitted, *args)`: ahead-of-time `lower(...).compile()`, so compilation is timed on
  its own and never inside a timed step; the compiled executable also gives the step's FLOPs
  (`cost_analysis()`, XLA's count for the whole program: forward, backward, optimizer,
  elementwise work) and its memory (`memory_analysis()`: arguments + outputs + temporaries).
- `median_seconds(fn, steps)`: one warm-up call, then `steps` calls each ended by
  `jax.block_until_ready`; the median resists the stragglers of shared machines.
- `peak_memory_bytes()`: the device allocator's `peak_bytes_in_use` (a process-lifetime
  maximum: run one configuration per process, or in increasing size, for per-row peaks).
- `mfu(...)`: achieved FLOP/s over the device's dense peak (`PEAK_TFLOPS`), or None and a note.
"""

from __future__ import annotations

import re
import resource
import statistics
import time
from typing import Any, Callable

import jax

# Dense (no structured sparsity) peak TFLOP/s per chip: (bfloat16, float32 as JAX runs it).
# JAX's default matmul precision lets Ampere/Hopper GPUs run float32 matmuls and convolutions in
# TF32, so float32's reference there is the TF32 tensor-core peak; TPUs run float32 matmuls at
# default precision as bfloat16 passes, so their float32 reference is the bfloat16 peak; V100 has
# no bfloat16 tensor cores (None: no MFU) and no TF32 (its float32 peak is the CUDA-core one).
# Sources: NVIDIA H100 Tensor Core GPU datasheet (SXM: BF16 1979 / TF32 989 TFLOPS with sparsity,
# half of it dense; PCIe 1513 / 756; NVL 1671 / 835), NVIDIA H200 datasheet (as H100 SXM), NVIDIA
# A100 datasheet (BF16 312, TF32 156), NVIDIA V100 datasheet (FP32 15.7 SXM2, 14 PCIe), Google
# Cloud TPU system architecture pages (v4 275, v5e 197, v5p 459, v6e 918 bf16 TFLOPS per chip).
# Matched in order against `device.device_kind`.
PEAK_TFLOPS: tuple[tuple[str, str, float | None, float | None], ...] = (
    (r"H100.*PCIe", "H100 PCIe", 756.0, 378.0),
    (r"H100.*NVL", "H100 NVL", 835.0, 417.5),
    (r"H100", "H100 SXM", 989.4, 494.7),
    (r"H200", "H200", 989.4, 494.7),
    (r"A100", "A100", 312.0, 156.0),
    (r"V100.*PCI", "V100 PCIe", None, 14.0),
    (r"V100", "V100 SXM2", None, 15.7),
    (r"TPU v4", "TPU v4", 275.0, 275.0),
    (r"TPU v5 ?lite|TPU v5e", "TPU v5e", 197.0, 197.0),
    (r"TPU v5p|TPU v5$", "TPU v5p", 459.0, 459.0),
    (r"TPU v6 ?lite|TPU v6e", "TPU v6e", 918.0, 918.0),
)


def device_kind() -> str:
  return jax.devices()[0].device_kind


def peak_tflops(kind: str, half_precision: bool) -> tuple[float | None, str]:
  """(dense peak TFLOP/s per chip or None, what it is or why there is none)."""
  for pattern, name, bf16, f32 in PEAK_TFLOPS:
    if re.search(pattern, kind):
      value = bf16 if half_precision else f32
      what = f"{name} dense {'bf16' if half_precision else 'f32 (TF32 on GPUs)'} peak"
      return value, what if value else f"{name} has no {'bf16' if half_precision else 'f32'} peak listed"
  return None, f"device kind {kind!r} not in the peak table (benchmarks/measure.py): MFU omitted"


def mfu(flops_per_step: float | None, step_s: float, half_precision: bool) -> tuple[float | None, str]:
  """Model FLOP utilisation: FLOPs per step / step time / one chip's peak, or None and a note.

  `cost_analysis` counts the program one device runs, so on several devices this is per chip.
  """
  if not flops_per_step:
    return None, "the compiled step reports no FLOP count: MFU omitted"
  peak, note = peak_tflops(device_kind(), half_precision)
  if peak is None:
    return None, note
  return flops_per_step / step_s / (peak * 1e12), note


def compile_step(jitted, *args, compiler_options: dict | None = None, **kwargs) -> dict:
  """{'compiled', 'compile_s', 'flops', 'program_bytes'} of `jitted` on these arguments."""
  start = time.perf_counter()
  compiled = jitted.lower(*args, **kwargs).compile(compiler_options)
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
  flops = float(cost.get("flops", 0.0)) if isinstance(cost, dict) else 0.0
  program_bytes = None
  memory = compiled.memory_analysis()
  if memory is not None:
    program_bytes = int(memory.argument_size_in_bytes + memory.output_size_in_bytes
                        - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
  return {"compiled": compiled, "compile_s": compile_s, "flops": flops if flops > 0 else None,
          "program_bytes": program_bytes}


def median_seconds(fn: Callable[[], Any], steps: int, warmup: int = 1) -> float:
  """Median wall time of `fn()` (which returns something to block on) after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def peak_memory_bytes() -> tuple[int, str]:
  """(bytes, what): the device allocator's peak where the backend reports it, else peak host RSS."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host peak RSS (no device statistics)"


def is_out_of_memory(error: BaseException) -> bool:
  text = str(error)
  return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text
