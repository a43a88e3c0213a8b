"""Test-wide settings: quiet TensorFlow, CPU only, and a persistent XLA compilation cache.

Compilation dominates the test suite's run time on CPU; the on-disk cache lets the pytest-xdist
workers and the `main.py` subprocesses some tests start reuse each other's compiled programs.
"""

import os

_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".cache", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)              # inherited by subprocesses
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

# The jobs' process-wide JAX settings (main.py applies the same ones), so in-process tests
# reproduce the command line's numbers.
from prepnet_jax.runtime import jax_settings  # noqa: E402

jax_settings.configure()
