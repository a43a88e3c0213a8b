"""Networks (flax linen) and local ImageNet-weight import.

Every classifier from `get_classifier` shares one calling convention:

  logits = model.apply(variables, x, train=False)                       # (B, num_classes)
  logits, updates = model.apply(variables, x, train=True, rngs={'dropout': key},
                                mutable=['batch_stats'])
  feats = model.apply(variables, x, train=False, method=model.features)   # (B, h, w, C)
  logits = model.apply(variables, feats, train=False, method=model.head)

`__call__ == head(features(x))`; `feature_layer=` (one of `model.stage_names`) moves the split
for Grad-CAM. Params are {'backbone': ..., 'head': ...}; `trainable_mask` freezes the backbone.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax

from prepnet_jax.models.covidnet import COVIDNet
from prepnet_jax.models.pretrained import load_pretrained
from prepnet_jax.models.resnet import ResNet
from prepnet_jax.models.small_cnn import SmallCNN
from prepnet_jax.models.unet import UNetVGG16AE
from prepnet_jax.models.vgg import VGG

_CLASSIFIERS = {
    "vgg11": functools.partial(VGG, depth=11),
    "vgg11_bn": functools.partial(VGG, depth=11, batch_norm=True),
    "vgg16": functools.partial(VGG, depth=16),
    "vgg16_bn": functools.partial(VGG, depth=16, batch_norm=True),
    "vgg19": functools.partial(VGG, depth=19),
    "vgg19_bn": functools.partial(VGG, depth=19, batch_norm=True),
    "resnet18": functools.partial(ResNet, depth=18),
    "resnet34": functools.partial(ResNet, depth=34),
    "resnet50": functools.partial(ResNet, depth=50),
    "small_cnn": SmallCNN,
    "covidnet": COVIDNet,
}
CLASSIFIER_NAMES = tuple(_CLASSIFIERS)


def get_classifier(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
  """Builds a classifier by name; kwargs go to the module (width_multiplier, dropout_rate, ...).

  num_classes=1 gives a single logit for BCE. Per-family options: VGG `head_type`
  ('mlp' | 'gap'), `head_pool_size`; ResNet `layout` ('torchvision' | 'keras');
  SmallCNN `widths`; COVIDNet `faithful_bug`; all `feature_layer`, `dtype`.
  """
  if name not in _CLASSIFIERS:
    raise ValueError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIER_NAMES)}")
  return _CLASSIFIERS[name](num_classes=num_classes, **kwargs)


def trainable_mask(params: Any, freeze_backbone: bool) -> Any:
  """Pytree of bools like `params`: True = trained. Frozen backbone -> only 'head' is True.

  Freezing the parameters does not freeze BatchNorm statistics: run `features` with
  train=False (and `head` with train=True) to keep the backbone's BatchNorm in inference mode.
  """
  if freeze_backbone and set(params) != {"backbone", "head"}:
    raise ValueError(f"trainable_mask needs a classifier's 'params' collection with top-level keys "
                     f"'backbone' and 'head', got {sorted(params)}")
  return {key: jax.tree.map(lambda _: key == "head" or not freeze_backbone, subtree)
          for key, subtree in params.items()}


__all__ = ["CLASSIFIER_NAMES", "COVIDNet", "ResNet", "SmallCNN", "UNetVGG16AE", "VGG",
           "get_classifier", "load_pretrained", "trainable_mask"]
