"""Keras-layout ImageNet weights into the flax param trees (called by `pretrained.load_pretrained`).

Supported files (torchvision-layout files go to `torch_import.py` instead):
  * Keras `.h5`: the files `keras.applications.*(weights='imagenet')` downloads into
    ~/.keras/models (legacy layout), `model.save('x.h5')`, and Keras 3 `model.save_weights(
    'x.weights.h5')`; with or without the top (fc1/fc2/predictions or predictions).
  * `.npz` / `.safetensors` holding a flat {'<keras layer>/<weight>': array} dict, e.g.
    'block1_conv1/kernel', 'conv1_bn/moving_mean' (Keras names and HWIO kernels), so weights
    from any source can be converted once and loaded here.

Our layer names are Keras' with '/' for '_' at module boundaries, so a flax module at
`backbone/conv2_block1/1_conv` takes Keras layer `conv2_block1_1_conv`. Backbone (or U-Net
encoder) layers must all be in the file with matching shapes; head layers are loaded when the
file has them with the same shape and otherwise keep their initial values (logged), which is
the usual "ImageNet backbone, new classifier" case. Keras has VGG16, VGG19 and ResNet50 only,
without BatchNorm VGGs; its ResNet50 needs the model built with layout='keras' (the default
torchvision layout takes torchvision weights through `torch_import.py`).

Keras' VGG16/VGG19/ResNet50 weights expect "caffe" input (BGR, 0-255, minus the ImageNet BGR
mean). With `input_convention='torch'` (default, this project's convention: RGB in [0, 1]
then ImageNet mean/std) the first conv is rewritten to take that input instead: the kernel's
input channels are reversed and scaled by 255*std, the mean difference is folded into the
bias. This is exact except at the image border, where zero padding means a grey level that
differs by at most 0.5/255. With one input channel the first kernel is summed over RGB, which
equals feeding the grey channel replicated three times.
"""

from __future__ import annotations

import h5py
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import traverse_util

IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float64)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], np.float64)
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float64)
INPUT_CONVENTIONS = ("torch", "caffe")

# name -> (Keras application, top-level param keys that must load, that may load, first conv).
PRETRAINED = {
    "vgg16": ("VGG16", ("backbone",), ("head",), "block1_conv1"),
    "vgg19": ("VGG19", ("backbone",), ("head",), "block1_conv1"),
    "resnet50": ("ResNet50", ("backbone",), ("head",), "conv1_conv"),
    "unet_vgg16": ("VGG16", ("encoder",), (), "block1_conv1"),
}

_BUILD_HINT = {
    "vgg16": "get_classifier('vgg16', n) with width_multiplier=1 (Keras has no BatchNorm VGG)",
    "vgg19": "get_classifier('vgg19', n) with width_multiplier=1 (Keras has no BatchNorm VGG)",
    "resnet50": "get_classifier('resnet50', n, layout='keras') with width_multiplier=1",
    "unet_vgg16": "UNetVGG16AE with width_multiplier=1",
}

# Keras weight names in the order Keras stores them, by number of arrays per layer.
_WEIGHT_ORDER = {1: ("kernel",), 2: ("kernel", "bias"),
                 4: ("gamma", "beta", "moving_mean", "moving_variance")}
# Keras weight name -> (flax collection, flax leaf name).
_KERAS_TO_FLAX = {"kernel": ("params", "kernel"), "bias": ("params", "bias"),
                  "gamma": ("params", "scale"), "beta": ("params", "bias"),
                  "moving_mean": ("batch_stats", "mean"),
                  "moving_variance": ("batch_stats", "var")}


def _named(layer: str, arrays: list[np.ndarray], path: str) -> dict[str, np.ndarray]:
  if len(arrays) not in _WEIGHT_ORDER:
    raise ValueError(f"{path}: layer {layer!r} has {len(arrays)} weight arrays; expected a conv/"
                     f"dense (kernel[, bias]) or a BatchNorm (gamma, beta, mean, variance)")
  return dict(zip(_WEIGHT_ORDER[len(arrays)], arrays))


