"""Sample images from a trained generative run (GAN family, VAE, VAE-GAN) as PNG files.

  python main.py --config=configs/sample.py --workdir=runs/gan_samples \
      --config.source_workdir=runs/gan --config.num_images=312

Writes `num_images` PNGs (per class, in `class_<k>/`, for conditional models unless `label` is
given) from checkpoint `step` (−1 = latest) of `source_workdir`, plus `grid.png` and
`samples.json` (source, step, count, seed) into `out_dir` ('' = <workdir>/samples). Seconds on CPU.
These are the images later added to classifier training.
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.task = "sample"
  c.seed = 0
  c.source_workdir = ""             # the training run (its config.json and checkpoints/)
  c.step = -1                       # checkpoint step; -1 = latest
  c.num_images = 64
  c.label = -1                      # conditional models: one class; -1 = every class
  c.out_dir = ""
  c.batch_size = 256
  return c
