"""torchvision/timm-layout ImageNet weights (a flat state_dict) into the flax VGG / ResNet trees.

Called by `pretrained.load_pretrained` for `.safetensors` / `.npz` files whose keys are
torchvision's state_dict names (timm's ResNets use the same names). torchvision's own files
are pickled `.pth`; convert one once with `PTH_TO_SAFETENSORS`. The names map onto our
(Keras-style) modules as

  ResNet  conv1, bn1                        backbone/conv1_conv, backbone/conv1_bn
          layer{s}.{b}.conv{k}, .bn{k}        backbone/conv{s+1}_block{b+1}/{k}_conv, /{k}_bn
          layer{s}.{b}.downsample.0, .1       backbone/conv{s+1}_block{b+1}/0_conv, /0_bn
          fc                                  head/predictions
  VGG     features.{i} (Conv2d, BatchNorm2d)  backbone/block{s}_conv{j}, block{s}_conv{j}_bn,
                                              i counted as torchvision's nn.Sequential does
          classifier.0, .3, .6                head/fc1, head/fc2, head/predictions
  U-Net   VGG16's features.{i}                encoder/block{s}_conv{j} (the blocks it has)

Conv kernels go OIHW -> HWIO, Linear weights (out, in) -> (in, out) (VGG's fc1 also from
torch's C*H*W flattening to our H*W*C), BatchNorm weight/bias/running_mean/running_var ->
scale/bias/mean/var; `num_batches_tracked` is ignored.

torchvision's weights take the project's 'torch' input convention (RGB in [0, 1], then ImageNet
mean/std: `preprocess.value_range='imagenet'`), so nothing is rewritten; a one-channel model gets
the first kernel summed over RGB, which equals feeding the grey channel replicated three times.

The file must hold the same network as the model: the file's architecture is recognised from
its keys (resnet34 vs resnet18, vgg16 vs vgg16_bn, ...) and a mismatch names the model to build.
Backbone (encoder) layers must all load with matching shapes (torchvision layout,
width_multiplier=1); head layers load when the file has them with the same shape and otherwise
keep their initial values (logged): the usual new-classifier case. A VGG with head_type='gap'
has no fc1/fc2, so none of torchvision's 25088-4096-4096 classifier can load into it: only its
conv backbone is ImageNet, which the log says.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

from prepnet_jax.models.vgg import VGG_BLOCK_SIZES

PTH_TO_SAFETENSORS = ("python -c \"import torch, safetensors.torch as st; st.save_file("
                      "torch.load('x.pth', weights_only=True), 'x.safetensors')\"")
TORCHVISION_NAMES = ("vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
                     "resnet18", "resnet34", "resnet50", "unet_vgg16")
TORCH_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# (flax collection, flax leaf) -> torch leaf.
_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight",
               ("params", "bias"): "bias", ("batch_stats", "mean"): "running_mean",
               ("batch_stats", "var"): "running_var"}
_RESNETS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
            ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
            ((3, 8, 36, 3), True): "resnet152"}
_VGGS = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}
_VGG_HEAD = {"fc1": "classifier.0", "fc2": "classifier.3", "predictions": "classifier.6"}


def is_state_dict(arrays: dict) -> bool:
  """True when every key is a torchvision state_dict name ('<module>.<weight|bias|...>')."""
  return bool(arrays) and all("/" not in key and "." in key
                              and key.rpartition(".")[2] in TORCH_LEAVES for key in arrays)


def architecture(arrays: dict) -> str:
  """The torchvision network a state_dict is ('resnet50', 'vgg16_bn', ...), else a description."""
  keys = set(arrays)
  if "conv1.weight" in keys and any(key.startswith("layer1.") for key in keys):
    blocks = tuple(len({key.split(".")[1] for key in keys if key.startswith(f"layer{stage}.")})
                   for stage in range(1, 5))
    bottleneck = "layer1.0.conv3.weight" in keys
    return _RESNETS.get((blocks, bottleneck), f"a ResNet with {blocks} "
                        f"{'bottleneck' if bottleneck else 'basic'} blocks per stage")
  convs = [key for key in keys if re.fullmatch(r"features\.\d+\.weight", key)
           and np.ndim(arrays[key]) == 4]
  if convs:
    batch_norm = any(re.fullmatch(r"features\.\d+\.running_mean", key) for key in keys)
    vgg = _VGGS.get(len(convs), f"a VGG with {len(convs)} convs")
    return vgg + ("_bn" if batch_norm else "") if vgg in _VGGS.values() else vgg
  return f"no torchvision VGG or ResNet (first keys {sorted(keys)[:4]})"


def missing_file_message(name: str, path: str) -> str:
  arch = "vgg16" if name == "unet_vgg16" else name
  return (f"pretrained {name} weights not found: {path!r}. Expected torchvision's {arch} ImageNet "
          f"state_dict as .safetensors (or .npz). Nothing is downloaded at run time; on a machine "
          f"with internet and torchvision run `python -c \"import torchvision, safetensors.torch "
          f"as st; st.save_file(torchvision.models.{arch}(weights='IMAGENET1K_V1').state_dict(), "
          f"'{arch}.safetensors')\"`, or convert the .pth torchvision caches "
          f"(~/.cache/torch/hub/checkpoints/{arch}-<hash>.pth): `{PTH_TO_SAFETENSORS}`, and pass "
          f"the .safetensors path here.")


def _vgg_modules(depth: int, batch_norm: bool) -> dict[str, str]:
  """Our VGG module name -> torchvision prefix; features.{i} counts Conv, [BN,] ReLU, MaxPool."""
  names, index = dict(_VGG_HEAD), 0
  for block, size in enumerate(VGG_BLOCK_SIZES[depth], start=1):
    for conv in range(1, size + 1):
      names[f"block{block}_conv{conv}"] = f"features.{index}"
      if batch_norm:
        names[f"block{block}_conv{conv}_bn"] = f"features.{index + 1}"
      index += 3 if batch_norm else 2
    index += 1
  return names


def _resnet_prefix(module: tuple[str, ...]) -> str | None:
  """torchvision prefix of our ResNet module path, e.g. ('backbone', 'conv3_block1', '0_bn')."""
  top, rest = module[0], module[1:]
  if top == "head":
    return "fc" if rest == ("predictions",) else None
  if rest in (("conv1_conv",), ("conv1_bn",)):
    return {"conv1_conv": "conv1", "conv1_bn": "bn1"}[rest[0]]
  stage = re.fullmatch(r"conv([2-5])_block(\d+)", rest[0]) if len(rest) == 2 else None
  layer = re.fullmatch(r"(\d)_(conv|bn)", rest[1]) if stage else None
  if layer is None:
    return None
  prefix = f"layer{int(stage[1]) - 1}.{int(stage[2]) - 1}"
  if layer[1] == "0":  # the projection shortcut
    return f"{prefix}.downsample.{0 if layer[2] == 'conv' else 1}"
  return f"{prefix}.{layer[2]}{layer[1]}"


def _prefix_function(name: str):
  """module path -> torchvision prefix (None: no counterpart), for the model `name`."""
  if name.startswith("resnet"):
    return _resnet_prefix
  arch = "vgg16" if name == "unet_vgg16" else name
  names = _vgg_modules(int(arch[3:5]), arch.endswith("_bn"))
  return lambda module: names.get(module[-1]) if len(module) == 2 else None


def _build_hint(name: str) -> str:
  if name == "unet_vgg16":
    return "UNetVGG16AE with width_multiplier=1"
  if name.startswith("resnet"):
    return (f"get_classifier('{name}', n) with layout='torchvision' (the default) and "
            f"width_multiplier=1")
  return f"get_classifier('{name}', n) with width_multiplier=1"


def _to_flax(array: np.ndarray, leaf: str, fc1_channels: int | None) -> np.ndarray:
  """A torch array in our layout: OIHW -> HWIO, (out, in) -> (in, out), others unchanged."""
  array = np.asarray(array)
  if leaf != "kernel":
    return array
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if fc1_channels:  # VGG fc1: torch flattens (C, H, W), we flatten (H, W, C)
    out, size = array.shape
    side = int(round((size / fc1_channels) ** 0.5))
    if side * side * fc1_channels == size:
      array = array.reshape(out, fc1_channels, side, side).transpose(0, 2, 3, 1).reshape(out, size)
  return array.T


def _load_module(flat, module, prefix, arrays, sum_rgb, fc1_channels):
  """Writes one torch module into `flat` in place; returns (why it could not or None, keys used)."""
  targets = {(collection, key): f"{prefix}.{_TORCH_LEAF[(collection, key[-1])]}"
             for collection, leaf in _TORCH_LEAF for key in [module + (leaf,)]
             if key in flat[collection]}
  unknown = [key[-1] for collection in flat for key in flat[collection]
             if key[:-1] == module and (collection, key[-1]) not in _TORCH_LEAF]
  if unknown:
    return f"the model's layer has {unknown}, which torchvision layers do not", ()
  missing = [torch_key for torch_key in targets.values() if torch_key not in arrays]
  if missing:
    return f"key {missing[0]!r} is not in the file", ()
  extra = sorted(key for key in arrays if key.rpartition(".")[0] == prefix
                 and not key.endswith("num_batches_tracked") and key not in targets.values())
  if extra:
    return f"the file has {extra}, which the model's layer lacks (a conv bias: layout?)", ()
  values = {}
  for (collection, key), torch_key in targets.items():
    value = _to_flax(arrays[torch_key], key[-1], fc1_channels if module[-1] == "fc1" else None)
    grey_model = sum_rgb and key[-1] == "kernel" and flat[collection][key].shape[2] == 1
    if grey_model and value.shape[2] == 3:
      value = value.sum(axis=2, keepdims=True)  # = the grey image replicated to RGB
    if value.shape != flat[collection][key].shape:
      ours = "" if value.shape == np.shape(arrays[torch_key]) else f" ({value.shape} in our layout)"
      return (f"{torch_key} has shape {tuple(np.shape(arrays[torch_key]))}{ours} in the file, "
              f"the model needs {flat[collection][key].shape}"), ()
    values[(collection, key)] = value
  for (collection, key), value in values.items():
    flat[collection][key] = jnp.asarray(value, dtype=flat[collection][key].dtype)
  return None, tuple(targets.values())


def load_torchvision(name: str, variables: dict, arrays: dict, path: str, digest: str,
                     input_convention: str) -> dict:
  """`variables` with the torchvision state_dict `arrays` of `path` loaded (see module doc)."""
  expected = "vgg16" if name == "unet_vgg16" else name
  if name not in TORCHVISION_NAMES:
    raise ValueError(f"{path} holds torchvision-layout weights; the model {name!r} has no "
                     f"torchvision counterpart (imports: {', '.join(TORCHVISION_NAMES)})")
  found = architecture(arrays)
  if found != expected:
    known = found in _RESNETS.values() or found.removesuffix("_bn") in _VGGS.values()
    build = (f"build get_classifier('{found}', n) (config: model.name='{found}') to use this "
             f"file, or " if found in TORCHVISION_NAMES else "")
    raise ValueError(f"{path} holds {'torchvision ' + found + ' weights' if known else found}, "
                     f"but the model is {name}: {build}pass torchvision's {expected} ImageNet "
                     f"weights")
  if input_convention != "torch":
    raise ValueError(f"{path}: torchvision weights take input_convention='torch' (RGB in [0, 1] "
                     f"then ImageNet mean/std, preprocess.value_range='imagenet'), got "
                     f"{input_convention!r}; 'caffe' is Keras' input and only for Keras files")
  conv1 = variables["params"].get("backbone", {}).get("conv1_conv", {})
  if name.startswith("resnet") and "bias" in conv1:
    raise ValueError(f"{path} holds torchvision-layout {name} weights, but the model was built "
                     f"with layout='keras' (convs with bias): build get_classifier('{name}', n) "
                     f"with layout='torchvision' (the default), or pass Keras .h5 weights")

  tops = ("encoder",) if name == "unet_vgg16" else ("backbone", "head")
  for top in tops:
    if top not in variables["params"]:
      raise ValueError(f"load_pretrained({name!r}): the variables have no {top!r} params; "
                       f"top-level keys are {sorted(variables['params'])}")
  flat = {collection: traverse_util.flatten_dict(variables.get(collection, {}))
          for collection in ("params", "batch_stats")}
  prefix_of = _prefix_function(name)
  first_conv = "conv1" if name.startswith("resnet") else "features.0"
  last_conv = max((key for key in arrays if re.fullmatch(r"features\.\d+\.weight", key)
                   and np.ndim(arrays[key]) == 4), key=lambda key: int(key.split(".")[1]),
                  default=None)
  fc1_channels = np.shape(arrays[last_conv])[0] if last_conv else None
  loaded, kept, used = 0, [], set()
  modules = {key[:-1] for key in flat["params"] if key[0] in tops}
  for module in sorted(modules, key=lambda m: tuple(p.replace("bn", "~bn") for p in m)):  # conv, BN
    prefix = prefix_of(module)
    if prefix is None:
      raise ValueError(f"load_pretrained({name!r}) from {path}: the model's layer "
                       f"{'/'.join(module)} has no counterpart in torchvision's {expected}. "
                       f"The model must be {_build_hint(name)}")
    problem, keys = _load_module(flat, module, prefix, arrays, prefix == first_conv, fc1_channels)
    if problem is None:
      loaded += 1
      used.update(keys)
    elif module[0] == "head":
      kept.append(f"{'/'.join(module[1:])} <- {prefix} ({problem})")
    else:
      raise ValueError(f"load_pretrained({name!r}) from {path}: layer {'/'.join(module)} <- "
                       f"{prefix}: {problem}. The model must be torchvision's {expected}: "
                       f"{_build_hint(name)}")

  unused = sorted({key.rpartition(".")[0] for key in arrays
                   if key not in used and not key.endswith("num_batches_tracked")})
  if name.startswith("vgg") and "fc1" not in variables["params"]["head"]:
    logging.warning("load_pretrained: %s with head_type='gap' cannot take torchvision's "
                    "classifier (fc 25088-4096-4096-1000); only the conv backbone is ImageNet",
                    name)
  logging.info("load_pretrained: %s torchvision weights from %s (sha256 %s, input torch): loaded "
               "%d layers; kept initial values: %s; unused file modules: %s", name, path, digest,
               loaded, kept or "none", unused or "none")
  result = dict(variables)
  for collection, leaves in flat.items():
    if collection in variables:
      result[collection] = traverse_util.unflatten_dict(leaves)
  return result
