"""`load_pretrained`: ImageNet weights from a local file into a flax classifier or U-Net encoder.

The one entry for every pretrained import (classifier configs' `model.pretrained_path`, the
PrepNet networks' `pretrained_path`). It never downloads and never unpickles: it checks the
SHA-256 when one is given, reads the file, tells the two weight layouts apart by their key
names and hands the arrays to the module that maps that layout onto our parameter names:

  * torchvision / timm state_dict (`torch_import.py`): a flat `.safetensors` or `.npz` of
    torchvision's names, e.g. `conv1.weight`, `layer1.0.bn1.running_mean`,
    `layer2.0.downsample.0.weight`, `fc.weight`, `features.0.weight`, `classifier.6.weight`.
    For vgg11/16/19 and their `_bn` variants, resnet18/34/50 built with layout='torchvision'
    (the default) and the U-Net's VGG16 encoder ('unet_vgg16'). torchvision ships pickled
    `.pth` files; convert one once, on a machine with torch, to the safe format:
      python -c "import torch, safetensors.torch as st; st.save_file(torch.load('x.pth', weights_only=True), 'x.safetensors')"
  * Keras (`keras_import.py`): a Keras `.h5`, or a flat `.npz` / `.safetensors` of
    '<keras layer>/<weight>' names. For vgg16, vgg19, resnet50 built with layout='keras' and
    'unet_vgg16'.

`input_convention` is the input the loaded network will be fed: 'torch' (the project's: RGB in
[0, 1] then ImageNet mean/std, what `preprocess.value_range='imagenet'` produces) or 'caffe'
(Keras' own: BGR 0-255 minus the ImageNet BGR mean). torchvision weights are 'torch' already
and load unchanged; Keras weights are 'caffe', and for 'torch' their first conv is rewritten
(see keras_import). A one-channel model gets the first kernel summed over RGB in both paths.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from prepnet_jax.models import keras_import, torch_import

INPUT_CONVENTIONS = keras_import.INPUT_CONVENTIONS
PRETRAINED_NAMES = tuple(dict.fromkeys(torch_import.TORCHVISION_NAMES
                                       + tuple(keras_import.PRETRAINED)))
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".tar")


def sha256_of(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _read_flat(path: str) -> dict[str, np.ndarray]:
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      return dict(data)
  from safetensors.numpy import load_file
  return load_file(path)


def _missing_file_message(name: str, path: str) -> str:
  if path.endswith((".h5", ".hdf5")) and name in keras_import.PRETRAINED:
    return keras_import.missing_file_message(name, path)
  return torch_import.missing_file_message(name, path)


def load_pretrained(name: str, variables: dict, path: str | os.PathLike, sha256: str | None = None,
                    input_convention: str = "torch") -> dict:
  """Returns `variables` with the ImageNet weights of `path` loaded (inputs are not modified).

  name: the receiving model, one of `PRETRAINED_NAMES` (a classifier name of `get_classifier`,
  or 'unet_vgg16' for the UNetVGG16AE encoder), built with width_multiplier=1.
  path: a torchvision-layout `.safetensors`/`.npz`, or a Keras `.h5`/`.npz`/`.safetensors`
  (see the module docstring); pickles (.pt/.pth/.bin) are refused.
  sha256: expected hex digest of the file; a mismatch raises ValueError.
  input_convention: 'torch' (RGB [0,1] + ImageNet mean/std) or 'caffe' (Keras' own input).
  """
  path = os.fspath(path)
  if name not in PRETRAINED_NAMES:
    raise ValueError(f"no pretrained import for {name!r}; known: {', '.join(PRETRAINED_NAMES)}")
  if input_convention not in INPUT_CONVENTIONS:
    raise ValueError(f"input_convention must be one of {INPUT_CONVENTIONS}, "
                     f"got {input_convention!r}")
  if path.lower().endswith(PICKLE_SUFFIXES):
    raise ValueError(f"{path}: pickled PyTorch files are never loaded (unpickling runs code). "
                     f"Convert it once, on a machine with torch, to safetensors and pass that "
                     f"file: {torch_import.PTH_TO_SAFETENSORS}")
  if not os.path.isfile(path):
    raise FileNotFoundError(_missing_file_message(name, path))
  digest = sha256_of(path)
  if sha256 is not None and digest != sha256.lower():
    raise ValueError(f"SHA-256 mismatch for {path}: expected {sha256.lower()}, got {digest}; "
                     f"the file is corrupt or not the expected release")
  if path.endswith((".h5", ".hdf5")):
    return keras_import.load_keras(name, variables, keras_import.read_h5(path), path, digest,
                                   input_convention)
  if not path.endswith((".npz", ".safetensors")):
    raise ValueError(f"{path}: unsupported weight file type; expected .safetensors or .npz "
                     f"(torchvision state_dict names or Keras '<layer>/<weight>' names) or a "
                     f"Keras .h5/.hdf5")
  arrays = _read_flat(path)
  if torch_import.is_state_dict(arrays):
    return torch_import.load_torchvision(name, variables, arrays, path, digest, input_convention)
  if keras_import.is_keras_flat(arrays):
    return keras_import.load_keras(name, variables, keras_import.layers_from_flat(path, arrays),
                                   path, digest, input_convention)
  raise ValueError(f"{path}: neither torchvision state_dict names ('<module>.<weight|bias|"
                   f"running_mean|running_var>', e.g. 'conv1.weight') nor Keras names "
                   f"('<layer>/<weight>', e.g. 'block1_conv1/kernel'); first keys: "
                   f"{sorted(arrays)[:5]}")
