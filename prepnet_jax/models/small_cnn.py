"""A small VGG-style CNN for CPU smoke runs and small-data baselines.

Each block is two 3x3 Conv-BN-ReLU layers; every block after the first starts with a 2x2
max-pool. The head is global average pooling, dropout and a Dense 'predictions' layer, so the
model takes any input of at least 2**(len(widths)-1) pixels and any channel count.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from prepnet_jax.models.resnet import GAPHead
from prepnet_jax.models.vgg import StagedClassifier, conv3x3_bn_relu, max_pool2, scaled


class SmallCNNFeatures(nn.Module):
  """Blocks start..stop (1-based) of the small CNN."""
  widths: tuple[int, ...]
  width_multiplier: float = 1.0
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, start: int = 1, stop: int | None = None):
    stop = len(self.widths) if stop is None else stop
    for block in range(start, stop + 1):
      if block > 1:
        x = max_pool2(x)
      width = scaled(self.widths[block - 1], self.width_multiplier)
      for conv in (1, 2):
        x = conv3x3_bn_relu(x, width, f"block{block}_conv{conv}", train=train, use_bias=False,
                            bn_momentum=self.bn_momentum, dtype=self.dtype)
    return x


class SmallCNN(StagedClassifier):
  """Small classifier; params are {'backbone': conv blocks, 'head': Dense 'predictions'}.

  Stage names are 'block1'..'block{len(widths)}'; `feature_layer` (default: the last block)
  is where `features` stops and `head` resumes.
  """
  num_classes: int = 2
  widths: tuple[int, ...] = (32, 64, 128, 256)
  dropout_rate: float = 0.0
  width_multiplier: float = 1.0
  feature_layer: str | None = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  @property
  def stage_names(self) -> tuple[str, ...]:
    return tuple(f"block{i}" for i in range(1, len(self.widths) + 1))

  def setup(self):
    layer = self.feature_layer or self.stage_names[-1]
    if layer not in self.stage_names:
      raise ValueError(f"SmallCNN feature_layer must be one of {self.stage_names}, got {layer!r}")
    self.split_block = self.stage_names.index(layer) + 1
    self.backbone = SmallCNNFeatures(tuple(self.widths), self.width_multiplier,
                                     self.bn_momentum, self.dtype)
    self.classifier = GAPHead(self.num_classes, self.dropout_rate, self.dtype, name="head")
