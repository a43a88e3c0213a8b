"""PrepNet rows over 3 seeds (mean ± std) on the CT phantom: the project's headline experiment.

  python main.py --config=configs/prepnet_experiment.py --workdir=runs/prepnet_experiment

Rows: Original (no AE), Auto-encoder, PrepNet reproduction, + up-sampling, + grayscaling,
+ both, ResNet18 E_cov, + crop augmentation. Δ is in pp against "Original"; the verdicts call a
change real only when it exceeds the seed-to-seed spread. Rows that differ only on the E_cov
side reuse the AE/E_img phases of an earlier row with the same seed (bit-identical), so the
8 rows cost about 4 AE trainings per seed: roughly 40–50 minutes on 2 CPU cores for seeds 0, 1, 2.
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
      dict(name="ResNet18 COVID classifier", overrides={"e_cov.name": "resnet18", "e_cov.width_multiplier": 0.25,
                                                        "e_cov.kwargs": {"dropout_rate": 0.2}}),
      # Table 4.7's crop-with-margin augmentation, on top of the main job's flips/affine.
      dict(name="+ crop augmentation", overrides={"preprocess.augment.crop_resize": 72,
                                                  "preprocess.augment.crop_margin": 4}),
  )
  c.baseline_row = "Original"
  return c
