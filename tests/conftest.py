"""Test-wide settings: quiet TensorFlow, CPU only, no persistent XLA compilation cache.

The persistent cache is off for the suite and every process it starts (inherited through the
environment): with it on, full-suite runs lost a pytest worker to a segfault inside XLA's
executable serialization (`compilation_cache.put_executable_and_time`) in 3 of 4 runs, each time
in a different test. Serialization only happens for the cache, so without it the path is gone.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
# One LLVM codegen thread per compile (XLA's default splits a module over a thread pool): the
# remaining crashes were inside XLA's CPU compile in in-process tests; this narrows the suspects.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_parallel_codegen_split_count=1").strip()

# The jobs' process-wide JAX settings (main.py applies the same ones), so in-process tests
# reproduce the command line's numbers.
from prepnet_jax.runtime import jax_settings  # noqa: E402

jax_settings.configure()
