"""Inception-v3 feature network for FID/KID/IS, with weights imported from local files only.

Two variants of one architecture (Szegedy et al. 2015; module names follow torchvision and
pytorch-fid, so `Mixed_6b/branch7x7_2` means the same thing everywhere):

* 'fid': the TensorFlow graph `inception-2015-12-05` that FID is defined on (TTUR,
  pytorch-fid, torch-fidelity, clean-fid). It differs from Keras' `InceptionV3` in three places:
  the input is scaled as (x - 128) / 128, the last block (`Mixed_7c`) pools its 4th branch with a
  3×3 *max* pool, and the head has 1008 classes whose Inception Score uses the logits without
  bias (the original IS code and torch-fidelity's 'logits_unbiased').
* 'keras': `keras.applications.InceptionV3` (the same 2015 architecture retrained on ImageNet
  2012): x / 127.5 - 1, average pool in every block, a 1000-class (or no) head with bias.

Both average-pool branches exclude the padding from the mean (TensorFlow's SAME pooling), and
every BatchNorm uses eps = 1e-3. The variant is read from the weights: a 1008-class head
identifies the 2015-12-05 graph (no other Inception-v3 has one), anything else is 'keras'.

Weight files (never downloaded; produce them once on a machine with internet):

* `.npz` or `.safetensors` with the PyTorch state-dict names and layouts of pytorch-fid's
  `pt_inception-2015-12-05-6726825d.pth` (identical names in torch-fidelity's
  `weights-inception-2015-12-05-6726825d.pth`): `<module>.conv.weight` (O, I, kh, kw),
  `<module>.bn.weight|bias|running_mean|running_var`, `fc.weight` (1008, 2048), `fc.bias`;
  `num_batches_tracked` entries are ignored. Conversion (needs torch and numpy):
      sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu')
      np.savez('pt_inception-2015-12-05.npz', **{k: v.numpy() for k, v in sd.items()})
* Keras `.h5` of `keras.applications.InceptionV3(...)` (`model.save('x.h5')`, or the official
  `inception_v3_weights_tf_dim_ordering_tf_kernels[_notop].h5`): the legacy layout with
  `layer_names` / `weight_names` attributes, optionally under a `model_weights` group. Keras
  names its Conv2D/BatchNormalization layers automatically (`conv2d`, `conv2d_1`, ...), so
  layers are matched by their creation order (the numeric suffix), which is `CONV_LAYERS` order.
"""

from __future__ import annotations

import functools
import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from prepnet_jax.models import pretrained
from prepnet_jax.models.conv import Conv

VARIANTS = ("fid", "keras")
FID_NUM_CLASSES = 1008
FEATURE_DIM = 2048
MIN_INPUT_SIZE = 75
BN_EPSILON = 1e-3

# Conv+BN units per block type, in call order (= Keras' layer creation order).
_BLOCK_UNITS = {
    "A": ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3", "branch_pool"),
    "B": ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
    "C": ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
          "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"),
    "D": ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
          "branch7x7x3_4"),
    "E": ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
          "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"),
}
_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
_BLOCKS = (("Mixed_5b", "A"), ("Mixed_5c", "A"), ("Mixed_5d", "A"), ("Mixed_6a", "B"),
           ("Mixed_6b", "C"), ("Mixed_6c", "C"), ("Mixed_6d", "C"), ("Mixed_6e", "C"),
           ("Mixed_7a", "D"), ("Mixed_7b", "E"), ("Mixed_7c", "E"))
CONV_LAYERS: tuple[str, ...] = _STEM + tuple(
    f"{block}/{unit}" for block, kind in _BLOCKS for unit in _BLOCK_UNITS[kind])


class MissingWeightsError(FileNotFoundError):
  """The Inception weights file is not there; the message says how to make it."""


