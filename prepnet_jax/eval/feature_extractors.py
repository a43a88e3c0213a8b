"""Named image embeddings for generative metrics: Inception-v3 (FID), random-init CNN, classifier.

A metric's name says which embedding made it (DESIGN.md, honesty rules): only the FID
Inception-v3 (2015-12-05 weights, 299×299) gives 'fid'; the others give `fd_randinit`,
`fd_classifier`, `fd_inception_keras`, ... Every extractor carries its weights hash and a
description of its resize, and works the same way:

  images (uint8, or floats in a declared `value_range`; 1 or 3 channels; a list when sizes
  differ) → quantised to uint8 exactly as saved PNGs would be → repeated to 3 channels →
  resized per image on the host → batched, jitted, data-parallel network → (N, d) float32.

Specs for `get_extractor`:
  'inception' / 'inception:<path>'  Inception-v3 from a local file (`weights_path=`), never
                                    downloaded; resized to 299 by `resize_mode=` (below).
  'randinit'                        fixed-seed random-init CNN (Naeem et al. 2020's proposal for
                                    data far from ImageNet); `seed=`, `image_size=`, `widths=`.
  'classifier:<workdir>'            a classifier run of this project: global average of its
                                    `features()` map, softmax/sigmoid of its logits for IS.

Inception resize modes (clean-fid's names; each reproduces the implementation whose published
numbers it is meant to match, and a mode other than 'clean' is appended to the metric names,
e.g. `fid_legacy_pytorch`, `fd_inception_keras_legacy_tensorflow`):
  'clean'              clean-fid's default: PIL bicubic (antialiased) on float32 per channel,
                       clipped to [0, 255].
  'legacy_pytorch'     pytorch-fid: torch `F.interpolate(mode='bilinear', align_corners=False)`
                       (half-pixel centres, no antialias), and its input scaling 2·x/255 − 1 in
                       place of the TF graph's (x − 128) / 128.
  'legacy_tensorflow'  TTUR (TF1 graph): `tf.compat.v1.image.resize_bilinear` with
                       align_corners=False and no half-pixel centres (source = dst · in/out).
The bilinear modes are computed here in numpy (source coordinates rounded to float32 as in those
kernels, weights applied in float64, float32 result); torch and TensorFlow are only the references
that tests/test_fid_resize_modes.py compares them with (to 1e-3 of 255).
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from prepnet_jax.models.conv import Conv
from prepnet_jax.data import transforms
from prepnet_jax.eval import trained
from prepnet_jax.models import inception_v3
from prepnet_jax.models.inception_v3 import MissingWeightsError
from prepnet_jax.runtime import writers

INCEPTION_SIZE = 299
RANDINIT_WIDTHS = (32, 64, 128, 256, 512)
RESIZE_MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")
DEFAULT_RESIZE_MODE = "clean"
# A feature-extraction pass prints a progress line at most this often; a shorter pass prints none.
PROGRESS_EVERY_SECONDS = 10.0

Images = np.ndarray | Sequence[np.ndarray]


def tree_sha256(tree: Any) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes: the identity of in-memory weights."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    leaf = np.asarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};".encode())
    digest.update(np.ascontiguousarray(leaf).tobytes())
  return digest.hexdigest()


def as_uint8_images(images: Images, value_range: tuple[float, float] | None = None) -> list[np.ndarray]:
  """uint8 HxWxC images; floats in `value_range` are rounded to uint8 as a PNG writer would."""
  if isinstance(images, np.ndarray) and images.ndim in (3, 4):
    images = images[..., None] if images.ndim == 3 else images
    batch = [images]
  else:
    batch = [np.asarray(img)[None] for img in images]
    batch = [b[..., None] if b.ndim == 3 else b for b in batch]
  out = []
  for b in batch:
    if b.ndim != 4 or b.shape[-1] not in (1, 3):
      raise ValueError(f"expected images of shape (N, H, W), (N, H, W, 1) or (N, H, W, 3), got "
                       f"{b.shape[1:] if b.ndim == 4 else b.shape}")
    if b.dtype == np.uint8:
      out.extend(b)
      continue
    if not np.issubdtype(b.dtype, np.floating):
      raise TypeError(f"images must be uint8 or float, got dtype {b.dtype}")
    if value_range is None:
      raise ValueError("float images need value_range=(lo, hi), e.g. (-1, 1) for generator outputs")
    lo, hi = (float(v) for v in value_range)
    slack = 1e-3 * (hi - lo)
    if b.size and (b.min() < lo - slack or b.max() > hi + slack):
      raise ValueError(f"images span [{b.min():.4g}, {b.max():.4g}], outside the declared "
                       f"value_range ({lo}, {hi})")
    scaled = (b.astype(np.float32) - lo) * (255.0 / (hi - lo))
    out.extend(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
  return out


def check_resize_mode(mode: str, field: str = "resize_mode") -> str:
  """`mode` if it is one of RESIZE_MODES; else a one-line error naming `field` and the choices."""
  if mode not in RESIZE_MODES:
    raise ValueError(f"{field}={mode!r} is not a resize mode; expected one of "
                     f"{', '.join(repr(m) for m in RESIZE_MODES)}")
  return mode


def clean_resize(image_uint8: np.ndarray, size: int) -> np.ndarray:
  """clean-fid's 'clean' resize: 3 channels, PIL bicubic (antialiased) on float32, clipped."""
  image = transforms.set_channels(image_uint8, 3).astype(np.float32)
  return np.clip(transforms.resize(image, (size, size), "bicubic"), 0.0, 255.0)


