"""ResNet50 with the COVID-Net recipe of seed 002 (KTH): 3 classes, balanced batches, 1/1/6.

  python main.py --config=configs/cxr_resnet50_kth.py --workdir=runs/cxr_resnet50_kth
  python main.py --config=configs/cxr_resnet50_kth.py:paper --workdir=runs/cxr_resnet50_kth_paper \
    --config.model.pretrained_path=/path/resnet50-0676ba61.safetensors

Everything as configs/cxr_covidnet.py (same script with `--model resnet` in the KTH code:
Adam 2e-5, batch 8, 25 % COVID per batch, weights 1/1/6, plateau ×0.7 / 5, [0, 1] inputs),
with an ImageNet ResNet50 whose final layer becomes Linear(2048 → 3). ImageNet weights come
only from a local file (`model.pretrained_path`): torchvision's resnet50-0676ba61.pth
(IMAGENET1K_V1, what the code's `resnet50(pretrained=True)` loads) converted once to
safetensors (command in prepnet_jax/models/pretrained.py), fed [0, 1] inputs as the code does;
without one the network starts from random weights, which departs from the paper and is
logged. Paper: test accuracy 91.3 %, COVID sensitivity 74.2 % (23/31), COVID PPV 95.8 %.

'cpu' (default): 64 px, width ×0.25, 8 epochs, Adam 1e-3; 65 s of CPU time (2 min wall on a
shared 2-core machine); measured COVIDx test balanced accuracy 0.39, AUC 0.58 (random init,
mechanics only, as configs/cxr_covidnet.py).
'paper': 224 px, width ×1, Adam 2e-5, 16 epochs.
"""

from configs import cxr_covidnet


def get_config(preset=None):
  c = cxr_covidnet.get_config(preset)
  c.model.name = "resnet50"
  c.model.width_multiplier = 1.0 if c.preset == "paper" else 0.25
  c.model.kwargs = {}
  return c
