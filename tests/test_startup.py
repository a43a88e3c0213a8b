"""main.py starts only what a job needs: no TensorFlow for prediction, JAX's PRNG set by main."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _run_main(args: list[str], tmp_path) -> str:
  """Runs main.py in a fresh interpreter and reports which heavy modules it imported."""
  probe = (
      "import runpy, sys\n"
      f"sys.argv = ['main.py'] + {args!r}\n"
      "try:\n"
      "  runpy.run_path('main.py', run_name='__main__')\n"
      "except BaseException as e:\n"
      "  print('raised', type(e).__name__)\n"
      "import jax\n"
      "print('tensorflow' in sys.modules, jax.config.jax_default_prng_impl)\n")
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  env.pop("JAX_DEFAULT_PRNG_IMPL", None)
  out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
  return out.stdout


def test_predict_job_does_not_start_tensorflow(tmp_path):
  out = _run_main(["--config=configs/predict.py", f"--workdir={tmp_path / 'w'}",
                   f"--config.model_workdir={tmp_path / 'no_such_model'}"], tmp_path)
  # The job fails (no trained model there) after dispatch; what matters is what it imported.
  assert "raised" in out
  assert out.split()[-2:] == ["False", "rbg"], out


def test_training_jobs_start_tensorflow_for_tfds_and_tensorboard(tmp_path):
  out = _run_main(["--config=configs/classifier.py", f"--workdir={tmp_path / 'w'}",
                   "--config.task=no_such_task"], tmp_path)
  # An unknown task fails fast, after main.py started TensorFlow and applied the JAX settings.
  assert "raised" in out and out.split()[-2:] == ["True", "rbg"], out
