"""ResNet50, 5 head-only epochs then 30 epochs of one-cycle (max lr 6e-3), Adam, batch 16 (seed 004).

  python main.py --config=configs/cxr_resnet50_onecycle.py --workdir=runs/cxr_resnet50_onecycle
  python main.py --config=configs/cxr_resnet50_onecycle.py:paper --workdir=runs/cxr_resnet50_onecycle_paper \
    --config.model.pretrained_path=/path/resnet50-0676ba61.safetensors

Task 'cxr_recipe' (prepnet_jax/tasks/classifier/recipes.py). Recipe (reference/cxr_papers.md §004.3):
binary COVID-positive vs -negative, ImageNet ResNet50 with a new Linear(2048 → 2) + softmax,
Adam (0.9, 0.999), no weight decay or dropout, batch 16. Phase 1 (`<workdir>/head_only`):
5 epochs training only the new layer at a constant lr 1e-3. Phase 2 (`<workdir>/finetune`,
started from phase 1's best state): every layer, 30 epochs of one-cycle with max lr 6e-3,
div factor 6 (so it starts at the stated 1e-3), pct_start 0.25 and final div 1e4 (gaps, fastai
defaults). Augmentation: horizontal flip and rotation ±5°. Gaps and departures: inputs use
ImageNet statistics (the paper's COVIDx V8B mean/std are not published and there is no such
preprocessing field); the ImageNet file is torchvision's resnet50-0676ba61.pth (IMAGENET1K_V1)
converted once to safetensors (command in prepnet_jax/models/pretrained.py), and without one the
network starts from random weights.
Data: COVIDx train, the COVIDx split for validation, and the 'ulm' site as the external
"local hospital" test set. Paper (Ulm test): accuracy 89.49 %, COVID recall 76.36 %, precision
90.32 %; with 20k synthetic images 92.49 / 95.45 / 84.00 % — that comparison is
configs/augment_experiment.py:cxr_resnet50_onecycle.

'cpu' (default): 64 px, width ×0.25, 2 + 6 epochs; 94 s of CPU time (5 min wall on a shared
2-core machine). Measured (random init): COVIDx test accuracy 0.93, COVID recall 0.80,
precision 0.89, AUC 0.89; on the external 'ulm' site every image is called COVID (test
accuracy 0.20 = its COVID share), consistent with a learned source shortcut (the phantom's
COVIDx COVID images come from other sources than its negatives).
'paper': 224 px, width ×1, 5 + 30 epochs.
"""

from configs import classifier, common

PRESETS = ("cpu", "paper")


def get_config(preset=None):
  preset = common.parse_preset(preset, PRESETS)
  paper = preset == "paper"
  c = classifier.get_config()
  c.task = "cxr_recipe"
  c.preset = preset
  c.data.train = "phantom_cxr/covidx"
  c.data.eval = ["phantom_cxr/covidx", "phantom_cxr/ulm"]
  c.data.class_names = ["COVID-negative", "COVID-positive"]

  c.preprocess.image_size = 224 if paper else 64
  c.preprocess.channels = 3
  c.preprocess.grayscale = True
  c.preprocess.equalize = False
  c.preprocess.value_range = "imagenet"
  c.preprocess.augment.hflip = True
  c.preprocess.augment.affine_degrees = 5.0

  c.model.name = "resnet50"
  c.model.width_multiplier = 1.0 if paper else 0.25
  c.model.binary_single_logit = False

  c.optim.name = "adam"
  c.optim.learning_rate = 6e-3
  c.optim.weight_decay = 0.0
  c.optim.schedule = "onecycle"
  c.optim.onecycle_pct_start = 0.25
  c.optim.onecycle_div_factor = 6.0
  c.optim.onecycle_final_div_factor = 1e4
  c.batch_size = 16
  c.num_epochs = 30 if paper else 6
  c.head_only_epochs = 5 if paper else 2
  c.head_only_learning_rate = 1e-3
  c.early_stopping_patience = 0
  c.select_metric = "accuracy"
  return c
