"""ResNet34, the best baseline of seed 003 and its augmentation target (ExponentialLR, early stop).

  python main.py --config=configs/cxr_resnet34.py --workdir=runs/cxr_resnet34
  python main.py --config=configs/cxr_resnet34.py:paper --workdir=runs/cxr_resnet34_paper

The recipe of configs/cxr_resnet18_exp.py (SGD, ExponentialLR 0.9, early stopping after 3
epochs without a better validation accuracy, class weights, BatchNorm momentum 0.5) on a
ResNet34 (BasicBlock 3-4-6-3). Paper: validation accuracy 88.89 % (24/27), and with added
VAE-GAN images 94.26 % — the augmentation comparison is
configs/augment_experiment.py:cxr_resnet34.

'cpu' (default): 64 px, width ×0.25; 199 s of CPU time (7 min wall on a shared 2-core
machine). Measured: stopped at epoch 9 (best 6), pediatric test balanced accuracy 0.36, AUC 0.49
(chance; see configs/cxr_resnet18_exp.py). 'paper': 384 px, width ×1.
"""

from configs import cxr_resnet18_exp


def get_config(preset=None):
  c = cxr_resnet18_exp.get_config(preset)
  c.model.name = "resnet34"
  return c
