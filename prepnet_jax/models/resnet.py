"""ResNet18/34/50 in two layouts: torchvision (the default) and Keras applications.

The layouts differ where it matters for weight import: torchvision convs have no bias and a
bottleneck block strides in its 3x3 conv ("v1.5"), Keras convs have a bias, the bottleneck
strides in its first 1x1 conv, and BatchNorm uses eps 1.001e-5. ResNet50 has 25,557,032
parameters in the torchvision layout and 25,583,592 in the Keras one (Keras' `count_params()`
says 25,636,712 because it adds the BatchNorm moving statistics). Layer names follow Keras
(`conv1_conv`, `conv2_block1/1_conv`, ..., `predictions`) in both layouts so one import path
serves both; stage names are 'conv1' (stem + max-pool) and 'conv2'..'conv5' (torchvision's
layer1..layer4).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from prepnet_jax.models.conv import Conv
from prepnet_jax.models.vgg import StagedClassifier, conv_init, scaled

RESNET_STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3)}
RESNET_STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")
STAGE_WIDTHS = (64, 128, 256, 512)
LAYOUTS = ("torchvision", "keras")


def _padding(kernel: int):
  return ((kernel // 2, kernel // 2),) * 2


def conv_bn(x, features, kernel, strides, train, prefix, layout, bn_momentum, dtype):
  """Conv + BatchNorm with the layout's bias and epsilon; call inside a compact method."""
  keras = layout == "keras"
  x = Conv(features, (kernel, kernel), strides=(strides, strides), padding=_padding(kernel),
           use_bias=keras, kernel_init=conv_init, dtype=dtype, name=f"{prefix}_conv")(x)
  return nn.BatchNorm(use_running_average=not train, momentum=bn_momentum,
                      epsilon=1.001e-5 if keras else 1e-5, dtype=dtype, name=f"{prefix}_bn")(x)


class BasicBlock(nn.Module):
  """Two 3x3 convs (ResNet18/34); a 1x1 projection when the shape changes."""
  width: int
  strides: int
  layout: str
  bn_momentum: float
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    common = dict(train=train, layout=self.layout, bn_momentum=self.bn_momentum, dtype=self.dtype)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.width:
      shortcut = conv_bn(x, self.width, 1, self.strides, prefix="0", **common)
    y = nn.relu(conv_bn(x, self.width, 3, self.strides, prefix="1", **common))
    y = conv_bn(y, self.width, 3, 1, prefix="2", **common)
    return nn.relu(shortcut + y)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 -> 1x1 (x4) bottleneck (ResNet50); the layout decides which conv strides."""
  width: int
  strides: int
  layout: str
  bn_momentum: float
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    common = dict(train=train, layout=self.layout, bn_momentum=self.bn_momentum, dtype=self.dtype)
    out_width = 4 * self.width
    stride_1x1, stride_3x3 = (self.strides, 1) if self.layout == "keras" else (1, self.strides)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != out_width:
      shortcut = conv_bn(x, out_width, 1, self.strides, prefix="0", **common)
    y = nn.relu(conv_bn(x, self.width, 1, stride_1x1, prefix="1", **common))
    y = nn.relu(conv_bn(y, self.width, 3, stride_3x3, prefix="2", **common))
    y = conv_bn(y, out_width, 1, 1, prefix="3", **common)
    return nn.relu(shortcut + y)


class ResNetFeatures(nn.Module):
  """Stem and residual stages, runnable one stage range at a time (1 = 'conv1' ... 5 = 'conv5')."""
  depth: int
  width_multiplier: float = 1.0
  layout: str = "torchvision"
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, start: int = 1, stop: int = 5):
    block_cls = BottleneckBlock if self.depth == 50 else BasicBlock
    for stage in range(start, stop + 1):
      if stage == 1:
        x = conv_bn(x, scaled(64, self.width_multiplier), 7, 2, train=train, prefix="conv1",
                    layout=self.layout, bn_momentum=self.bn_momentum, dtype=self.dtype)
        x = nn.max_pool(nn.relu(x), (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        continue
      width = scaled(STAGE_WIDTHS[stage - 2], self.width_multiplier)
      for block in range(1, RESNET_STAGE_SIZES[self.depth][stage - 2] + 1):
        strides = 2 if block == 1 and stage > 2 else 1
        x = block_cls(width, strides, self.layout, self.bn_momentum, self.dtype,
                      name=f"conv{stage}_block{block}")(x, train)
    return x


class GAPHead(nn.Module):
  """Global average pooling -> dropout -> Dense 'predictions' (Keras' ResNet top)."""
  num_classes: int
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(jnp.mean(x, axis=(1, 2)))
    return nn.Dense(self.num_classes, dtype=self.dtype, name="predictions")(x).astype(jnp.float32)


class ResNet(StagedClassifier):
  """ResNet classifier; params are {'backbone': stem + stages, 'head': Dense 'predictions'}.

  The head is global average pooling, dropout (`dropout_rate`, 0 = torchvision) and one Dense.
  `feature_layer` (one of `RESNET_STAGES`, default 'conv5' = torchvision layer4, the Grad-CAM
  target of paper 002) is where `features` stops and `head` resumes.
  """
  depth: int = 50
  layout: str = "torchvision"

  @property
  def stage_names(self) -> tuple[str, ...]:
    return RESNET_STAGES

  def setup(self):
    if self.depth not in RESNET_STAGE_SIZES:
      raise ValueError(f"ResNet depth must be one of {sorted(RESNET_STAGE_SIZES)}, "
                       f"got {self.depth}")
    if self.layout not in LAYOUTS:
      raise ValueError(f"ResNet layout must be one of {LAYOUTS}, got {self.layout!r}")
    self.split_block = self.split_at_feature_layer()
    self.backbone = ResNetFeatures(self.depth, self.width_multiplier, self.layout,
                                   self.bn_momentum, self.dtype)
    self.classifier = GAPHead(self.num_classes, self.dropout_rate, self.dtype, name="head")
