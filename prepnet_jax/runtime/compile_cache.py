"""The one cache of compiled work: build a model/optimizer/step bundle once per static setting.

Jitted steps take their states as arguments and a state's module and optimizer are static
(hashed) fields, so two equal settings must yield the *same* objects for `jax.jit` to reuse its
compiled programs. Every job gets those objects through `build_once`: a new seed, the next
table row, a resumed run or repeated sampling in one process then compiles nothing again
(~10 s per network on CPU). Config sections in the key are compared by their JSON form.
"""

from __future__ import annotations

import json
from typing import Any, Callable

_BUILT: dict = {}


def setting_key(value: Any) -> Any:
  """A hashable stand-in for `value`: ConfigDicts and dicts by their sorted JSON."""
  if hasattr(value, "to_dict"):
    value = value.to_dict()
  if isinstance(value, (dict, list)):
    return json.dumps(value, sort_keys=True, default=str)
  return value


def build_once(builder: Callable, *setting: Any) -> Any:
  """`builder(*setting)`, built on the first call for an equal setting and reused afterwards.

  Raises TypeError (like `functools.lru_cache`) when a part of the setting is unhashable.
  """
  key = (builder.__module__, builder.__qualname__, *(setting_key(s) for s in setting))
  hash(key)
  if key not in _BUILT:
    _BUILT[key] = builder(*setting)
  return _BUILT[key]


def clear() -> None:
  """Forgets every bundle (tests that count compilations)."""
  _BUILT.clear()
