"""Process-wide JAX settings the jobs are measured with, applied explicitly (never on import).

`main.py` calls `configure()` before dispatching a job; tests and benchmarks call it too, so
their numbers match the command line. A notebook that wants the same numbers calls it once.
"""

from __future__ import annotations

import os

import jax

PRNG_IMPL_ENV = "PREPNET_PRNG_IMPL"
DEFAULT_PRNG_IMPL = "rbg"


def configure(prng_impl: str | None = None) -> str:
  """Selects the PRNG implementation (default 'rbg', or $PREPNET_PRNG_IMPL); returns it.

  'rbg' draws random bits with XLA's RngBitGenerator instead of threefry: initialising a network
  then compiles several times faster on CPU (threefry's unrolled rounds dominate XLA compile
  time for inits with hundreds of kernels). Runs stay deterministic for a seed on a given device
  count. PREPNET_PRNG_IMPL=threefry2x32 gives JAX's default.
  """
  impl = prng_impl or os.environ.get(PRNG_IMPL_ENV, DEFAULT_PRNG_IMPL)
  jax.config.update("jax_default_prng_impl", impl)
  return impl


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, local_device_ids: list[int] | None = None) -> None:
  """`jax.distributed.initialize` with CPU collectives on, before any other JAX call of the job.

  Arguments left None are detected by JAX itself (TPU pods, SLURM, Open MPI, Kubernetes...);
  given ones override detection. On CPU the cross-process all-reduce needs a collectives
  backend: gloo (shipped with jaxlib), so several processes on one machine behave like hosts.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id, local_device_ids=local_device_ids)
