"""Data parallelism over every device through one `Mesh` with a `data` axis.

The same code runs on one CPU, on 8 forced host devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=8`), on GPUs/TPUs and on several hosts
(after `jax.distributed.initialize()`): parameters are replicated, batches are split along
their leading axis, and `jax.jit` inserts the gradient all-reduce itself.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Places a pytree (parameters, optimizer state) fully replicated on the mesh.

  With several processes every one holds the same host value (same seed, same checkpoint), and
  each places it on its own devices of the global mesh.
  """
  sharding = replicated_sharding(mesh)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)

  def put(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  return jax.tree_util.tree_map(put, tree)


def local_batch_size(global_batch_size: int, mesh: Mesh | None = None) -> int:
  """Per-process batch size; the global batch must split evenly over devices and processes."""
  num_devices = mesh.devices.size if mesh is not None else jax.device_count()
  if global_batch_size % num_devices:
    raise ValueError(f"batch_size={global_batch_size} must be divisible by the number of devices "
                     f"({num_devices}); choose a multiple of {num_devices}")
  return global_batch_size // jax.process_count()


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Turns this process's numpy batch into global arrays split along the data axis.

  Non-numeric fields (patient ids, file names) stay on the host and are dropped here.
  """
  sharding = data_sharding(mesh)
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.dtype.kind in "biuf":
      out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


def to_host(tree: Any) -> Any:
  """The global value of (possibly multi-host) arrays as numpy on every process.

  `jax.device_get` cannot read an array split over other hosts' devices; this all-gathers it
  first (on one process it is a plain copy)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)