def read_h5(path: str) -> dict[str, dict[str, np.ndarray]]:
  layers = {}
  with h5py.File(path, "r") as f:
    root = f["model_weights"] if "model_weights" in f else f
    if "layer_names" in root.attrs:  # Keras 2 files and legacy model.save('x.h5')
      for layer in root.attrs["layer_names"]:
        layer = layer.decode() if isinstance(layer, bytes) else str(layer)
        group = root[layer]
        names = [n.decode() if isinstance(n, bytes) else str(n)
                 for n in group.attrs.get("weight_names", [])]
        if names:
          layers[layer] = _named(layer, [np.asarray(group[n]) for n in names], path)
    elif "layers" in root:  # Keras 3 model.save_weights('x.weights.h5')
      for key, group in root["layers"].items():
        arrays = group.get("vars", {})
        if len(arrays):
          layer = str(arrays.attrs.get("name", key))
          layers[layer] = _named(layer, [np.asarray(arrays[str(i)]) for i in range(len(arrays))],
                                 path)
    else:
      raise ValueError(f"{path} is not a Keras weight file: no 'layer_names' attribute "
                       f"(Keras 2 / legacy .h5) and no 'layers' group (Keras 3 .weights.h5)")
  return layers


def is_keras_flat(arrays: dict) -> bool:
  """True when every key is '<keras layer>/<weight>' (the flat .npz/.safetensors Keras layout)."""
  return bool(arrays) and all("/" in key for key in arrays)


