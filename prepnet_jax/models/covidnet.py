"""COVID-Net: a re-implementation of the KTH PyTorch reproduction (paper 002, `model_covid.py`).

Linda Wang's original COVID-Net architecture code is not public (it was built with the
proprietary GenSynth), so this follows the KTH code description "as implemented": PEPX blocks
of plain convs (no BatchNorm, no activations inside), dense additive skip connections inside
each stage, 1x1 "shortcut" convs between stages, and a 1024-256-classes MLP on the flattened
last map. With 224x224x3 input and 3 classes it has 134,513,939 parameters.

Wiring quirk: the KTH code feeds pexp4_1 with mp(p32) twice and never uses mp(p33).
`faithful_bug=True` (default) keeps that for a faithful replication; False sums p31..p36.
Flatten order is NHWC (torch flattens C,H,W), which only matters when porting torch weights.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from prepnet_jax.models.conv import Conv
from prepnet_jax.models.vgg import max_pool2, scaled

STAGE_WIDTHS = (256, 512, 1024, 2048)
STAGE_BLOCKS = (3, 4, 6, 3)
COVIDNET_STAGES = ("stage4",)

# torch's default Conv/Linear kernel init (kaiming-uniform, a=sqrt(5)): the KTH model trains
# from scratch without BatchNorm, so its activation scale depends on this choice.
torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class PEPX(nn.Module):
  """Projection-Expansion-depthwise-Projection-eXtension, exactly as in the KTH code."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n_in = x.shape[-1]
    half, three_quarters = max(1, n_in // 2), max(1, 3 * n_in // 4)
    conv1x1 = lambda width, name: Conv(width, (1, 1), kernel_init=torch_default_init,
                                       dtype=self.dtype, name=name)
    x = conv1x1(half, "project_in")(x)
    x = conv1x1(three_quarters, "expand")(x)
    x = Conv(three_quarters, (3, 3), padding=((1, 1), (1, 1)),
             feature_group_count=three_quarters, kernel_init=torch_default_init,
             dtype=self.dtype, name="depthwise")(x)
    x = conv1x1(half, "project_out")(x)
    return conv1x1(self.features, "extend")(x)


class COVIDNetFeatures(nn.Module):
  """Stem and the four PEPX stages; returns A = p41 + p42 + p43 + c4 (the Grad-CAM map)."""
  width_multiplier: float = 1.0
  faithful_bug: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    width = lambda c: scaled(c, self.width_multiplier)
    conv = lambda c, kernel, name, **kw: Conv(c, kernel, kernel_init=torch_default_init,
                                              dtype=self.dtype, name=name, **kw)
    x = conv(width(64), (7, 7), "conv1_7x7", strides=(2, 2), padding=((3, 3), (3, 3)))(x)
    stage_input = max_pool2(nn.relu(x))
    shortcut = conv(width(STAGE_WIDTHS[0]), (1, 1), "conv1_1x1")(stage_input)
    for stage, (stage_width, num_blocks) in enumerate(zip(STAGE_WIDTHS, STAGE_BLOCKS), start=1):
      outputs = []
      for block in range(1, num_blocks + 1):
        block_input = stage_input if block == 1 else sum(outputs) + shortcut
        pepx = PEPX(width(stage_width), self.dtype, name=f"pexp{stage}_{block}")
        outputs.append(pepx(block_input))
      if stage == len(STAGE_WIDTHS):
        return sum(outputs) + shortcut
      next_shortcut = conv(width(STAGE_WIDTHS[stage]), (1, 1),
                           f"conv{stage + 1}_1x1")(sum(outputs) + shortcut)
      pooled_outputs = list(outputs)
      if stage == 3 and self.faithful_bug:
        pooled_outputs[2] = outputs[1]
      stage_input = sum(max_pool2(y) for y in pooled_outputs) + max_pool2(shortcut)
      shortcut = max_pool2(next_shortcut)


class COVIDNetHead(nn.Module):
  """Flatten -> fc1 (1024) -> ReLU -> fc2 (256) -> ReLU -> fc3 (classes); dropout optional."""
  num_classes: int
  width_multiplier: float = 1.0
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = x.reshape((x.shape[0], -1))
    for name, units in (("fc1", 1024), ("fc2", 256)):
      x = nn.Dense(scaled(units, self.width_multiplier), kernel_init=torch_default_init,
                   dtype=self.dtype, name=name)(x)
      x = nn.relu(x)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes, kernel_init=torch_default_init, dtype=self.dtype, name="fc3")(x)
    return x.astype(jnp.float32)


class COVIDNet(nn.Module):
  """COVID-Net classifier; params are {'backbone': stem + PEPX stages, 'head': MLP}.

  Input sides must be multiples of 32. The head's fc1 size depends on the input size (as in
  the original). Only the final map 'stage4' can be split off: the dense skip sums make
  earlier stages a set of tensors, not one feature map.
  """
  num_classes: int = 3
  faithful_bug: bool = True
  dropout_rate: float = 0.0
  width_multiplier: float = 1.0
  feature_layer: str | None = None
  dtype: Any = jnp.float32

  @property
  def stage_names(self) -> tuple[str, ...]:
    return COVIDNET_STAGES

  def setup(self):
    if (self.feature_layer or COVIDNET_STAGES[-1]) not in COVIDNET_STAGES:
      raise ValueError(f"COVIDNet feature_layer must be one of {COVIDNET_STAGES}, "
                       f"got {self.feature_layer!r}")
    self.backbone = COVIDNetFeatures(self.width_multiplier, self.faithful_bug, self.dtype)
    self.classifier = COVIDNetHead(self.num_classes, self.width_multiplier, self.dropout_rate,
                                   self.dtype, name="head")

  def features(self, x, train: bool):
    """The 'stage4' map A (B, H/32, W/32, 2048 * width_multiplier); `train` is unused (no BN)."""
    del train
    if x.shape[1] % 32 or x.shape[2] % 32:
      raise ValueError(f"COVIDNet needs image sides divisible by 32, got {x.shape[1:3]}")
    return self.backbone(x)

  def head(self, feats, train: bool):
    """Logits (B, num_classes) from A."""
    return self.classifier(feats, train)

  def __call__(self, x, train: bool):
    return self.head(self.features(x, train), train)
