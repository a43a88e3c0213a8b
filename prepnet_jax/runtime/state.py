"""Explicit train-state pytrees.

One `ModelState` per network (PrepNet has three: the auto-encoder, E_img and E_cov), each a
plain `flax.struct` dataclass: step, params, batch statistics, optimizer state and an RNG key.
The optimizer and apply function are static fields, so a state can be passed through `jax.jit`
and saved/restored by orbax as a plain pytree.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class ModelState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @property
  def variables(self) -> dict:
    v = {"params": self.params}
    if self.batch_stats:
      v["batch_stats"] = self.batch_stats
    return v

  def apply_gradients(self, grads, batch_stats=None) -> "ModelState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state,
                        batch_stats=self.batch_stats if batch_stats is None else batch_stats)


def create_model_state(model, tx: optax.GradientTransformation, rng: jax.Array,
                       sample_input: jax.Array, **init_kwargs) -> ModelState:
  """Initialises `model` on `sample_input` and wraps params, batch stats and optimizer state."""
  init_rng, state_rng = jax.random.split(rng)
  kwargs = tuple(sorted(init_kwargs.items()))
  try:
    init = _jitted_init(model, kwargs)
  except TypeError:  # an unhashable module field or init argument: compile without the cache
    init = _jitted_init.__wrapped__(model, kwargs)
  variables = init(init_rng, sample_input)
  params = variables["params"]
  return ModelState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    rng=state_rng, apply_fn=model.apply, tx=tx)


@functools.lru_cache(maxsize=64)
def _jitted_init(model, init_kwargs: tuple) -> Callable:
  """Jitted `model.init`: one compilation instead of thousands of eager ops for a large network,
  cached per (equal) module so re-creating the same network (a new seed, the next table row)
  does not compile again."""
  return jax.jit(lambda r, x: model.init({"params": r, "dropout": r}, x, train=False, **dict(init_kwargs)))


def model_variables(state: ModelState, params=None) -> dict:
  v = {"params": state.params if params is None else params}
  if state.batch_stats:
    v["batch_stats"] = state.batch_stats
  return v
