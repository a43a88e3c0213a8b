"""prepnet_jax: COVID-19 chest imaging in JAX/Flax (PrepNet, generative augmentation, classifiers)."""

import os

import jax

__version__ = "0.1.0"

# Random bits from XLA's RngBitGenerator instead of threefry: initialising a network then
# compiles several times faster on CPU (threefry's unrolled rounds dominate XLA compile time
# for inits with hundreds of kernels). Runs stay deterministic for a seed on a given device
# count. Set PREPNET_PRNG_IMPL=threefry2x32 to get JAX's default.
jax.config.update("jax_default_prng_impl", os.environ.get("PREPNET_PRNG_IMPL", "rbg"))
