"""Test-wide settings: quiet TensorFlow, CPU only, and helpers to build tiny configs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
