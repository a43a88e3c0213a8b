"""VGG-16 with BatchNorm, SGD 0.005 and StepLR(2, 0.9), early stopping (seed 003, COVID-GAN).

  python main.py --config=configs/cxr_vgg16_step.py --workdir=runs/cxr_vgg16_step
  python main.py --config=configs/cxr_vgg16_step.py:paper --workdir=runs/cxr_vgg16_step_paper

Task 'cxr_recipe'. Recipe (reference/cxr_papers.md §003.2.1): 13 convs in blocks 2-2-3-3-3
(the paper's "[2,2,3,3]" sums to 10), each Conv → BN → ReLU, adaptive average pooling, fully
connected 4096 → 4096 → 3 with dropout 0.3, SGD lr 0.005 (momentum 0.9, a gap), StepLR every 2
epochs with γ 0.9, batch 8, best at 17 epochs; the data, class weights and early stopping
(3 epochs) of configs/cxr_resnet18_exp.py. Paper: validation accuracy 75.00 %.

'cpu' (default): 64 px, width ×0.125, at most 10 epochs; 115 s of CPU time (3.6 min wall on a
shared 2-core machine). Measured: stopped at epoch 8 (best 5), pediatric test balanced accuracy
0.31, AUC 0.50 (chance; see configs/cxr_resnet18_exp.py).
'paper': 384 px, width ×1, at most 17 epochs.
"""

from configs import cxr_resnet18_exp


def get_config(preset=None):
  c = cxr_resnet18_exp.get_config(preset)
  paper = c.preset == "paper"
  c.model.name = "vgg16_bn"
  c.model.width_multiplier = 1.0 if paper else 0.125
  c.model.dropout_rate = 0.3
  c.model.kwargs = {}
  c.optim.learning_rate = 0.005
  c.optim.schedule = "step"
  c.optim.step_epochs = 2
  c.optim.gamma = 0.9
  c.batch_size = 8
  c.num_epochs = 17 if paper else 10
  return c
