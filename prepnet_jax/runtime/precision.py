"""Mixed precision: the one place that turns `config.half_precision` into a compute dtype.

`half_precision=True` makes every network compute its activations, matrix products and
convolutions in bfloat16 while everything that accumulates stays float32: parameters
(`param_dtype` float32), optimizer state, BatchNorm running statistics (flax computes batch
statistics in float32 and stores them as `param_dtype`), logits and network outputs (cast to
float32 before any loss), the losses themselves (softmax / log-softmax / BCE, KL terms, gradient
penalties, StyleGAN2's R1 and path-length regularisers) and the metrics. Each model family takes
the dtype as its `dtype` field; the FID extractor (Inception-v3) always runs in float32 so the
metric stays comparable with published numbers.

Why bfloat16 and no loss scaling: bfloat16 keeps float32's 8-bit exponent (range ~1e-38..3e38)
and drops mantissa bits (8 significant bits, relative rounding 2^-9 ≈ 0.2 %), so gradients neither
overflow nor underflow where float32 would not; loss scaling exists to protect float16's 5-bit
exponent (max 65504, gradients below ~6e-8 flush to zero). float16 is not offered: it would need
dynamic loss scaling in every optimizer and, for StyleGAN2, stylegan2-ada's pre-normalisation and
activation clamping, for no speed gain on the accelerators this project targets (A100, H100, H200
and TPU v4/v5 run bfloat16 at the float16 peak). V100 has no bfloat16 tensor cores: there the
switch brings no speed-up.

The switch means the same on every backend. On CPU bfloat16 is correct but no faster: the tests
use it there to check the numerics.
"""

from __future__ import annotations

import jax.numpy as jnp


def compute_dtype(config) -> jnp.dtype:
  """bfloat16 when `config.half_precision`, else float32 (parameters are float32 either way)."""
  return half_precision_dtype(config.half_precision)


def half_precision_dtype(half_precision: bool) -> jnp.dtype:
  """The compute dtype of a `half_precision` value (for callers without a config: benchmarks)."""
  return jnp.bfloat16 if half_precision else jnp.float32
