"""The project's networks in plain torch.nn: the PyTorch side of bench_vs_torch.py and the
reference nets of tests/test_torch_import.py (torch is a benchmark/test-only dependency).

torchvision is not a dependency, so ResNet and VGG are written here with torchvision's module
and parameter names (their `state_dict()` keys are torchvision's). The others follow the flax
modules of `prepnet_jax.models` layer for layer, so parameter counts (BatchNorm running
statistics and other buffers excluded) and FLOPs equal the JAX models': COVID-Net (`covidnet.py`),
PrepNet's U-Net AE (`unet.py`), Radford's DCGAN pair (`gan.py`) and StyleGAN2's G and D
(`stylegan2.py`; in `torch_reference_stylegan2.py`, which keeps both files under 450 lines).
Widths and stage sizes come from the project's own constants, so the two sides cannot drift
apart silently. Activations are in place where torchvision's are (every ReLU), which spares
eager PyTorch a copy per activation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prepnet_jax.models import covidnet, resnet as resnet_lib, unet, vgg


# --- ResNet (torchvision) ------------------------------------------------------------------------

class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    shortcut = x if self.downsample is None else self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    return self.relu(self.bn2(self.conv2(y)) + shortcut)


class Bottleneck(nn.Module):
  """torchvision's "v1.5" bottleneck: the 3x3 conv strides."""
  expansion = 4

  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    shortcut = x if self.downsample is None else self.downsample(x)
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    return self.relu(self.bn3(self.conv3(y)) + shortcut)


