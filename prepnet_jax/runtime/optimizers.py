"""optax optimizers and the learning-rate schedules the studies use.

Config fields (`config.optim`, every one present: see `configs/common.py:optim`): name ('adamw', 'adam', 'sgd', 'rmsprop'), learning_rate,
weight_decay, momentum, nesterov, b1, b2, eps, grad_clip (0 = off) and schedule
('constant', 'step', 'exponential', 'cosine', 'onecycle', 'plateau') with its fields
(step_epochs, gamma, warmup_epochs, onecycle_pct_start, onecycle_div_factor,
onecycle_final_div_factor, plateau_patience, plateau_factor, plateau_min_lr).
'plateau' (reduce-on-plateau of a validation metric, as in PyTorch's ReduceLROnPlateau) is
stepped on the host once per epoch through `PlateauScheduler`; the learning rate lives in the
optimizer state (`optax.inject_hyperparams`), so it is checkpointed with it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import optax

SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "plateau")
TOTAL_STEP_SCHEDULES = ("cosine", "onecycle")  # their shape depends on the run's total number of steps
OPTIMIZERS = ("adamw", "adam", "sgd", "rmsprop")


def schedule_steps_per_epoch(cfg, steps_per_epoch: int) -> int:
  """`steps_per_epoch` where the schedule depends on it, else 1: two optimizers that differ only in
  a number their schedule ignores are then equal, and `compile_cache.build_once` returns the same
  one (a run with up-sampled data reuses the compiled steps of a run without)."""
  return 1 if cfg.schedule in ("constant", "plateau") else int(steps_per_epoch)


def make_schedule(cfg, steps_per_epoch: int, total_steps: int) -> Callable[[Any], Any] | float:
  lr = float(cfg.learning_rate)
  kind = cfg.schedule
  if kind in ("constant", "plateau"):
    return lr
  if kind == "step":  # StepLR(step_size=step_epochs, gamma)
    return optax.exponential_decay(lr, transition_steps=int(cfg.step_epochs) * steps_per_epoch,
                                   decay_rate=float(cfg.gamma), staircase=True)
  if kind == "exponential":  # ExponentialLR(gamma) stepped once per epoch
    return optax.exponential_decay(lr, transition_steps=steps_per_epoch,
                                   decay_rate=float(cfg.gamma), staircase=True)
  if kind == "cosine":
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    if not warmup:
      return optax.cosine_decay_schedule(lr, max(total_steps, 1))
    return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(total_steps, warmup + 1))
  if kind == "onecycle":  # PyTorch OneCycleLR defaults: pct_start 0.3, div 25, final div 1e4
    return optax.cosine_onecycle_schedule(
        transition_steps=max(total_steps, 1), peak_value=lr,
        pct_start=float(cfg.onecycle_pct_start),
        div_factor=float(cfg.onecycle_div_factor),
        final_div_factor=float(cfg.onecycle_final_div_factor))
  raise ValueError(f"unknown optim.schedule={kind!r}; known: {', '.join(SCHEDULES)}")


def _base_optimizer(name: str, learning_rate, cfg) -> optax.GradientTransformation:
  wd = float(cfg.weight_decay)
  if name == "adamw":
    return optax.adamw(learning_rate, b1=cfg.b1, b2=cfg.b2,
                       eps=cfg.eps, weight_decay=wd)
  if name == "adam":  # L2-coupled weight decay like torch.optim.Adam(weight_decay=...)
    adam = optax.adam(learning_rate, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    return optax.chain(optax.add_decayed_weights(wd), adam) if wd else adam
  if name == "sgd":
    sgd = optax.sgd(learning_rate, momentum=cfg.momentum or None,
                    nesterov=bool(cfg.nesterov))
    return optax.chain(optax.add_decayed_weights(wd), sgd) if wd else sgd
  if name == "rmsprop":
    return optax.rmsprop(learning_rate, decay=cfg.rms_decay, eps=cfg.eps,
                         momentum=cfg.momentum or None)
  raise ValueError(f"unknown optim.name={name!r}; known: {', '.join(OPTIMIZERS)}")


def make_optimizer(cfg, steps_per_epoch: int = 1, total_steps: int = 1,
                   trainable_mask: Any | None = None) -> optax.GradientTransformation:
  """Builds the optimizer of `cfg`; parameters where `trainable_mask` is False stay frozen."""
  name = cfg.name
  schedule = make_schedule(cfg, steps_per_epoch, total_steps)
  tx = optax.inject_hyperparams(lambda learning_rate: _base_optimizer(name, learning_rate, cfg))(
      learning_rate=schedule)
  if cfg.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(float(cfg.grad_clip)), tx)
  if trainable_mask is not None:
    labels = jax.tree_util.tree_map(lambda t: "train" if t else "freeze", trainable_mask)
    tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)
  return tx


def _find_hyperparams(opt_state) -> list:
  """All InjectHyperparamsState nodes inside (possibly chained/masked) optimizer states."""
  found = []
  def visit(node):
    if hasattr(node, "hyperparams") and isinstance(node.hyperparams, dict):
      found.append(node)
    elif isinstance(node, (tuple, list)):
      for child in node:
        visit(child)
    elif isinstance(node, dict):
      for child in node.values():
        visit(child)
    elif hasattr(node, "inner_states"):
      visit(node.inner_states)
    elif hasattr(node, "inner_state"):
      visit(node.inner_state)
  visit(opt_state)
  return found


def current_learning_rate(opt_state) -> float:
  states = _find_hyperparams(opt_state)
  return float(states[0].hyperparams["learning_rate"]) if states else float("nan")


class PlateauScheduler:
  """Host-side ReduceLROnPlateau on a validation metric (mode 'max' or 'min')."""

  def __init__(self, factor: float = 0.1, patience: int = 5, min_lr: float = 0.0, mode: str = "max"):
    self.factor, self.patience, self.min_lr, self.mode = factor, patience, min_lr, mode
    self.best = None
    self.bad_epochs = 0

  def state_dict(self) -> dict:
    return {"best": self.best, "bad_epochs": self.bad_epochs}

  def load_state_dict(self, d: dict) -> None:
    self.best, self.bad_epochs = d.get("best"), int(d.get("bad_epochs", 0))

  def step(self, metric: float, opt_state):
    """Returns the (possibly) updated optimizer state with a reduced learning rate."""
    better = self.best is None or (metric > self.best if self.mode == "max" else metric < self.best)
    if better:
      self.best, self.bad_epochs = float(metric), 0
      return opt_state
    self.bad_epochs += 1
    if self.bad_epochs <= self.patience:
      return opt_state
    self.bad_epochs = 0
    for hp_state in _find_hyperparams(opt_state):
      old = hp_state.hyperparams["learning_rate"]
      hp_state.hyperparams["learning_rate"] = jax.numpy.maximum(old * self.factor, self.min_lr).astype(old.dtype)
    return opt_state
