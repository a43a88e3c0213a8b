"""Shared test utilities: tiny, fast versions of the shipped configs."""

from __future__ import annotations

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small phantom so a whole training run takes seconds on 2 cores.
TINY_CT = {"num_patients": 60, "image_size": 48}


def load_config(name: str, *args):
  """configs/<name>.py's get_config(*args) (args: e.g. a preset)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)


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


def tiny_prepnet_config(rows, **overrides):
  c = load_config("prepnet")
  c.data.phantom_backend = "memory"
  c.data.phantom_overrides = {"num_patients": 30, "image_size": 32}
  c.data.train = ("phantom_ct/sars", "phantom_ct/ucsd")
  c.cov_train_sets = (("phantom_ct/sars",), ("phantom_ct/ucsd",))
  c.preprocess.image_size = 32
  c.ae.width_multiplier = 0.0625
  c.ae.depth = 3
  c.e_img.name = c.e_cov.name = "small_cnn"
  c.e_img.kwargs = c.e_cov.kwargs = {}
  c.e_img.width_multiplier = c.e_cov.width_multiplier = 0.25
  for k in c.num_epochs:
    c.num_epochs[k] = 1
  c.num_epochs.four_step = 2
  c.batch_size = 32
  c.diagnostics.origin_epochs = 1
  c.diagnostics.origin_width = 0.25
  c.rows = tuple(rows)
  c.baseline_row = rows[0]["name"]
  for key, value in overrides.items():
    c[key] = value
  return c


def zero_variables(model, x):
  """Variables of the right structure without running an initializer (a weight import fills them)."""
  import functools

  import jax
  import jax.numpy as jnp
  abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  return jax.tree.map(lambda leaf: jnp.zeros(leaf.shape, leaf.dtype), abstract)


def assert_close(actual, reference):
  """Within 1e-4 relative to the reference output's scale (random reference networks give outputs
  from 1e-4 to 1e2)."""
  import numpy as np
  scale = float(np.abs(reference).max())
  assert scale > 0
  np.testing.assert_allclose(np.asarray(actual), reference, rtol=1e-4, atol=1e-4 * scale)


def run_main(config_path: str, workdir, *overrides, devices: int = 1, processes: int = 1,
             timeout: int = 600) -> list:
  """Runs `main.py` as `processes` local processes (jax.distributed over a free local port, gloo
  collectives), each with `devices` forced CPU devices; returns their CompletedProcess-like
  results (returncode, stdout with stderr) in process order."""
  import socket
  import subprocess
  import sys
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  cmd = [sys.executable, os.path.join(REPO, "main.py"), f"--config={config_path}", f"--workdir={workdir}",
         *overrides]
  if processes > 1:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    cmds = [cmd + [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={processes}",
                   f"--process_id={i}"] for i in range(processes)]
  else:
    cmds = [cmd]
  procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for c in cmds]
  results = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    results.append(subprocess.CompletedProcess(p.args, p.returncode, out, ""))
  return results
