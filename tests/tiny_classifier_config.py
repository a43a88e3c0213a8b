"""The classifier config shrunk for subprocess tests (tiny phantom, small CNN, 32×32)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import tiny_classifier_config  # noqa: E402


def get_config():
  return tiny_classifier_config(num_epochs=3)
