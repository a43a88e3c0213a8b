"""Sample images from any trained generator run (GAN family, VAE, VAE-GAN, StyleGAN2) as PNG files.

  python main.py --config=configs/sample.py --workdir=runs/gan_samples \
      --config.source_workdir=runs/gan --config.num_images=312
  python main.py --config=configs/sample.py --workdir=runs/sg2_samples \
      --config.source_workdir=runs/stylegan2 --config.seeds=0-63 --config.truncation_psi=0.7

Writes into `out_dir` ('' = <workdir>/samples), like stylegan2-ada's `generate.py`: one PNG per
seed of `seeds` ('0-63', '0,1,2', '(0,1,2)'; '' = `num_images` images from latent seed `seed`),
per class in `class_<k>/` (every class of a conditional model unless `label` is set; the one
class of a per-class run trained with data.class_filter=[k]), from checkpoint `step` (−1 =
latest) of `source_workdir`; plus `grid.png`, `reals.png` (as many of the run's own training
images, its data.train/train_split/class_filter, set beside the fakes) and `samples.json`.
`truncation_psi` < 1 pulls StyleGAN2's w towards w_avg (the other models have no w space and
refuse ψ ≠ 1); `noise_mode` is StyleGAN2's per-layer noise ('const' | 'random' | 'none'; the
other models have none). These are the images later added to classifier training.
Measured (2 idle CPU cores): 32 images of a 32-px StyleGAN2 'small' run from seeds 0-31 at ψ 0.7,
with grid.png and reals.png, in 4.9 s after start-up (configs/study_ulm.py's per-class run).
"""

import ml_collections


def get_config():
  c = ml_collections.ConfigDict()
  c.task = "sample"
  c.seed = 0                        # latent seed of the `num_images` images (when `seeds` is '')
  c.source_workdir = ""             # the training run (its config.json and checkpoints/)
  c.step = -1                       # checkpoint step; -1 = latest
  c.seeds = ""                      # one image per seed: '0-63', '0,1,2'; '' = use num_images
  c.num_images = 64                 # images per class when `seeds` is ''
  c.label = -1                      # conditional models: one class; -1 = every class
  c.truncation_psi = 1.0            # StyleGAN2 only (w-space truncation); 1 = none
  c.noise_mode = "const"            # StyleGAN2: 'const' | 'random' | 'none'
  c.num_reals = 64                  # training images in reals.png (at most as many as fakes; 0 = none)
  c.out_dir = ""
  c.batch_size = 256
  return c
