"""Peak memory of a training job does not grow with the dataset (issue #14, 3b).

The classifier job (training, per-epoch validation, calibration on val/test) runs
on a folder of 1,000 and of 4,000 JPEGs (256², image_size 224, RGB): preprocessed, one such
example is 0.6 MB in float32, so holding the training set would add ~1.7 GB for the larger
folder. Streaming keeps the peak RSS difference well under 500 MB.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

from helpers import REPO

# Runs main.py in this interpreter and prints its peak RSS (kB) however it exits.
_MEASURE = (
    "import resource, runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n"
    "  runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "finally:\n"
    "  print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n")


def _jpeg_folder(root, n: int, size: int = 256) -> str:
  rng = np.random.default_rng(n)
  base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
  for i in range(n):
    label = ("non-COVID", "COVID")[i % 2]
    os.makedirs(os.path.join(root, label), exist_ok=True)
    image = np.roll(base, i, axis=0) // (1 + i % 2)  # a class-dependent intensity
    Image.fromarray(image).save(os.path.join(root, label, f"patient{i:05d}.jpg"), quality=90)
  return str(root)


def _peak_rss_mb(folder: str, workdir) -> float:
  cmd = [sys.executable, "-c", _MEASURE, os.path.join(REPO, "main.py"),
         f"--config={os.path.join(REPO, 'configs', 'classifier.py')}", f"--workdir={workdir}",
         f"--config.data.train=folder:{folder}", "--config.data.eval=()",
         "--config.preprocess.image_size=224", "--config.preprocess.grayscale=False",
         "--config.model.name=resnet18", "--config.model.width_multiplier=0.0625",
         "--config.num_epochs=1", "--config.batch_size=32"]
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  line = [l for l in run.stdout.splitlines() if l.startswith("PEAK_RSS_KB")][-1]
  return int(line.split()[1]) / 1024


def test_peak_memory_does_not_grow_with_dataset_size(tmp_path):
  small = _peak_rss_mb(_jpeg_folder(tmp_path / "d1000", 1000), tmp_path / "w1000")
  large = _peak_rss_mb(_jpeg_folder(tmp_path / "d4000", 4000), tmp_path / "w4000")
  print(f"peak RSS: 1,000 images {small:.0f} MB, 4,000 images {large:.0f} MB")
  assert large - small < 500, (small, large)