class TorchResNet(nn.Module):
  """torchvision's ResNet; `width` scales every channel count as our ResNet's width_multiplier."""

  def __init__(self, block, stage_sizes, num_classes, width=1.0):
    super().__init__()
    inplanes = vgg.scaled(64, width)
    self.conv1 = nn.Conv2d(3, inplanes, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(inplanes)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    for stage, (planes, size) in enumerate(zip(resnet_lib.STAGE_WIDTHS, stage_sizes), start=1):
      planes = vgg.scaled(planes, width)
      blocks = []
      for index in range(size):
        stride = 2 if index == 0 and stage > 1 else 1
        downsample = None
        if index == 0 and (stride != 1 or inplanes != planes * block.expansion):
          downsample = nn.Sequential(
              nn.Conv2d(inplanes, planes * block.expansion, 1, stride, bias=False),
              nn.BatchNorm2d(planes * block.expansion))
        blocks.append(block(inplanes, planes, stride, downsample))
        inplanes = planes * block.expansion
      setattr(self, f"layer{stage}", nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(inplanes, num_classes)

  def features(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    return self.layer4(self.layer3(self.layer2(self.layer1(x))))

  def forward(self, x):
    return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def resnet(depth: int, num_classes: int, width: float = 1.0) -> TorchResNet:
  block = Bottleneck if depth == 50 else BasicBlock
  return TorchResNet(block, resnet_lib.RESNET_STAGE_SIZES[depth], num_classes, width)


# --- VGG (torchvision, plus the project's width multiplier and GAP head) -------------------------

def vgg_features(depth: int, batch_norm: bool, width: float, blocks: int = 5) -> list[nn.Module]:
  """torchvision's `features` list (conv [+BN] + ReLU per conv, a max-pool closing each block)."""
  layers, channels = [], 3
  for size, block_width in list(zip(vgg.VGG_BLOCK_SIZES[depth], vgg.VGG_BLOCK_WIDTHS))[:blocks]:
    out = vgg.scaled(block_width, width)
    for _ in range(size):
      layers += [nn.Conv2d(channels, out, 3, padding=1)]
      layers += [nn.BatchNorm2d(out)] if batch_norm else []
      layers += [nn.ReLU(inplace=True)]
      channels = out
    layers.append(nn.MaxPool2d(2, 2))
  return layers


class TorchVGG(nn.Module):
  """torchvision's VGG; `width` scales the channels and the 4096-unit head as our VGG does.

  head='gap' is the project's `head_type='gap'`: global average pool -> dropout -> Linear.
  """

  def __init__(self, depth, batch_norm, num_classes, width=1.0, head="mlp", dropout=0.5):
    super().__init__()
    self.features = nn.Sequential(*vgg_features(depth, batch_norm, width))
    channels = vgg.scaled(vgg.VGG_BLOCK_WIDTHS[-1], width)
    if head == "mlp":
      self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
      hidden = vgg.scaled(4096, width)
      self.classifier = nn.Sequential(
          nn.Linear(channels * 49, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
          nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    elif head == "gap":
      self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
      self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
    else:
      raise ValueError(f"head must be 'mlp' or 'gap', got {head!r}")

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --- COVID-Net (the KTH code, as prepnet_jax/models/covidnet.py wires it) ------------------------

class PEPX(nn.Module):
  def __init__(self, n_in, n_out):
    super().__init__()
    half, three_quarters = max(1, n_in // 2), max(1, 3 * n_in // 4)
    self.project_in = nn.Conv2d(n_in, half, 1)
    self.expand = nn.Conv2d(half, three_quarters, 1)
    self.depthwise = nn.Conv2d(three_quarters, three_quarters, 3, padding=1, groups=three_quarters)
    self.project_out = nn.Conv2d(three_quarters, half, 1)
    self.extend = nn.Conv2d(half, n_out, 1)

  def forward(self, x):
    return self.extend(self.project_out(self.depthwise(self.expand(self.project_in(x)))))


class TorchCOVIDNet(nn.Module):
  """COVID-Net; the flattened head needs the input size, as in the original."""

  def __init__(self, num_classes, image_size, width=1.0, faithful_bug=True):
    super().__init__()
    w = lambda c: vgg.scaled(c, width)  # noqa: E731
    self.faithful_bug = faithful_bug
    self.conv1_7x7 = nn.Conv2d(3, w(64), 7, 2, 3)
    widths = [w(c) for c in covidnet.STAGE_WIDTHS]
    self.shortcuts = nn.ModuleList([nn.Conv2d(w(64), widths[0], 1)] +
                                   [nn.Conv2d(a, b, 1) for a, b in zip(widths, widths[1:])])
    inputs = [w(64)] + widths[:-1]
    self.stages = nn.ModuleList(
        nn.ModuleList(PEPX(inputs[s] if b == 0 else widths[s], widths[s]) for b in range(blocks))
        for s, blocks in enumerate(covidnet.STAGE_BLOCKS))
    side = image_size // 32
    self.head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * side * side, w(1024)), nn.ReLU(inplace=True),
                              nn.Linear(w(1024), w(256)), nn.ReLU(inplace=True), nn.Linear(w(256), num_classes))

  def forward(self, x):
    stage_input = F.max_pool2d(F.relu(self.conv1_7x7(x)), 2)
    shortcut = self.shortcuts[0](stage_input)
    for stage, blocks in enumerate(self.stages):
      outputs = []
      for index, block in enumerate(blocks):
        outputs.append(block(stage_input if index == 0 else sum(outputs) + shortcut))
      if stage == len(self.stages) - 1:
        return self.head(sum(outputs) + shortcut)
      next_shortcut = self.shortcuts[stage + 1](sum(outputs) + shortcut)
      pooled = list(outputs)
      if stage == 2 and self.faithful_bug:
        pooled[2] = outputs[1]
      stage_input = sum(F.max_pool2d(y, 2) for y in pooled) + F.max_pool2d(shortcut, 2)
      shortcut = F.max_pool2d(next_shortcut, 2)


# --- PrepNet's U-Net auto-encoder (TernausNet UNet16) --------------------------------------------

def conv_bn_relu(n_in, n_out):
  return nn.Sequential(nn.Conv2d(n_in, n_out, 3, padding=1), nn.BatchNorm2d(n_out), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
  def __init__(self, n_in, mid, out, upsample):
    super().__init__()
    if upsample == "transpose":
      self.block = nn.Sequential(conv_bn_relu(n_in, mid), nn.ConvTranspose2d(mid, out, 4, 2, 1), nn.ReLU(inplace=True))
    else:
      self.block = nn.Sequential(conv_bn_relu(n_in, mid), conv_bn_relu(mid, out),
                                 nn.Upsample(scale_factor=2, mode=upsample))

  def forward(self, x):
    return self.block(x)


class TorchUNetAE(nn.Module):
  """`unet.UNetVGG16AE` with a linear output (PrepNet's `out_activation='linear'`)."""

  def __init__(self, out_channels=3, depth=5, upsample="bilinear", width=1.0, base_filters=32):
    super().__init__()
    features = vgg_features(16, False, width, blocks=depth)
    # Block b's output is its last ReLU, before the max-pool that opens block b + 1.
    cuts = [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
    starts = [0] + [c + 1 for c in cuts[:-1]]
    self.encoder = nn.ModuleList(nn.Sequential(*features[s:c]) for s, c in zip(starts, cuts))
    enc = [vgg.scaled(c, width) for c in vgg.VGG_BLOCK_WIDTHS[:depth]]
    dec = lambda stage: [vgg.scaled(u * base_filters, width) for u in unet.DECODER_WIDTHS[stage]]  # noqa: E731
    mid, out = dec(depth + 1)
    self.center = DecoderBlock(enc[-1], mid, out, upsample)
    self.decoders = nn.ModuleList()
    for stage in range(depth, 1, -1):
      mid, next_out = dec(stage)
      self.decoders.append(DecoderBlock(out + enc[stage - 1], mid, next_out, upsample))
      out = next_out
    self.dec1 = conv_bn_relu(out + enc[0], vgg.scaled(base_filters, width))
    self.final = nn.Conv2d(vgg.scaled(base_filters, width), out_channels, 1)

  def forward(self, x):
    skips = []
    for index, block in enumerate(self.encoder):
      x = block(F.max_pool2d(x, 2) if index else x)
      skips.append(x)
    x = self.center(F.max_pool2d(x, 2))
    for block, skip in zip(self.decoders, reversed(skips[1:])):
      x = block(torch.cat([x, skip], 1))
    return self.final(self.dec1(torch.cat([x, skips[0]], 1)))


# --- Radford's DCGAN (the PyTorch tutorial) ------------------------------------------------------

class TorchDCGANGenerator(nn.Module):
  def __init__(self, image_size, channels, width, latent_dim, max_multiplier=8):
    super().__init__()
    n = (image_size // 4).bit_length() - 1
    layers, n_in = [], latent_dim
    for i in range(n):
      features = width * min(2 ** (n - 1 - i), max_multiplier)
      layers += [nn.ConvTranspose2d(n_in, features, 4, 1, 0, bias=False) if i == 0 else
                 nn.ConvTranspose2d(n_in, features, 4, 2, 1, bias=False),
                 nn.BatchNorm2d(features), nn.ReLU(inplace=True)]
      n_in = features
    layers += [nn.ConvTranspose2d(n_in, channels, 4, 2, 1, bias=False), nn.Tanh()]
    self.main = nn.Sequential(*layers)

  def forward(self, z):
    return self.main(z[:, :, None, None])


class TorchDCGANDiscriminator(nn.Module):
  def __init__(self, image_size, channels, width, max_multiplier=8):
    super().__init__()
    n = (image_size // 4).bit_length() - 1
    layers = [nn.Conv2d(channels, width, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    n_in = width
    for i in range(1, n):
      features = width * min(2 ** i, max_multiplier)
      layers += [nn.Conv2d(n_in, features, 4, 2, 1, bias=False), nn.BatchNorm2d(features), nn.LeakyReLU(0.2, inplace=True)]
      n_in = features
    layers += [nn.Conv2d(n_in, 1, 4, 1, 0, bias=False)]
    self.main = nn.Sequential(*layers)

  def forward(self, images):
    return self.main(images).flatten()