def _bilinear_taps(in_size: int, out_size: int, half_pixel_centers: bool):
  """For each output row: the two source rows and the weight of the second one.

  Half-pixel centres (torch, align_corners=False): source = (dst + 0.5) · in/out − 0.5, clamped
  at 0. TF1's legacy rule: source = dst · in/out. Both clamp the second row at the last one. The
  coordinate is rounded to float32 as in their kernels (torch's with one rounding, as a fused
  multiply-add): computed exactly instead, it can move by an ulp of float32, which shifts a pixel
  next to a sharp edge by ~0.01 of 255.
  """
  scale = np.float64(np.float32(in_size) / np.float32(out_size))
  dst = np.arange(out_size, dtype=np.float64)
  if half_pixel_centers:  # exact in float64 (a float32 product), then rounded once
    src = np.maximum(scale * (dst + 0.5) - 0.5, 0.0).astype(np.float32)
  else:
    src = (dst * scale).astype(np.float32)
  lower = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  upper = np.minimum(lower + 1, in_size - 1)
  return lower, upper, src.astype(np.float64) - lower


def bilinear_resize(image: np.ndarray, size: tuple[int, int], half_pixel_centers: bool) -> np.ndarray:
  """Bilinear HxWxC → size[0]×size[1]×C float32 without antialiasing (separable: rows, then columns)."""
  image = np.asarray(image, np.float64)
  (y0, y1, wy), (x0, x1, wx) = (_bilinear_taps(n, s, half_pixel_centers)
                                for n, s in zip(image.shape[:2], size))
  rows = image[y0] * (1.0 - wy)[:, None, None] + image[y1] * wy[:, None, None]
  out = rows[:, x0] * (1.0 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
  return out.astype(np.float32)


def resize_by_mode(image_uint8: np.ndarray, size: int, mode: str = DEFAULT_RESIZE_MODE) -> np.ndarray:
  """uint8 HxWx{1,3} → float32 size×size×3 in [0, 255] by one of RESIZE_MODES (module docstring)."""
  check_resize_mode(mode)
  if mode == "clean":
    return clean_resize(image_uint8, size)
  image = transforms.set_channels(image_uint8, 3)
  return bilinear_resize(image, (size, size), half_pixel_centers=mode == "legacy_pytorch")


def resize_description(size: int, mode: str = DEFAULT_RESIZE_MODE) -> str:
  """What `resize_by_mode(., size, mode)` does, for records and cache keys."""
  check_resize_mode(mode)
  what = {"clean": f"pil_bicubic_float32_{size} (clean-fid 'clean'",
          "legacy_pytorch": f"torch_bilinear_float32_{size} (clean-fid 'legacy_pytorch' = pytorch-fid: "
                            "align_corners=False, no antialias",
          "legacy_tensorflow": f"tf1_bilinear_float32_{size} (clean-fid 'legacy_tensorflow' = TTUR: "
                               "tf.compat.v1.image.resize_bilinear, no half-pixel centres, no antialias"}
  return what[mode] + "; gray repeated to 3 channels)"


class FeatureExtractor:
  """A named embedding: `features(images)` → (N, d); `class_probs(images)` → (N, K) if it has logits.

  `forward(variables, batch)` → (features, logits or None) runs jitted on this process's
  devices (batch split over them); `prepare(uint8 HxWxC)` → float32 network input per image.
  `resize_mode` is one of RESIZE_MODES where the extractor follows clean-fid's conventions (None
  for a classifier's own preprocessing); a mode other than 'clean' is part of the metric names.
  """

  def __init__(self, *, name: str, description: str, weights_sha256: str, resize: str,
               feature_dim: int, num_classes: int, forward: Callable, variables: Any,
               prepare: Callable[[np.ndarray], np.ndarray], standard_fid: bool = False,
               batch_size: int = 64, resize_mode: str | None = None):
    self.name, self.description, self.weights_sha256 = name, description, weights_sha256
    self.resize, self.feature_dim, self.num_classes = resize, feature_dim, num_classes
    self.standard_fid, self.resize_mode = standard_fid, resize_mode
    self.fallback_from: str | None = None
    self._prepare = prepare
    self._mesh = Mesh(np.asarray(jax.local_devices()), ("data",))
    devices = self._mesh.devices.size
    self.batch_size = max(devices, (int(batch_size) + devices - 1) // devices * devices)
    self._variables = jax.device_put(variables, NamedSharding(self._mesh, P()))
    self._batch_sharding = NamedSharding(self._mesh, P("data"))
    self._forward = jax.jit(forward)

  @property
  def has_class_probs(self) -> bool:
    return self.num_classes > 0

  def features_and_probs(self, images: Images, value_range=None, label: str = "",
                         progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Features (N, d) and, for extractors with a head, class probabilities (N, K).

    With `progress`, a pass that runs longer than PROGRESS_EVERY_SECONDS prints progress lines
    ('[features <name> <label>] image n/N | rate | elapsed | ETA') on process 0, at most that often.
    """
    images = as_uint8_images(images, value_range)
    total = len(images)
    line = None  # progress line, process 0 only
    if progress and jax.process_index() == 0:
      name = " ".join(filter(None, ("features", self.name, label)))
      line = writers.Progress(total, every=0, name=name, every_seconds=PROGRESS_EVERY_SECONDS, unit="image")
      quiet_until = time.time() + PROGRESS_EVERY_SECONDS
    feats, logits = [], []
    for start in range(0, total, self.batch_size):
      chunk = [self._prepare(img) for img in images[start:start + self.batch_size]]
      batch = np.zeros((self.batch_size,) + chunk[0].shape, np.float32)
      batch[:len(chunk)] = np.stack(chunk)
      f, lg = self._forward(self._variables, jax.device_put(batch, self._batch_sharding))
      feats.append(np.asarray(f)[:len(chunk)])
      if lg is not None:
        logits.append(np.asarray(lg)[:len(chunk)])
      done = start + len(chunk)
      if line is None:
        continue
      if start == 0 and done < total:
        line.restart_rate(done)  # the first batch also compiled: no guide to the others' speed
      elif line.due(done) and (done < total or time.time() >= quiet_until):
        print(line.message(done), flush=True)
    if not feats:
      raise ValueError("no images given")
    return np.concatenate(feats).astype(np.float32), (_probs(np.concatenate(logits)) if logits else None)

  def features(self, images: Images, value_range=None, label: str = "") -> np.ndarray:
    return self.features_and_probs(images, value_range, label)[0]

  def class_probs(self, images: Images, value_range=None, label: str = "") -> np.ndarray:
    if not self.has_class_probs:
      raise ValueError(f"extractor {self.name!r} has no classifier head, so no class probabilities")
    return self.features_and_probs(images, value_range, label)[1]

  def describe(self) -> dict:
    return dict(extractor=self.name, extractor_detail=self.description,
                weights_sha256=self.weights_sha256, resize=self.resize, resize_mode=self.resize_mode,
                feature_dim=self.feature_dim, fallback_from=self.fallback_from)


def _probs(logits: np.ndarray) -> np.ndarray:
  logits = logits.astype(np.float64)
  if logits.shape[1] == 1:  # one-logit binary classifier: P(positive) = sigmoid
    p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
    return np.stack([1.0 - p, p], axis=1)
  logits = logits - logits.max(axis=1, keepdims=True)
  e = np.exp(logits)
  return e / e.sum(axis=1, keepdims=True)


# --- Inception-v3 --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _inception_forward(variant: str, num_classes: int) -> Callable:
  """One forward function per architecture: jax.jit shares its compiled code between every
  extractor built on it (several resize modes, an extractor made at each evaluation), where a
  new closure per extractor would compile Inception again (tens of seconds on CPU)."""
  model = inception_v3.InceptionV3(variant=variant, num_classes=num_classes)

  def forward(v, x):
    out = model.apply(v, x)
    return out["pool"], out.get("logits")

  return forward


def inception_extractor(weights_path: str, sha256: str | None = None, batch_size: int = 64,
                        resize_mode: str = DEFAULT_RESIZE_MODE) -> FeatureExtractor:
  """Inception-v3 pool3 features at 299×299; 'inception_fid' only for the 2015-12-05 weights."""
  check_resize_mode(resize_mode)
  _, variables, info = inception_v3.load_inception(weights_path, sha256 or None)
  fid = info["variant"] == "fid"
  # The FID graph scales its input as (p − 128) / 128; pytorch-fid feeds it 2·x/255 − 1 instead,
  # which is the same network on p = x · 128/127.5.
  pytorch_scaling = fid and resize_mode == "legacy_pytorch"
  scaling = ", input scaled as pytorch-fid (2x/255 - 1)" if pytorch_scaling else ""

  def prepare(img):
    pixels = resize_by_mode(img, INCEPTION_SIZE, resize_mode)
    return pixels * np.float32(128.0 / 127.5) if pytorch_scaling else pixels

  name = "inception_fid" if fid else "inception_keras"
  description = (f"Inception-v3 {'2015-12-05 FID graph' if fid else 'Keras InceptionV3 layout'} "
                 f"pool3 (2048-d), {info['num_classes'] or 'no'} classes, from "
                 f"{os.path.basename(weights_path)} ({info['format']}), resize mode "
                 f"{resize_mode!r}{scaling}")
  return FeatureExtractor(
      name=name, description=description, weights_sha256=info["sha256"],
      resize=resize_description(INCEPTION_SIZE, resize_mode), feature_dim=inception_v3.FEATURE_DIM,
      num_classes=info["num_classes"], forward=_inception_forward(info["variant"], info["num_classes"]),
      variables=variables, prepare=prepare, standard_fid=fid, batch_size=batch_size,
      resize_mode=resize_mode)


# --- fixed-seed random-init CNN -------------------------------------------------------------------

class RandomConvNet(nn.Module):
  """3×3 convs (stride 1, then 2) with ReLU, global average pool; weights from `randinit_variables`."""
  widths: Sequence[int] = RANDINIT_WIDTHS

  @nn.compact
  def __call__(self, x):
    for i, width in enumerate(self.widths):
      x = nn.relu(Conv(width, (3, 3), strides=1 if i == 0 else 2, padding="SAME")(x))
    return jnp.mean(x, axis=(1, 2))


def randinit_variables(seed: int, widths: Sequence[int] = RANDINIT_WIDTHS) -> dict:
  """He-normal kernels and zero biases drawn with numpy's PCG64, so the weights (and their
  hash) are bit-identical on every machine and backend, unlike XLA-compiled initialisers."""
  sample = jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)
  shapes = jax.eval_shape(RandomConvNet(tuple(widths)).init, jax.random.key(0), sample)
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1].key != "kernel":
      return np.zeros(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def randinit_extractor(seed: int = 0, image_size: int = 128, widths: Sequence[int] = RANDINIT_WIDTHS,
                       batch_size: int = 64) -> FeatureExtractor:
  """Random-init CNN features (`fd_randinit`): same seed, same weights on every machine."""
  widths = tuple(int(w) for w in widths)
  model = RandomConvNet(widths)
  variables = randinit_variables(seed, widths)

  def forward(v, x):
    return model.apply(v, x), None

  return FeatureExtractor(
      name="randinit", weights_sha256=tree_sha256(variables), resize=resize_description(image_size),
      description=f"random-init CNN widths={widths} seed={seed} (numpy He-normal) input "
                  f"{image_size}x{image_size} in [-1, 1], global average pool",
      feature_dim=widths[-1], num_classes=0, forward=forward, variables=variables,
      prepare=lambda img: clean_resize(img, image_size) / 127.5 - 1.0, batch_size=batch_size,
      resize_mode="clean")


# --- a classifier of this project -----------------------------------------------------------------

def classifier_extractor(workdir: str, step: int | None = None, batch_size: int = 64) -> FeatureExtractor:
  """Penultimate embedding of a 'classifier' run: `best/` checkpoint, or `checkpoints/` `step`."""
  trained_classifier = trained.load_classifier(workdir, step)
  config, variables = trained_classifier.config, trained_classifier.variables
  # Features for a metric in float32, whatever precision the run trained in (`half_precision`).
  model = trained_classifier.model.clone(dtype=jnp.float32)
  which = trained_classifier.checkpoint
  preprocess = transforms.make_preprocess(config.preprocess, training=False)
  rng = np.random.default_rng(0)  # unused by the evaluation preprocess; the API needs one

  def forward(v, x):
    fmap = model.apply(v, x, train=False, method="features")
    return jnp.mean(fmap, axis=(1, 2)), model.apply(v, fmap, train=False, method="head")

  p = config.preprocess
  sample = jax.ShapeDtypeStruct((1, int(p.image_size), int(p.image_size), int(p.channels)), jnp.float32)
  feat_shape, logit_shape = jax.eval_shape(forward, variables, sample)
  return FeatureExtractor(
      name="classifier", weights_sha256=tree_sha256(variables),
      description=f"{config.model.name} classifier {os.path.abspath(workdir)} ({which}), "
                  "global average of features()",
      resize=(f"classifier preprocess: {p.resize_method} to {p.image_size}x{p.image_size}, "
              f"{p.channels} channels, grayscale={p.grayscale}, equalize={p.equalize}, "
              f"value_range={p.value_range}"),
      feature_dim=int(feat_shape.shape[-1]), num_classes=int(logit_shape.shape[-1]), forward=forward,
      variables=variables, prepare=lambda img: preprocess({"image": img}, rng)["image"],
      batch_size=batch_size)


# --- by name --------------------------------------------------------------------------------------

def get_extractor(spec: str, **kwargs) -> FeatureExtractor:
  """'inception[:<path>]' (weights_path=, sha256=, resize_mode=), 'randinit' (seed=, image_size=,
  widths=), 'classifier:<workdir>' (step=); all take batch_size=. See the module docstring."""
  kind, _, arg = spec.partition(":")
  if kind == "inception":
    if arg:
      kwargs.setdefault("weights_path", arg)
    if not kwargs.get("weights_path"):
      raise MissingWeightsError(inception_v3.missing_weights_message(""))
    return inception_extractor(**kwargs)
  if kind == "randinit" and not arg:
    return randinit_extractor(**kwargs)
  if kind == "classifier" and arg:
    return classifier_extractor(arg, **kwargs)
  raise ValueError(f"unknown feature extractor {spec!r}; expected 'inception[:<weights path>]', "
                   "'randinit' or 'classifier:<workdir>'")


def get_extractor_or_fallback(spec: str, *, allow_fallback: bool = False, fallback: str = "randinit",
                              fallback_kwargs: dict | None = None, **kwargs) -> FeatureExtractor:
  """`get_extractor(spec)`; only a *missing* weights file may switch to `fallback`, and only
  when allowed. The substitute keeps its own name (so its records read `fd_randinit`, never
  'fid') and `fallback_from` says what it replaces. A wrong hash is always an error."""
  try:
    return get_extractor(spec, **kwargs)
  except MissingWeightsError as e:
    if not allow_fallback:
      raise
    extractor = get_extractor(fallback, **(fallback_kwargs or {}))
    path = kwargs.get("weights_path") or spec.partition(":")[2] or "no path given"
    extractor.fallback_from = f"{spec} (weights missing: {path})"
    message = (f"feature extractor {spec!r} unavailable ({str(e).splitlines()[0]}); FALLING BACK to "
               f"{extractor.name!r}: its metrics are named with '_{extractor.name}', not FID")
    logging.warning("%s", message)
    print(f"[gen_metrics] {message}", flush=True)
    return extractor
