"""The config sections every job shares, and the preset parser (imports only ml_collections).

One vocabulary everywhere:

- `data.train` — the dataset the job learns from (`'phantom_ct/sars'`, `'covidx'`, ...; PrepNet:
  a tuple of them, one per site), `data.train_split` — which split of it (default 'train'),
  `data.eval` — the datasets every evaluation table covers. Phantom/TFDS/download fields sit
  beside them (`phantom_backend`, `phantom_seed`, `phantom_overrides`, `tfds_dir`,
  `manual_dir`, `on_corrupt`) and the input pipeline's (`read_threads`, `worker_processes`,
  `prefetch_batches`, `cache_mb`).
- `preprocess.*` — size, channels, grayscale, equalisation, value range, CT window, resizing,
  classical augmentation.
- `batch_size`, `num_epochs` or `num_steps`, `log_every_steps`, `seed` at the top level, and
  `half_precision` (`top_level`): bfloat16 compute in every network the job trains.
- `optim.*` — the fields of `runtime.optimizers.make_optimizer`; a job with several networks
  has one such section per network (`optim.g` / `optim.d`, `optim.ae` / `optim.img` / `optim.cov`).
- `model.*` — the architecture.

Every field exists in the shipped config, so code reads `config.x` directly and keeps no second
set of defaults; a mistyped command-line override is an error (the config is locked).
"""

from __future__ import annotations

from typing import Sequence

import ml_collections


def parse_preset(preset: str | None, presets: Sequence[str]) -> str:
  """`configs/<x>.py:<preset>` → the preset name (the first of `presets` when none is given)."""
  preset = preset or presets[0]
  if preset not in presets:
    raise ValueError(f"unknown preset {preset!r}; expected one of {tuple(presets)} "
                     "(use --config=configs/<x>.py:<preset>)")
  return preset


def top_level(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the top-level fields every training job's config has, with one meaning everywhere.

  `half_precision`: every network the job trains computes activations, matrix products and
  convolutions in bfloat16; parameters, optimizer state, BatchNorm statistics, losses and metrics
  stay float32 (`prepnet_jax/runtime/precision.py`: why bfloat16 and no loss scaling). Meant for
  GPUs/TPUs; on CPU it is correct but no faster. Jobs that only load trained models (predict, serve,
  sample, gen_metrics) rebuild each model from its run's config.json, so it computes as it was
  trained and calibrated; the FID's Inception-v3 always runs in float32.
  """
  c.half_precision = False
  return c


def data(train, eval_: Sequence[str] = (), **fields) -> ml_collections.ConfigDict:
  """Where the examples come from; `fields` add or override task-specific data fields."""
  d = ml_collections.ConfigDict()
  d.train = train
  d.train_split = "train"
  d.eval = tuple(eval_)
  d.label_key = "label"             # 'label3' for normal/pneumonia/COVID
  d.num_classes = 2
  d.class_names = ("non-COVID", "COVID")
  # `folder:<path>` datasets: labels follow class_names, whatever the folders' sorted order. {} =
  # each class takes the sub-folder with its name, ignoring case (then also '-', '_', spaces);
  # else every sub-folder -> a class name ('' leaves it out), e.g. {'normal': 'non-COVID',
  # 'covid': 'COVID'}. A training job stores the resolved mapping here in its config.json.
  d.class_folders = {}
  d.phantom_backend = "tfds"        # prepared once into tfds_dir; 'memory' generates it on the fly (tests)
  d.phantom_seed = 0
  d.phantom_overrides = {}
  d.tfds_dir = ""                   # '' = ~/tensorflow_datasets
  d.manual_dir = ""                 # root of the user's downloads of the real datasets
  d.on_corrupt = "skip"             # 'skip' (counted, reported) or 'error'
  # The input pipeline (data/pipeline.py): examples are read, decoded and preprocessed one by one
  # in `read_threads` threads (in each of `worker_processes` processes; 0 = this process), and
  # `prefetch_batches` batches wait ready. Preprocessed examples are kept in memory only when
  # they fit in `cache_mb` MB (small data: no decoding after the first pass); larger data streams,
  # so memory does not grow with the dataset.
  d.read_threads = 2
  d.worker_processes = 0
  d.prefetch_batches = 4
  d.cache_mb = 256
  d.update(fields)
  return d


def augment(**fields) -> ml_collections.ConfigDict:
  """Classical augmentation of the training images (all off by default).

  gamma, blur_sharpen, noise, low_resolution: BigAug's stacked appearance transforms (Zhang et al.
  2020; `data.transforms.random_appearance`), each applied with probability bigaug_probability.
  """
  a = ml_collections.ConfigDict(dict(
      crop_resize=0, crop_margin=0, hflip=False, affine_degrees=0.0, affine_translate=0.0,
      affine_scale=0.0, brightness=0.0, contrast=0.0,
      gamma=0.0,                    # γ = exp(U(-gamma, gamma)), x -> 255·(x/255)^γ
      blur_sharpen=0.0,             # max Gaussian σ (px): blur, or unsharp mask, 1/2 each
      noise=0.0,                    # Gaussian noise σ ~ U(0, noise) as a fraction of 255
      low_resolution=0.0,           # [0, 1): shrink by U(1 - low_resolution, 1) and back
      bigaug_probability=0.5))      # each of the four, independently (BigAug's 0.5)
  a.update(fields)
  return a


def preprocess(image_size: int, channels: int, value_range: str, **fields) -> ml_collections.ConfigDict:
  """Decoding to model input: size, channels, intensity handling and the value range."""
  p = ml_collections.ConfigDict()
  p.image_size = image_size
  p.channels = channels
  p.grayscale = True
  p.equalize = False
  p.value_range = value_range       # 'imagenet' | 'unit' ([0, 1]) | 'symmetric' ([-1, 1])
  p.ct_window = ()                  # (level, width) in HU for CT volumes; () = the dataset's own
  p.resize_method = "bilinear"
  p.augment = augment()
  p.update(fields)
  return p


def optim(name: str = "adamw", learning_rate: float = 1e-3, **fields) -> ml_collections.ConfigDict:
  """Every field `runtime.optimizers.make_optimizer` reads (PyTorch's defaults where it has them)."""
  o = ml_collections.ConfigDict(dict(
      name=name, learning_rate=learning_rate, weight_decay=0.0, momentum=0.9, nesterov=False,
      b1=0.9, b2=0.999, eps=1e-8, rms_decay=0.9, grad_clip=0.0,
      schedule="constant",          # constant | step | exponential | cosine | onecycle | plateau
      warmup_epochs=0.0, step_epochs=7, gamma=0.1,
      onecycle_pct_start=0.3, onecycle_div_factor=25.0, onecycle_final_div_factor=1e4,
      plateau_patience=5, plateau_factor=0.1, plateau_min_lr=0.0))
  o.update(fields)
  return o


def classifier_model(name: str, width_multiplier: float = 1.0, **fields) -> ml_collections.ConfigDict:
  """A VGG / ResNet / COVID-Net / small-CNN classifier and its optional local ImageNet weights."""
  m = ml_collections.ConfigDict()
  m.name = name
  m.width_multiplier = width_multiplier
  m.dropout_rate = 0.0
  m.binary_single_logit = True      # binary tasks: one logit + BCE, as the studies do
  m.pretrained_path = ""            # local torchvision .safetensors/.npz or Keras .h5; never downloaded
  m.pretrained_sha256 = ""
  m.freeze_backbone = False
  m.kwargs = {}
  m.update(fields)
  return m
