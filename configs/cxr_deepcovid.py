"""DeepCovid ResNet-18: frozen ImageNet backbone, head-only SGD, StepLR 7 / 0.1 (seed 001).

  python main.py --config=configs/cxr_deepcovid.py --workdir=runs/cxr_deepcovid
  python main.py --config=configs/cxr_deepcovid.py:paper --workdir=runs/cxr_deepcovid_paper \
    --config.model.pretrained_path=/path/resnet18-f37072fd.safetensors

Recipe (reference/xray_gan_thesis.md §3.7, §4.3; DeepCovid `ResNet18_train.py`): binary COVID
vs non-COVID, torchvision ResNet-18 with every backbone parameter frozen and `fc` replaced by
Linear(512 → 2) + softmax cross-entropy, SGD momentum 0.9 on the head only, lr 1e-3 (thesis),
StepLR(step 7 epochs, γ 0.1), batch 20, 50 epochs, ImageNet mean/std on replicated gray,
the weights of the best validation accuracy kept. RandomResizedCrop(224) is approximated by
a zoom of ±25 % (no random-resized-crop field). The frozen backbone's BatchNorm statistics
still adapt, as in torch's train() mode. The ImageNet file is torchvision's resnet18-f37072fd.pth
(IMAGENET1K_V1) converted once to safetensors (command in prepnet_jax/models/pretrained.py); it
needs width ×1, i.e. the 'paper' preset. Without it the frozen backbone is random, a departure
the log names: only the linear head learns, so expect a weak classifier.
Thesis: specificity 0.998 but COVID sensitivity 0.51 on the provided split; 93 % accuracy and
no false negatives on "312 real + 312 GAN images" — that run is
configs/augment_experiment.py:cxr_deepcovid with --config.extra.per_class='(0, 312)'.

'cpu' (default): the phantom COVIDx site at 64 px, width ×0.25, 10 epochs; 38 s of CPU time
(2 min wall on a shared 2-core machine). Measured without ImageNet weights: COVIDx test
balanced accuracy 0.46, AUC 0.58 — chance, as a linear head on a random frozen backbone must be.
'paper': 224 px, width ×1, 50 epochs.
"""

from configs import classifier, common

PRESETS = ("cpu", "paper")


def get_config(preset=None):
  preset = common.parse_preset(preset, PRESETS)
  paper = preset == "paper"
  c = classifier.get_config()
  c.preset = preset
  c.data.train = "phantom_cxr/covidx"
  c.data.eval = ["phantom_cxr/covidx", "phantom_cxr/ulm"]
  c.data.class_names = ["non-COVID", "COVID"]

  c.preprocess.image_size = 224 if paper else 64
  c.preprocess.channels = 3
  c.preprocess.grayscale = True
  c.preprocess.equalize = False
  c.preprocess.value_range = "imagenet"
  c.preprocess.augment.affine_scale = 0.25

  c.model.name = "resnet18"
  c.model.width_multiplier = 1.0 if paper else 0.25
  c.model.binary_single_logit = False
  c.model.freeze_backbone = True

  c.optim.name = "sgd"
  c.optim.learning_rate = 1e-3
  c.optim.momentum = 0.9
  c.optim.weight_decay = 0.0
  c.optim.schedule = "step"
  c.optim.step_epochs = 7
  c.optim.gamma = 0.1
  c.batch_size = 20
  c.num_epochs = 50 if paper else 10
  c.select_metric = "accuracy"
  return c
