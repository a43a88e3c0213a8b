"""Patient-level train/val/test splits.

Slices of one patient are strongly correlated, so every split in this project is made by
patient id (UCSD-AI4H/COVID-CT#11 is the classic leak). The assignment depends only on the
patient id and a seed, so it is stable when patients are added or the order changes.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import numpy as np

SPLITS = ("train", "val", "test")


def _unit_interval(patient: str, seed: int) -> float:
  digest = hashlib.sha256(f"{seed}:{patient}".encode()).digest()
  return int.from_bytes(digest[:8], "little") / 2.0**64


def assign_split(patient: str, fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0) -> str:
  """Returns 'train', 'val' or 'test' for one patient id (deterministic hash)."""
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
    raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
  u = _unit_interval(patient, seed)
  if u < fractions[0]:
    return "train"
  if u < fractions[0] + fractions[1]:
    return "val"
  return "test"


def patient_split(patients: Iterable[str], fractions: Sequence[float] = (0.7, 0.15, 0.15),
                  seed: int = 0) -> np.ndarray:
  """Vector of split names, one per example, assigned by patient id."""
  cache: dict[str, str] = {}
  out = []
  for p in patients:
    p = p.decode() if isinstance(p, bytes) else str(p)
    if p not in cache:
      cache[p] = assign_split(p, fractions, seed)
    out.append(cache[p])
  return np.asarray(out, dtype=object)


def assert_disjoint(patients_by_split: dict[str, Iterable[str]]) -> None:
  """Raises if any patient id appears in two splits."""
  seen: dict[str, str] = {}
  for split, patients in patients_by_split.items():
    for p in set(patients):
      if p in seen and seen[p] != split:
        raise AssertionError(f"patient {p!r} is in both {seen[p]!r} and {split!r}: splits leak")
      seen[p] = split
