"""ResNet18 with SGD, ExponentialLR(0.9) and early stopping, 3 classes (seed 003, COVID-GAN).

  python main.py --config=configs/cxr_resnet18_exp.py --workdir=runs/cxr_resnet18_exp
  python main.py --config=configs/cxr_resnet18_exp.py:paper --workdir=runs/cxr_resnet18_exp_paper

Task 'cxr_recipe' (prepnet_jax/tasks/classifier/recipes.py: the classifier task plus early stopping).
Recipe (reference/cxr_papers.md §003.2.1, §003.3, §003.8): COVID-19 / pneumonia / normal
(`label3`), vanilla ResNet18 with BatchNorm momentum 0.5, SGD with ExponentialLR(γ 0.9)
stepped once per epoch, class-weighted cross-entropy, training stopped once the validation
accuracy has not improved for 3 epochs (at most 10 epochs), 384 × 384 × 3 inputs. Gaps,
filled as flagged: lr 0.01, momentum 0.9, batch 16, inverse-frequency class weights,
ImageNet normalisation, random initialisation (pretraining is not stated). The study's data
(pneumonia-heavy, mostly pediatric, 7 % COVID) is imitated by the phantom's 'pediatric' site.
Paper: validation accuracy 77.78 % (21/27 images).

'cpu' (default): 64 px, width ×0.25; 102 s of CPU time (3.5 min wall on a shared 2-core
machine; early stopping re-compiles the step once per epoch). Measured: stopped at epoch 7
(best epoch 4), pediatric test balanced accuracy 0.33, AUC 0.59 — chance: the phantom's
pediatric site has 130 training images and is hard at 64 px (a small CNN with Adam reaches 0.46).
'paper': 384 px, width ×1.
"""

from configs import classifier, common

PRESETS = ("cpu", "paper")


def get_config(preset=None):
  preset = common.parse_preset(preset, PRESETS)
  paper = preset == "paper"
  c = classifier.get_config()
  c.task = "cxr_recipe"
  c.preset = preset
  c.data.train = "phantom_cxr/pediatric"
  c.data.eval = ["phantom_cxr/pediatric", "phantom_cxr/covidx", "phantom_cxr/ulm"]
  c.data.label_key = "label3"
  c.data.num_classes = 3
  c.data.class_names = ["normal", "pneumonia", "COVID-19"]
  c.class_weights = "balanced"

  c.preprocess.image_size = 384 if paper else 64
  c.preprocess.channels = 3
  c.preprocess.grayscale = True
  c.preprocess.equalize = False
  c.preprocess.value_range = "imagenet"

  c.model.name = "resnet18"
  c.model.width_multiplier = 1.0 if paper else 0.25
  c.model.kwargs = {"bn_momentum": 0.5}

  c.optim.name = "sgd"
  c.optim.learning_rate = 0.01
  c.optim.momentum = 0.9
  c.optim.weight_decay = 0.0
  c.optim.schedule = "exponential"
  c.optim.gamma = 0.9
  c.batch_size = 16
  c.num_epochs = 10
  c.select_metric = "accuracy"
  c.early_stopping_patience = 3
  c.head_only_epochs = 0
  return c
