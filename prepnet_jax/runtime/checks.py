"""Guards that stop a run early instead of silently training on garbage."""

from __future__ import annotations

import math


class NonFiniteLossError(FloatingPointError):
  """Raised when a loss becomes NaN/Inf; the last checkpoint written before it stays intact."""


def check_finite(scalars: dict, step: int) -> None:
  for name, value in scalars.items():
    value = float(value)
    if not math.isfinite(value):
      raise NonFiniteLossError(
          f"non-finite {name}={value} at step {step}; training stopped, the last checkpoint "
          f"(before step {step}) is intact. Lower the learning rate or check the input range.")