def layers_from_flat(path: str, arrays: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
  """{keras layer: {keras weight: array}} from a flat {'<layer>/<weight>': array} dict."""
  layers: dict[str, dict[str, np.ndarray]] = {}
  for key, value in arrays.items():
    layer, _, weight = key.rpartition("/")
    weight = weight.split(":")[0]
    if not layer or weight not in _KERAS_TO_FLAX:
      raise ValueError(f"{path}: key {key!r} is not '<keras layer>/<weight>' with weight in "
                       f"{sorted(_KERAS_TO_FLAX)}")
    layers.setdefault(layer, {})[weight] = np.asarray(value)
  return layers


def missing_file_message(name: str, path: str) -> str:
  app = PRETRAINED[name][0]
  stem = app.lower()
  return (f"pretrained {name} weights not found: {path!r}. Expected a Keras {app} ImageNet .h5 "
          f"(or a flat .npz/.safetensors). Nothing is downloaded at run time; on a machine with "
          f"internet run `python -c \"import keras; keras.applications.{app}(weights='imagenet')"
          f".save_weights('{stem}.weights.h5')\"` (or copy the file that call caches, "
          f"~/.keras/models/{stem}_weights_tf_dim_ordering_tf_kernels[_notop].h5) and pass its "
          f"path here.")


def caffe_to_torch_first_conv(kernel: np.ndarray, bias: np.ndarray):
  """First conv taking RGB (x/255 - mean)/std instead of caffe BGR x - mean_bgr (see module doc)."""
  kernel_rgb = kernel[:, :, ::-1, :].astype(np.float64)
  offset = 255.0 * IMAGENET_MEAN_RGB - CAFFE_MEAN_BGR[::-1]
  new_bias = bias + np.einsum("hwio,i->o", kernel_rgb, offset)
  new_kernel = kernel_rgb * (255.0 * IMAGENET_STD_RGB)[None, None, :, None]
  return new_kernel.astype(kernel.dtype), new_bias.astype(bias.dtype)


def _adapt_first_conv(weights, model_in_channels, input_convention, layer, path):
  kernel, bias = weights["kernel"], weights.get("bias")
  if kernel.shape[2] != 3:
    raise ValueError(f"{path}: first conv {layer!r} has {kernel.shape[2]} input channels, "
                     f"expected 3 (RGB ImageNet weights)")
  if input_convention == "torch":
    if bias is None:
      raise ValueError(f"{path}: first conv {layer!r} has no bias to fold the input "
                       f"normalisation into; use input_convention='caffe'")
    kernel, bias = caffe_to_torch_first_conv(kernel, bias)
  if model_in_channels == 1:
    kernel = kernel.sum(axis=2, keepdims=True)
  return {**weights, "kernel": kernel, **({"bias": bias} if bias is not None else {})}


def load_keras(name: str, variables: dict, file_layers: dict, path: str, digest: str,
               input_convention: str) -> dict:
  """`variables` with the Keras layers `file_layers` ({layer: {weight: array}}) of `path` loaded.

  name: the receiving model, 'vgg16' | 'vgg19' | 'resnet50' (built with layout='keras') |
  'unet_vgg16' (the UNetVGG16AE encoder); all with width_multiplier=1.
  """
  if name not in PRETRAINED:
    raise ValueError(f"{path} holds Keras-layout weights, and Keras applications have no {name}"
                     f" (Keras-layout imports: {', '.join(PRETRAINED)}); pass torchvision's "
                     f"{name} ImageNet weights as .safetensors instead (see prepnet_jax/models/"
                     f"pretrained.py)")
  conv1 = variables["params"].get("backbone", {}).get("conv1_conv", {})
  if name == "resnet50" and "kernel" in conv1 and "bias" not in conv1:
    raise ValueError(f"{path} holds Keras-layout ResNet50 weights, but the model was built with "
                     f"layout='torchvision' (convs without bias, stride in the 3x3 conv): build "
                     f"get_classifier('resnet50', n, layout='keras') (config: "
                     f"model.kwargs={{'layout': 'keras'}}), or keep the torchvision layout and "
                     f"pass torchvision's resnet50 weights as .safetensors")
  _, required, optional, first_conv = PRETRAINED[name]

  flat = {collection: traverse_util.flatten_dict(variables.get(collection, {}))
          for collection in ("params", "batch_stats")}
  loaded, kept, used = [], [], set()
  for top in required + optional:
    if top not in variables["params"]:
      raise ValueError(f"load_pretrained({name!r}): the variables have no {top!r} params; "
                       f"top-level keys are {sorted(variables['params'])}")
    module_paths = sorted({key[:-1] for key in flat["params"] if key[0] == top})
    for module_path in module_paths:
      layer = "_".join(module_path[1:])
      problem = _load_layer(flat, module_path, layer, file_layers.get(layer), first_conv,
                            input_convention, path)
      if problem is None:
        loaded.append(layer)
        used.add(layer)
      elif top in required:
        raise ValueError(f"load_pretrained({name!r}) from {path}: layer {layer!r}: {problem}. "
                         f"The model must match Keras {PRETRAINED[name][0]}: {_BUILD_HINT[name]}")
      else:
        kept.append(f"{layer} ({problem})")

  unused = sorted(set(file_layers) - used)
  logging.info("load_pretrained: %s Keras weights from %s (sha256 %s, input %s): loaded %d layers; "
               "kept initial values: %s; unused file layers: %s", name, path, digest,
               input_convention, len(loaded), kept or "none", unused or "none")
  result = dict(variables)
  for collection, leaves in flat.items():
    if collection in variables:
      result[collection] = traverse_util.unflatten_dict(leaves)
  return result


def _load_layer(flat, module_path, layer, weights, first_conv, input_convention, path):
  """Writes one Keras layer into `flat` in place; returns why it could not, or None."""
  if weights is None:
    return "not in the file"
  targets = {}
  for keras_name in weights:
    collection, leaf = _KERAS_TO_FLAX[keras_name]
    targets[keras_name] = (collection, module_path + (leaf,))
  model_leaves = {key[-1] for key in flat["params"] if key[:-1] == module_path}
  model_leaves |= {key[-1] for key in flat["batch_stats"] if key[:-1] == module_path}
  file_leaves = {key[-1] for _, key in targets.values()}
  if model_leaves != file_leaves:
    return f"model has {sorted(model_leaves)}, file has {sorted(weights)} (conv bias / layout?)"
  if layer == first_conv:
    model_in_channels = flat["params"][module_path + ("kernel",)].shape[2]
    weights = _adapt_first_conv(weights, model_in_channels, input_convention, layer, path)
  for keras_name, (collection, key) in targets.items():
    if weights[keras_name].shape != flat[collection][key].shape:
      return (f"{keras_name} shape {weights[keras_name].shape} in the file vs "
              f"{flat[collection][key].shape} in the model")
  for keras_name, (collection, key) in targets.items():
    flat[collection][key] = jnp.asarray(weights[keras_name], dtype=flat[collection][key].dtype)
  return None
