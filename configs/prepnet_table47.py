"""PrepNet Table 4.7 'further experiments': ResNet18 E_cov, augmentation (crop with margin, flips) and grayscaling (luma x3 before E_cov), all with a pre-trained AE.

  python main.py --config=configs/prepnet_table47.py --workdir=runs/prepnet_table47

CPU-fast phantom sizes from configs/prepnet.py (add --config.seeds='(0,1,2)' for mean ± std);
configs/prepnet_thesis.py holds the faithful 224×224 settings to combine with these rows.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  # The thesis's rows train E_cov without augmentation except the "Augmentation" row.
  c.preprocess.augment.hflip = False
  c.preprocess.augment.affine_degrees = c.preprocess.augment.affine_translate = c.preprocess.augment.affine_scale = 0.0
  c.rows = (dict(name="PrepNet reproduction", overrides={"schedule": "pretrained_ae"}),
      dict(name="ResNet18 COVID classifier", overrides={"schedule": "pretrained_ae", "e_cov.name": "resnet18", "e_cov.width_multiplier": 0.25, "e_cov.kwargs": {"dropout_rate": 0.2}}),
      dict(name="Augmentation", overrides={"schedule": "pretrained_ae", "preprocess.augment.crop_resize": 72, "preprocess.augment.crop_margin": 4, "preprocess.augment.hflip": True}),
      dict(name="Grayscaling", overrides={"schedule": "pretrained_ae", "grayscale_cov": True}))
  c.baseline_row = "PrepNet reproduction"
  return c
