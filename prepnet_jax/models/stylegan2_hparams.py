"""StyleGAN2 hyperparameters: the presets, their resolution against a config and the networks
they describe (the construction of G and D from a config, as `classifier_factory` is for the
classifiers). Shared by the training task and the loader of trained generators
(`eval.generators`), which rebuilds G from the `hparams` a checkpoint's metadata holds.

Every preset-driven field of the config (`preprocess.image_size`, `model.z_dim`, ...,
`batch_size`, `total_kimg`, `lr`, `r1_gamma`, `ema_kimg`, ...) is None unless set; `Hparams`
holds the preset's value for those that are not.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from prepnet_jax.data import datasets
from prepnet_jax.models import stylegan2 as sg2

PRESETS = ("small", "low_shot", "paper256", "auto")

# Architecture fields: a checkpoint can only be resumed with the same values.
ARCH_FIELDS = ("resolution", "channels", "c_dim", "z_dim", "w_dim", "mapping_layers", "channel_base",
               "channel_max", "mbstd_group_size", "mbstd_num_channels")


def preset_values(preset: str, resolution: int | None, num_devices: int) -> dict:
  """The preset's hyperparameters (stylegan2-ada-pytorch `cfg_specs`, DiffAugment's `low_shot`).

  small     CPU-fast: 32², narrow nets; γ = 0.1 as DiffAugment's CIFAR (32²) recipe.
  low_shot  DiffAugment-stylegan2-pytorch: 300 kimg, mb 8, mbstd 4, fmaps 1, lr 0.002, γ 10,
            EMA 10 kimg, 2 mapping layers (snapshots every 10 ticks of 4 kimg).
  paper256  StyleGAN2-ADA paper: mb 64, mbstd 8, fmaps 0.5, lr 0.0025, γ 1, EMA 20, 8 layers.
  auto      StyleGAN2-ADA formulas of resolution and device count (γ = 0.0002·res²/mb, ...).
  """
  if preset == "small":
    return dict(resolution=resolution or 32, batch_size=16, total_kimg=12.0, snapshot_kimg=2.0,
                checkpoint_kimg=1.0, z_dim=64, w_dim=64, mapping_layers=2, channel_base=1024, channel_max=32,
                mbstd_group_size=4, lr=0.0025, r1_gamma=0.1, ema_kimg=5.0, ema_rampup=0.05)
  big = dict(z_dim=512, w_dim=512, channel_max=512)
  if preset == "low_shot":
    return dict(big, resolution=resolution or 256, batch_size=8, total_kimg=300.0, snapshot_kimg=40.0,
                checkpoint_kimg=10.0, mapping_layers=2, channel_base=32768, mbstd_group_size=4, lr=0.002, r1_gamma=10.0,
                ema_kimg=10.0, ema_rampup=0.0)
  if preset == "paper256":
    return dict(big, resolution=resolution or 256, batch_size=64, total_kimg=25000.0,
                snapshot_kimg=200.0, checkpoint_kimg=40.0, mapping_layers=8, channel_base=16384, mbstd_group_size=8,
                lr=0.0025, r1_gamma=1.0, ema_kimg=20.0, ema_rampup=0.0)
  if preset == "auto":
    res = resolution or 256
    mb = max(min(num_devices * min(4096 // res, 32), 64), num_devices)
    return dict(big, resolution=res, batch_size=mb, total_kimg=25000.0, snapshot_kimg=200.0,
                checkpoint_kimg=40.0, mapping_layers=2, channel_base=32768 if res >= 512 else 16384,
                mbstd_group_size=min(mb // num_devices, 4), lr=0.002 if res >= 1024 else 0.0025,
                r1_gamma=0.0002 * res**2 / mb, ema_kimg=mb * 10 / 32, ema_rampup=0.05)
  raise ValueError(f"unknown config.preset {preset!r}; expected one of {PRESETS}")


@dataclasses.dataclass(frozen=True)
class Hparams:
  """Resolved hyperparameters: the preset, overridden by every config field that is set."""
  resolution: int
  channels: int
  c_dim: int
  z_dim: int
  w_dim: int
  mapping_layers: int
  mapping_lr_multiplier: float
  w_avg_beta: float
  channel_base: int
  channel_max: int
  mbstd_group_size: int
  mbstd_num_channels: int
  batch_size: int
  # Run length and save intervals do not change the steps: left out of equality and hashing,
  # so a resumed run with a longer schedule reuses the compiled steps.
  total_kimg: float = dataclasses.field(compare=False)
  snapshot_kimg: float = dataclasses.field(compare=False)
  checkpoint_kimg: float = dataclasses.field(compare=False)
  lr: float
  betas: tuple[float, float]
  eps: float
  r1_gamma: float
  d_reg_interval: int
  pl_weight: float
  pl_decay: float
  pl_batch_shrink: int
  g_reg_interval: int
  style_mixing_prob: float
  ema_kimg: float
  ema_rampup: float | None

  @property
  def g_lazy(self) -> bool:
    return self.pl_weight > 0 and self.g_reg_interval > 0

  @property
  def d_lazy(self) -> bool:
    return self.r1_gamma > 0 and self.d_reg_interval > 0


def resolve_hparams(config, num_devices: int | None = None) -> Hparams:
  num_devices = num_devices or jax.device_count()
  values = preset_values(config.preset, config.preprocess.image_size, num_devices)
  model, train = config.model, config  # training fields sit at the top level of the config

  def pick(section, name):
    value = section[name]
    return values[name] if value is None else value

  conditional = bool(config.data.conditional)
  if conditional and datasets.class_filter(config.data):
    raise ValueError("config.data.conditional=True and config.data.class_filter are exclusive: "
                     "train one conditional model or one model per class")
  ema_rampup = float(pick(train, "ema_rampup"))
  hp = Hparams(
      resolution=int(values["resolution"]), channels=int(config.preprocess.channels),
      c_dim=int(config.data.num_classes) if conditional else 0,
      z_dim=int(pick(model, "z_dim")), w_dim=int(pick(model, "w_dim")),
      mapping_layers=int(pick(model, "mapping_layers")),
      mapping_lr_multiplier=float(model.mapping_lr_multiplier), w_avg_beta=float(model.w_avg_beta),
      channel_base=int(pick(model, "channel_base")), channel_max=int(pick(model, "channel_max")),
      mbstd_group_size=int(pick(model, "mbstd_group_size")),
      mbstd_num_channels=int(model.mbstd_num_channels),
      batch_size=int(pick(train, "batch_size")), total_kimg=float(pick(train, "total_kimg")),
      snapshot_kimg=float(pick(train, "snapshot_kimg")),
      checkpoint_kimg=float(pick(train, "checkpoint_kimg")), lr=float(pick(train, "lr")),
      betas=(float(train.adam_beta1), float(train.adam_beta2)), eps=float(train.adam_eps),
      r1_gamma=float(pick(train, "r1_gamma")), d_reg_interval=int(train.d_reg_interval),
      pl_weight=float(train.pl_weight), pl_decay=float(train.pl_decay),
      pl_batch_shrink=int(train.pl_batch_shrink), g_reg_interval=int(train.g_reg_interval),
      style_mixing_prob=float(train.style_mixing_prob), ema_kimg=float(pick(train, "ema_kimg")),
      ema_rampup=ema_rampup if ema_rampup > 0 else None)
  sg2.check_resolution(hp.resolution)
  if hp.channels not in (1, 3):
    raise ValueError(f"config.preprocess.channels must be 1 or 3, got {hp.channels}")
  if hp.batch_size % max(1, hp.pl_batch_shrink) or hp.batch_size % min(hp.mbstd_group_size, hp.batch_size):
    raise ValueError(f"config.batch_size={hp.batch_size} must be divisible by pl_batch_shrink="
                     f"{hp.pl_batch_shrink} and model.mbstd_group_size={hp.mbstd_group_size}")
  return hp


# The compute dtype is an argument, not an `Hparams` field: it changes no parameter, so checkpoints
# (whose metadata holds the Hparams) load into either precision.
def build_generator(hp: Hparams, dtype=jnp.float32) -> sg2.Generator:
  return sg2.Generator(
      hp.resolution, hp.channels, z_dim=hp.z_dim, w_dim=hp.w_dim, c_dim=hp.c_dim,
      mapping_layers=hp.mapping_layers, mapping_lr_multiplier=hp.mapping_lr_multiplier,
      w_avg_beta=hp.w_avg_beta, channel_base=hp.channel_base, channel_max=hp.channel_max, dtype=dtype)


def build_models(hp: Hparams, dtype=jnp.float32) -> tuple[sg2.Generator, sg2.Discriminator]:
  """G and D computing in `dtype` (`runtime.precision.compute_dtype(config)`)."""
  discriminator = sg2.Discriminator(
      hp.resolution, hp.channels, c_dim=hp.c_dim, channel_base=hp.channel_base,
      channel_max=hp.channel_max, mbstd_group_size=hp.mbstd_group_size,
      mbstd_num_channels=hp.mbstd_num_channels, mapping_layers=hp.mapping_layers,
      mapping_lr_multiplier=hp.mapping_lr_multiplier, dtype=dtype)
  return build_generator(hp, dtype), discriminator


def hparams_from_meta(saved: dict) -> Hparams:
  """The `Hparams` a checkpoint's metadata holds (`dataclasses.asdict` of the training run's)."""
  fields = {f.name for f in dataclasses.fields(Hparams)}
  missing = sorted(fields - set(saved))
  if missing:
    raise ValueError(f"checkpoint metadata 'hparams' lacks {missing}; was it written by task 'stylegan2'?")
  values = {k: saved[k] for k in fields}
  values["betas"] = tuple(values["betas"])
  return Hparams(**values)