class BasicConv(nn.Module):
  """Conv (no bias) → BatchNorm (inference statistics, eps 1e-3) → ReLU."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  same: bool = False  # SAME padding for stride 1 (all odd kernels): (k - 1) / 2 on each side.

  @nn.compact
  def __call__(self, x):
    padding = [(k // 2, k // 2) for k in self.kernel] if self.same else "VALID"
    x = Conv(self.features, self.kernel, (self.strides, self.strides), padding=padding,
             use_bias=False, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
    return nn.relu(x)


def _avg_pool_same(x):
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


def _max_pool_valid(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, (1, 1), name="branch1x1")(x)
    b5 = BasicConv(48, (1, 1), name="branch5x5_1")(x)
    b5 = BasicConv(64, (5, 5), same=True, name="branch5x5_2")(b5)
    b3 = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = BasicConv(96, (3, 3), same=True, name="branch3x3dbl_2")(b3)
    b3 = BasicConv(96, (3, 3), same=True, name="branch3x3dbl_3")(b3)
    bp = BasicConv(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), strides=2, name="branch3x3")(x)
    bd = BasicConv(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv(96, (3, 3), same=True, name="branch3x3dbl_2")(bd)
    bd = BasicConv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_valid(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv(192, (1, 1), name="branch1x1")(x)
    b7 = BasicConv(c7, (1, 1), name="branch7x7_1")(x)
    b7 = BasicConv(c7, (1, 7), same=True, name="branch7x7_2")(b7)
    b7 = BasicConv(192, (7, 1), same=True, name="branch7x7_3")(b7)
    bd = BasicConv(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = BasicConv(c7, (7, 1), same=True, name="branch7x7dbl_2")(bd)
    bd = BasicConv(c7, (1, 7), same=True, name="branch7x7dbl_3")(bd)
    bd = BasicConv(c7, (7, 1), same=True, name="branch7x7dbl_4")(bd)
    bd = BasicConv(192, (1, 7), same=True, name="branch7x7dbl_5")(bd)
    bp = BasicConv(192, (1, 1), name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, (1, 1), name="branch3x3_1")(x)
    b3 = BasicConv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
    b7 = BasicConv(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = BasicConv(192, (1, 7), same=True, name="branch7x7x3_2")(b7)
    b7 = BasicConv(192, (7, 1), same=True, name="branch7x7x3_3")(b7)
    b7 = BasicConv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_valid(x)], axis=-1)


class InceptionE(nn.Module):
  max_pool_branch: bool = False  # the FID graph's last block (pytorch-fid's FIDInceptionE_2)

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, (1, 1), name="branch1x1")(x)
    b3 = BasicConv(384, (1, 1), name="branch3x3_1")(x)
    b3 = jnp.concatenate([BasicConv(384, (1, 3), same=True, name="branch3x3_2a")(b3),
                          BasicConv(384, (3, 1), same=True, name="branch3x3_2b")(b3)], axis=-1)
    bd = BasicConv(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = BasicConv(384, (3, 3), same=True, name="branch3x3dbl_2")(bd)
    bd = jnp.concatenate([BasicConv(384, (1, 3), same=True, name="branch3x3dbl_3a")(bd),
                          BasicConv(384, (3, 1), same=True, name="branch3x3dbl_3b")(bd)], axis=-1)
    if self.max_pool_branch:
      pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding="SAME")
    else:
      pooled = _avg_pool_same(x)
    bp = BasicConv(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3(nn.Module):
  """Pixels in [0, 255], (N, H, W, 3) with H, W >= 75 → {'pool': (N, 2048), 'logits': (N, K)}.

  `num_classes=0` is the headless network (no 'logits'). FID uses 299×299 inputs.
  """
  variant: str = "fid"
  num_classes: int = FID_NUM_CLASSES

  @nn.compact
  def __call__(self, pixels):
    if self.variant not in VARIANTS:
      raise ValueError(f"InceptionV3 variant must be one of {VARIANTS}, got {self.variant!r}")
    if min(pixels.shape[1:3]) < MIN_INPUT_SIZE:
      raise ValueError(f"InceptionV3 needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, "
                       f"got {pixels.shape[1:3]}")
    fid = self.variant == "fid"
    x = (pixels - 128.0) / 128.0 if fid else pixels / 127.5 - 1.0
    x = BasicConv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), same=True, name="Conv2d_2b_3x3")(x)
    x = _max_pool_valid(x)
    x = BasicConv(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = _max_pool_valid(x)
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE(name="Mixed_7b")(x)
    x = InceptionE(max_pool_branch=fid, name="Mixed_7c")(x)
    pool = jnp.mean(x, axis=(1, 2))
    out = {"pool": pool}
    if self.num_classes:
      kernel = self.param("fc_kernel", nn.initializers.lecun_normal(), (FEATURE_DIM, self.num_classes))
      bias = self.param("fc_bias", nn.initializers.zeros, (self.num_classes,))
      out["logits"] = pool @ kernel if fid else pool @ kernel + bias
    return out


# --- weight import -------------------------------------------------------------------------------

def missing_weights_message(path: str) -> str:
  if path:
    what = f"Inception-v3 weights file {path!r} does not exist"
  else:
    what = "no Inception-v3 weights file given"
  return (
      f"{what} (nothing is downloaded at run time).\n"
      "Make the file once on a machine with internet: either convert pytorch-fid's "
      "'pt_inception-2015-12-05-6726825d.pth' (the FID weights) with\n"
      "  sd = torch.load('pt_inception-2015-12-05-6726825d.pth', map_location='cpu')\n"
      "  numpy.savez('pt_inception-2015-12-05.npz', **{k: v.numpy() for k, v in sd.items()})\n"
      "(or safetensors.torch.save_file(sd, '....safetensors')), or save "
      "keras.applications.InceptionV3(weights='imagenet') with model.save('inception_v3.h5') "
      "(not FID: named 'inception_keras'). Then pass its path "
      "(config: inception.weights_path) and, to pin it, its SHA-256 (inception.sha256). "
      "Expected keys: see prepnet_jax/models/inception_v3.py.")


@functools.lru_cache(maxsize=4)
def abstract_variables(variant: str, num_classes: int) -> dict:
  """Shapes of every variable (no compute), to check imported arrays against."""
  model = InceptionV3(variant=variant, num_classes=num_classes)
  sample = jax.ShapeDtypeStruct((1, MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), sample)


def _unit_arrays(kernel, beta, mean, var, gamma=None) -> dict[str, np.ndarray]:
  gamma = np.ones_like(beta) if gamma is None else gamma
  return dict(kernel=kernel, scale=gamma, bias=beta, mean=mean, var=var)


def _read_torch_layout(arrays: dict[str, np.ndarray],
                       path: str) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
  units, used = {}, set()

  def take(key):
    if key not in arrays:
      raise ValueError(f"{path}: missing array {key!r} (expected pytorch-fid state-dict names, "
                       f"e.g. 'Mixed_5b.branch1x1.conv.weight')")
    used.add(key)
    return np.asarray(arrays[key], np.float32)

  for unit in CONV_LAYERS:
    p = unit.replace("/", ".")
    kernel = take(f"{p}.conv.weight")
    if kernel.ndim != 4:
      raise ValueError(f"{path}: {p}.conv.weight must be (O, I, kh, kw), got shape {kernel.shape}")
    units[unit] = _unit_arrays(kernel.transpose(2, 3, 1, 0), take(f"{p}.bn.bias"),
                               take(f"{p}.bn.running_mean"), take(f"{p}.bn.running_var"),
                               take(f"{p}.bn.weight"))
  fc_kernel = fc_bias = None
  if "fc.weight" in arrays:
    fc_kernel, fc_bias = take("fc.weight").T, take("fc.bias")
  unexpected = sorted(k for k in arrays if k not in used and not k.endswith("num_batches_tracked"))
  if unexpected:
    raise ValueError(f"{path}: unexpected arrays {unexpected[:5]} (total {len(unexpected)}); "
                     "expected only the FID Inception-v3 state dict (no AuxLogits)")
  return units, fc_kernel, fc_bias


def _creation_index(layer_name: str) -> int:
  match = re.search(r"_(\d+)$", layer_name)
  return int(match.group(1)) if match else 0


def _read_keras_h5(path: str) -> tuple[dict, np.ndarray | None, np.ndarray | None]:
  import h5py
  convs, bns, dense = [], [], []
  with h5py.File(path, "r") as f:
    group = f["model_weights"] if "model_weights" in f else f
    if "layer_names" not in group.attrs:
      raise ValueError(f"{path}: not a Keras legacy .h5 (no 'layer_names' attribute); save the "
                       "model with model.save('name.h5')")
    for raw in group.attrs["layer_names"]:
      name = raw.decode() if isinstance(raw, bytes) else str(raw)
      layer = group[name]
      weights = {}
      for raw_w in layer.attrs.get("weight_names", []):
        w = raw_w.decode() if isinstance(raw_w, bytes) else str(raw_w)
        weights[w.split("/")[-1].split(":")[0]] = np.asarray(layer[w], np.float32)
      if "moving_mean" in weights:
        bns.append((name, weights))
      elif "kernel" in weights and weights["kernel"].ndim == 4:
        convs.append((name, weights))
      elif "kernel" in weights and weights["kernel"].ndim == 2:
        dense.append((name, weights))
  if len(convs) != len(CONV_LAYERS) or len(bns) != len(CONV_LAYERS) or len(dense) > 1:
    raise ValueError(f"{path}: expected {len(CONV_LAYERS)} Conv2D, {len(CONV_LAYERS)} "
                     f"BatchNormalization and at most 1 Dense layer (Keras InceptionV3), found "
                     f"{len(convs)}, {len(bns)} and {len(dense)}")
  convs.sort(key=lambda item: _creation_index(item[0]))
  bns.sort(key=lambda item: _creation_index(item[0]))
  units = {}
  for unit, (_, conv), (_, bn) in zip(CONV_LAYERS, convs, bns):
    units[unit] = _unit_arrays(conv["kernel"], bn["beta"], bn["moving_mean"], bn["moving_variance"],
                               bn.get("gamma"))
  if not dense:
    return units, None, None
  return units, dense[0][1]["kernel"], dense[0][1]["bias"]


def _read_arrays(path: str) -> dict[str, np.ndarray]:
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  from safetensors.numpy import load_file
  return load_file(path)


def _assemble(units: dict, fc_kernel, fc_bias, variant: str, num_classes: int, path: str) -> dict:
  expected = abstract_variables(variant, num_classes)
  params, stats = {}, {}
  for unit, a in units.items():
    p_node, s_node = params, stats
    for part in unit.split("/"):
      p_node, s_node = p_node.setdefault(part, {}), s_node.setdefault(part, {})
    p_node.update(conv={"kernel": a["kernel"]}, bn={"scale": a["scale"], "bias": a["bias"]})
    s_node.update(bn={"mean": a["mean"], "var": a["var"]})
  if num_classes:
    params.update(fc_kernel=fc_kernel, fc_bias=fc_bias)
  variables = {"params": params, "batch_stats": stats}
  got = jax.tree_util.tree_flatten_with_path(variables)[0]
  want = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
  for key, array in got:
    if key not in want or tuple(array.shape) != tuple(want[key].shape):
      name = jax.tree_util.keystr(key)
      raise ValueError(f"{path}: array {name} has shape {array.shape}, expected "
                       f"{want[key].shape if key in want else 'no such variable'} (InceptionV3 {variant})")
  if len(got) != len(want):
    raise ValueError(f"{path}: {len(got)} arrays imported, the model has {len(want)}")
  return variables


def load_inception(path: str, expected_sha256: str | None = None) -> tuple[InceptionV3, dict, dict]:
  """(model, variables, info) from a local weights file; info: variant, num_classes, sha256, format.

  Raises `MissingWeightsError` (with instructions) when the file is absent and ValueError when
  its SHA-256 differs from `expected_sha256` or its arrays do not fit the architecture.
  """
  if not path or not os.path.isfile(path):
    raise MissingWeightsError(missing_weights_message(path))
  sha256 = pretrained.sha256_of(path)
  if expected_sha256 and sha256 != expected_sha256.lower():
    raise ValueError(f"{path}: SHA-256 {sha256} differs from the expected {expected_sha256}")
  if path.endswith(".h5"):
    fmt, (units, fc_kernel, fc_bias) = "keras_h5", _read_keras_h5(path)
  elif path.endswith((".npz", ".safetensors")):
    fmt = "torch_state_dict_" + path.rsplit(".", 1)[-1]
    units, fc_kernel, fc_bias = _read_torch_layout(_read_arrays(path), path)
  else:
    raise ValueError(f"{path}: unknown weights format; expected .npz, .safetensors or .h5")
  num_classes = 0 if fc_kernel is None else int(fc_kernel.shape[1])
  variant = "fid" if num_classes == FID_NUM_CLASSES else "keras"
  variables = _assemble(units, fc_kernel, fc_bias, variant, num_classes, path)
  model = InceptionV3(variant=variant, num_classes=num_classes)
  return model, variables, dict(variant=variant, num_classes=num_classes, sha256=sha256, format=fmt)

