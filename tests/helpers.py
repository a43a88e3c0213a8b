"""Shared test utilities: tiny, fast versions of the shipped configs."""

from __future__ import annotations

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small phantom so a whole training run takes seconds on 2 cores.
TINY_CT = {"num_patients": 60, "image_size": 48}


def load_config(name: str):
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def set_fields(config, overrides: dict):
  """Sets dotted config fields ('data.phantom_overrides', 'optim.learning_rate') in place."""
  config.update_from_flattened_dict(dict(overrides))
  return config


def tiny_classifier_config(**overrides):
  c = load_config("classifier")
  c.data.phantom_backend = "memory"
  c.data.phantom_overrides = dict(TINY_CT)
  c.data.eval = ("phantom_ct/sars", "phantom_ct/ucsd")
  c.preprocess.image_size = 32
  c.model.name = "small_cnn"
  c.model.width_multiplier = 0.5
  c.batch_size = 16
  c.num_epochs = 2
  c.log_every_steps = 1
  return set_fields(c, overrides)
