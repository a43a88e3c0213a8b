"""A small VGG-style CNN for CPU smoke runs and small-data baselines.

Each block is two 3x3 Conv-BN-ReLU layers; every block after the first starts with a 2x2
max-pool. The head is global average pooling, dropout and a Dense 'predictions' layer, so the
model takes any input of at least 2**(len(widths)-1) pixels and any channel count.
"""

from __future__ import annotations

from prepnet_jax.models.resnet import GAPHead
from prepnet_jax.models.vgg import StagedClassifier, VGGFeatures


class SmallCNN(StagedClassifier):
  """Small classifier; params are {'backbone': conv blocks, 'head': Dense 'predictions'}.

  Stage names are 'block1'..'block{len(widths)}'; `feature_layer` (default: the last block)
  is where `features` stops and `head` resumes.
  """
  num_classes: int = 2
  widths: tuple[int, ...] = (32, 64, 128, 256)

  @property
  def stage_names(self) -> tuple[str, ...]:
    return tuple(f"block{i}" for i in range(1, len(self.widths) + 1))

  def setup(self):
    self.split_block = self.split_at_feature_layer()
    # VGG-style blocks of two bias-free Conv-BN-ReLU layers.
    self.backbone = VGGFeatures((2,) * len(self.widths), True, self.width_multiplier,
                                self.bn_momentum, self.dtype, widths=tuple(self.widths),
                                use_bias=False)
    self.classifier = GAPHead(self.num_classes, self.dropout_rate, self.dtype, name="head")
