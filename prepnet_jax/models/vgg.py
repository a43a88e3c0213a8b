"""VGG11/16/19 (optionally with BatchNorm) in the torchvision / Keras-applications layout.

Layer names follow Keras applications (`block{s}_conv{j}`, `fc1`, `fc2`, `predictions`) so
ImageNet `.h5` weights map one-to-one (see `keras_import.py`). The classic head pools the last
feature map to `head_pool_size`² like torchvision's `AdaptiveAvgPool2d((7, 7))`, so any input
of at least 32 px works; at 224 px that pooling is the identity and the model equals Keras'.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from prepnet_jax.models.conv import Conv

# Number of 3x3 convs in each of the five blocks; the widths are shared by all depths.
VGG_BLOCK_SIZES = {11: (1, 1, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
VGG_BLOCK_WIDTHS = (64, 128, 256, 512, 512)
VGG_STAGES = ("block1", "block2", "block3", "block4", "block5")

# torchvision initialises VGG/ResNet convs with Kaiming-normal (fan_out).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def scaled(channels: int, width_multiplier: float) -> int:
  """Channel count after the width multiplier (at least 1), so tiny test models stay valid."""
  return max(1, int(round(channels * width_multiplier)))


def max_pool2(x: jnp.ndarray) -> jnp.ndarray:
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _adaptive_pool_matrix(size_in: int, size_out: int) -> np.ndarray:
  """Averaging matrix of torch's adaptive pooling: cell i covers [floor(i*n/s), ceil((i+1)*n/s))."""
  matrix = np.zeros((size_out, size_in), np.float32)
  for i in range(size_out):
    start = (i * size_in) // size_out
    end = -(-((i + 1) * size_in) // size_out)
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
  """NHWC equivalent of torch.nn.AdaptiveAvgPool2d((size, size))."""
  height, width = x.shape[1:3]
  if (height, width) == (size, size):
    return x
  rows = jnp.asarray(_adaptive_pool_matrix(height, size), x.dtype)
  cols = jnp.asarray(_adaptive_pool_matrix(width, size), x.dtype)
  return jnp.einsum("ih,jw,bhwc->bijc", rows, cols, x)


def conv3x3_bn_relu(x, width: int, name: str, *, train: bool, batch_norm: bool = True,
                    use_bias: bool = True, bn_momentum: float = 0.9, dtype: Any = jnp.float32):
  """3x3 'same' conv `name` (+ BatchNorm `name_bn`) + ReLU; call inside a compact method.

  The VGG and small-CNN backbones share it, so their parameter names stay the Keras ones.
  """
  x = Conv(width, (3, 3), padding=((1, 1), (1, 1)), use_bias=use_bias, kernel_init=conv_init,
           dtype=dtype, name=name)(x)
  if batch_norm:
    x = nn.BatchNorm(use_running_average=not train, momentum=bn_momentum, epsilon=1e-5,
                     dtype=dtype, name=f"{name}_bn")(x)
  return nn.relu(x)


class StagedClassifier(nn.Module):
  """A classifier split at `feature_layer`: `features` (the Grad-CAM map) then `head` (logits).

  The fields every VGG / ResNet / small-CNN classifier has live here; subclasses name their
  `stage_names` and set `backbone` (runnable over a stage range), `classifier` (the top) and
  `split_block = self.split_at_feature_layer()` in `setup`.
  """
  num_classes: int = 1000
  dropout_rate: float = 0.0
  width_multiplier: float = 1.0
  feature_layer: str | None = None
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32

  def split_at_feature_layer(self) -> int:
    """The 1-based stage where `features` stops; `feature_layer` None = the last stage."""
    layer = self.feature_layer or self.stage_names[-1]
    if layer not in self.stage_names:
      raise ValueError(f"{type(self).__name__} feature_layer must be one of {self.stage_names}, "
                       f"got {layer!r}")
    return self.stage_names.index(layer) + 1

  def check_input(self, x) -> None:
    """Raises on inputs the architecture cannot take (nothing by default)."""

  def features(self, x, train: bool):
    """Feature map of `feature_layer` (B, h, w, C)."""
    self.check_input(x)
    return self.backbone(x, train, stop=self.split_block)

  def head(self, feats, train: bool):
    """Logits (B, num_classes) from the `feature_layer` map."""
    return self.classifier(self.backbone(feats, train, start=self.split_block + 1), train)

  def __call__(self, x, train: bool):
    return self.head(self.features(x, train), train)


class VGGFeatures(nn.Module):
  """The conv part of VGG (and of the small CNN), runnable one block range at a time.

  `__call__(x, train, start, stop)` runs blocks start..stop (1-based, inclusive); every block
  after the first starts with the 2x2 max-pool of the previous one, and a block's output is
  its last ReLU (before pooling), the usual Grad-CAM target. The U-Net encoder reuses this.
  """
  block_sizes: tuple[int, ...]
  batch_norm: bool = False
  width_multiplier: float = 1.0
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  widths: tuple[int, ...] = VGG_BLOCK_WIDTHS  # per block, before the width multiplier
  use_bias: bool = True

  @nn.compact
  def __call__(self, x, train: bool, start: int = 1, stop: int | None = None):
    stop = len(self.block_sizes) if stop is None else stop
    for block in range(start, stop + 1):
      if block > 1:
        x = max_pool2(x)
      width = scaled(self.widths[block - 1], self.width_multiplier)
      for conv in range(1, self.block_sizes[block - 1] + 1):
        x = conv3x3_bn_relu(x, width, f"block{block}_conv{conv}", train=train,
                            batch_norm=self.batch_norm, use_bias=self.use_bias,
                            bn_momentum=self.bn_momentum, dtype=self.dtype)
    return x


class VGGHead(nn.Module):
  """block5 max-pool, then either the classic MLP (fc1, fc2, predictions) or GAP + Dense."""
  num_classes: int
  head_type: str = "mlp"
  head_pool_size: int = 7
  hidden_units: int = 4096
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = max_pool2(x)
    if self.head_type == "mlp":
      x = adaptive_avg_pool(x, self.head_pool_size)
      x = x.reshape((x.shape[0], -1))
      for name in ("fc1", "fc2"):
        x = nn.relu(nn.Dense(self.hidden_units, dtype=self.dtype, name=name)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    elif self.head_type == "gap":
      x = jnp.mean(x, axis=(1, 2))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    else:
      raise ValueError(f"VGG head_type must be 'mlp' or 'gap', got {self.head_type!r}")
    x = nn.Dense(self.num_classes, dtype=self.dtype, name="predictions")(x)
    return x.astype(jnp.float32)


class VGG(StagedClassifier):
  """VGG classifier; params are {'backbone': conv blocks, 'head': pooling + classifier}.

  `feature_layer` (one of `VGG_STAGES`, default 'block5') picks the feature map that
  `features` returns and `head` starts from, so Grad-CAM can target any block while
  `__call__(x) == head(features(x))` holds for every choice.
  """
  depth: int = 16
  batch_norm: bool = False
  head_type: str = "mlp"
  head_pool_size: int = 7
  dropout_rate: float = 0.5

  @property
  def stage_names(self) -> tuple[str, ...]:
    return VGG_STAGES

  def setup(self):
    if self.depth not in VGG_BLOCK_SIZES:
      raise ValueError(f"VGG depth must be one of {sorted(VGG_BLOCK_SIZES)}, got {self.depth}")
    self.split_block = self.split_at_feature_layer()
    self.backbone = VGGFeatures(VGG_BLOCK_SIZES[self.depth], self.batch_norm,
                                self.width_multiplier, self.bn_momentum, self.dtype)
    self.classifier = VGGHead(self.num_classes, self.head_type, self.head_pool_size,
                              scaled(4096, self.width_multiplier), self.dropout_rate,
                              self.dtype, name="head")

  def check_input(self, x) -> None:
    if min(x.shape[1:3]) < 32:
      raise ValueError(f"VGG needs images of at least 32x32 (five 2x2 max-pools), "
                       f"got {x.shape[1:3]}")
