"""A tiny PrepNet row for subprocess tests (two sites, 32×32, one epoch per phase); imports no
JAX, so `main.py` can still start jax.distributed after loading it."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import tiny_prepnet_config  # noqa: E402


def get_config():
  c = tiny_prepnet_config([dict(name="PrepNet", overrides={})])
  c.cov_train_sets = (("phantom_ct/sars",),)
  c.diagnostics.enabled = False
  return c
