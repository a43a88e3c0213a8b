"""PrepNet rows over 3 seeds (mean ± std) on the CT phantom: the project's headline experiment.

  python main.py --config=configs/prepnet_experiment.py --workdir=runs/prepnet_experiment

Rows: Original (no AE), Auto-encoder, PrepNet reproduction, + up-sampling, + grayscaling,
+ both, ResNet18 E_cov, augmentation. Δ is in pp against "Original". About 12 × the main job's
per-row time (roughly 40–60 minutes on 2 CPU cores); seeds 0, 1, 2.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  c.seeds = (0, 1, 2)
  c.rows = (
      dict(name="Original", overrides={"schedule": "none"}),
      dict(name="Auto-encoder", overrides={"schedule": "ae_only"}),
      dict(name="PrepNet reproduction", overrides={}),
      dict(name="+ up-sampling", overrides={"upsample": True}),
      dict(name="+ grayscaling", overrides={"grayscale_cov": True}),
      dict(name="+ up-sampling + grayscaling", overrides={"upsample": True, "grayscale_cov": True}),
      dict(name="ResNet18 COVID classifier", overrides={"e_cov.name": "resnet18", "e_cov.width_multiplier": 0.25}),
      dict(name="Augmentation", overrides={"preprocess.augment.crop_resize": 54, "preprocess.augment.crop_margin": 2,
                                           "preprocess.augment.hflip": True}),
  )
  c.baseline_row = "Original"
  return c
