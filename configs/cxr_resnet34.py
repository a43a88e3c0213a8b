"""ResNet34, the best baseline of seed 003 and its augmentation target (ExponentialLR, early stop).

  python main.py --config=configs/cxr_resnet34.py --workdir=runs/cxr_resnet34
  python main.py --config=configs/cxr_resnet34.py:paper --workdir=runs/cxr_resnet34_paper

The recipe of configs/cxr_resnet18_exp.py (SGD, ExponentialLR 0.9, early stopping after 3
epochs without a better validation accuracy, class weights, BatchNorm momentum 0.5) on a
ResNet34 (BasicBlock 3-4-6-3). Paper: validation accuracy 88.89 % (24/27), and with added
VAE-GAN images 94.26 % — the augmentation comparison is
configs/augment_experiment.py:cxr_resnet34.

'cpu' (default): 64 px, width ×0.25; measured ≈ MEASURE on 2 CPU cores. 'paper': 384 px, width ×1.
"""

from configs import cxr_resnet18_exp


def get_config(preset=None):
  c = cxr_resnet18_exp.get_config(preset)
  c.model.name = "resnet34"
  return c
