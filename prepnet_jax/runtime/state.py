"""The one train-state type of every network in the project.

A `TrainState` is a `flax.struct` dataclass: step, params, batch statistics (BatchNorm
statistics or other non-trained buffers), optimizer state, RNG key and, where a model keeps
one, an exponential moving average of the parameters (`ema_params`, e.g. StyleGAN2's G_ema).
The module's `apply` and the optimizer are static fields, so a state passes through `jax.jit`
and is saved/restored by orbax as a plain pytree. Models with several networks (PrepNet's AE,
E_img and E_cov; a GAN's G and D) hold one `TrainState` per network.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from prepnet_jax.runtime import compile_cache


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  apply_fn: Callable = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  ema_params: Any = None

  @property
  def variables(self) -> dict:
    return self.variables_with(self.params)

  def variables_with(self, params) -> dict:
    """The variables `apply_fn` takes, with `params` in place of the state's own (for grads)."""
    v = {"params": params}
    if self.batch_stats:
      v["batch_stats"] = self.batch_stats
    return v

  def apply_gradients(self, grads, batch_stats=None) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state,
                        batch_stats=self.batch_stats if batch_stats is None else batch_stats)


def create_train_state(model, tx: optax.GradientTransformation, rng: jax.Array,
                       sample_input: jax.Array, *, with_ema: bool = False, **init_kwargs) -> TrainState:
  """Initialises `model` on `sample_input` and wraps params, batch stats and optimizer state."""
  init_rng, state_rng = jax.random.split(rng)
  kwargs = tuple(sorted(init_kwargs.items()))
  try:
    init = compile_cache.build_once(_jitted_init, model, kwargs)
  except TypeError:  # an unhashable module field or init argument: compile without the cache
    init = _jitted_init(model, kwargs)
  variables = init(init_rng, sample_input)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    rng=state_rng, apply_fn=model.apply, tx=tx,
                    ema_params=jax.tree_util.tree_map(jnp.copy, params) if with_ema else None)


def _jitted_init(model, init_kwargs: tuple) -> Callable:
  """Jitted `model.init`: one compilation instead of thousands of eager ops for a large network;
  built once per (equal) module so re-creating the same network (a new seed, the next table row)
  does not compile again."""
  return jax.jit(lambda r, x: model.init({"params": r, "dropout": r}, x, train=False, **dict(init_kwargs)))
