"""Per-example image transforms in pure numpy (run inside grain `map`s, one example at a time).

Every op takes and returns an H×W×C array. uint8 stays uint8 wherever the op is defined on
8-bit images, so the pixel values match what Pillow/torchvision produce for the thesis
pipeline (resize → PIL equalize → ImageNet normalisation, §5.3).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import ml_collections
import numpy as np
import scipy.ndimage
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VALUE_RANGES = ("unit", "symmetric", "imagenet", "raw")
RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
AFFINE_FILL_MODES = ("nearest", "constant", "reflect", "mirror", "wrap")


def _as_hwc(img: np.ndarray) -> np.ndarray:
  img = np.asarray(img)
  if img.ndim == 2:
    return img[:, :, None]
  if img.ndim != 3:
    raise ValueError(f"expected an image of shape HxW or HxWxC, got shape {img.shape}")
  return img


def luma(img: np.ndarray) -> np.ndarray:
  """ITU-R 601 luma, HxWx3 -> HxWx1; uint8 rounds exactly like Pillow's RGB->'L' conversion."""
  img = _as_hwc(img)
  if img.shape[-1] != 3:
    raise ValueError(f"luma expects 3 channels (RGB), got shape {img.shape}")
  if img.dtype == np.uint8:
    # Pillow's fixed-point formula (Convert.c, L24): weights scaled by 2**16, rounded.
    rgb = img.astype(np.uint32)
    y = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return y.astype(np.uint8)[..., None]
  if not np.issubdtype(img.dtype, np.floating):
    raise TypeError(f"luma expects uint8 or float images, got dtype {img.dtype}")
  weights = np.asarray([0.299, 0.587, 0.114], dtype=img.dtype)
  return (img @ weights)[..., None].astype(img.dtype)


def set_channels(img: np.ndarray, channels: int) -> np.ndarray:
  """Converts to 1 or 3 channels: repeat gray, luma of RGB; alpha (LA/RGBA) is dropped first."""
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  img = _as_hwc(img)
  c = img.shape[-1]
  if c in (2, 4):  # LA / RGBA: the alpha channel carries no anatomy.
    img, c = img[..., :c - 1], c - 1
  if c not in (1, 3):
    raise ValueError(f"cannot convert an image with {img.shape[-1]} channels to {channels}")
  if c == channels:
    return img
  if channels == 3:
    return np.repeat(img, 3, axis=-1)
  return luma(img)


def resize(img: np.ndarray, size: tuple[int, int], method: str = "bilinear") -> np.ndarray:
  """Resizes to size=(height, width) with Pillow (antialiased when shrinking), channel by channel.

  uint8 goes through Pillow mode 'L' (identical to Pillow on L/RGB images); any other dtype
  through mode 'F' and comes back float32.
  """
  if method not in RESIZE_METHODS:
    raise ValueError(f"unknown resize method {method!r}; expected one of {sorted(RESIZE_METHODS)}")
  height, width = (int(s) for s in size)
  if height <= 0 or width <= 0:
    raise ValueError(f"resize size must be positive (height, width), got {size}")
  img = _as_hwc(img)
  dtype = np.uint8 if img.dtype == np.uint8 else np.float32  # Pillow modes 'L' and 'F'.
  if img.shape[:2] == (height, width):
    return img.astype(dtype, copy=False)
  resample = RESIZE_METHODS[method]
  channels = [
      np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=dtype))
                 .resize((width, height), resample))
      for c in range(img.shape[-1])
  ]
  return np.stack(channels, axis=-1)


def _equalize_channel(channel: np.ndarray) -> np.ndarray:
  hist = np.bincount(channel.ravel(), minlength=256)
  nonzero = hist[hist > 0]
  if len(nonzero) <= 1:
    return channel
  step = (int(nonzero.sum()) - int(nonzero[-1])) // 255
  if step == 0:
    return channel
  before = np.concatenate([[0], np.cumsum(hist)[:-1]])
  lut = np.minimum((before + step // 2) // step, 255).astype(np.uint8)
  return lut[channel]


def equalize(img: np.ndarray) -> np.ndarray:
  """Histogram equalisation per channel, bit-exact with PIL.ImageOps.equalize (thesis §5.3)."""
  img = _as_hwc(img)
  if img.dtype != np.uint8:
    raise TypeError(f"equalize expects uint8, got dtype {img.dtype}")
  return np.stack([_equalize_channel(img[..., c]) for c in range(img.shape[-1])], axis=-1)


def window_ct(hu: np.ndarray, level: float, width: float) -> np.ndarray:
  """Maps Hounsfield units linearly to uint8: [level - width/2, level + width/2] -> [0, 255]."""
  if not width > 0:
    raise ValueError(f"CT window width must be positive, got {width}")
  low = level - width / 2.0
  scaled = (np.asarray(hu, dtype=np.float32) - low) * (255.0 / width)
  return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def _mean_std(value_range: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (offset, scale) in uint8 units so that x = (u8 - offset) / scale."""
  if value_range == "raw":
    return np.zeros(channels, np.float32), np.ones(channels, np.float32)
  if value_range == "unit":
    return np.zeros(channels, np.float32), np.full(channels, 255.0, np.float32)
  if value_range == "symmetric":
    return np.full(channels, 127.5, np.float32), np.full(channels, 127.5, np.float32)
  if value_range == "imagenet":
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    if channels == 1:  # one gray channel: the mean of the RGB statistics.
      mean, std = mean.mean(keepdims=True), std.mean(keepdims=True)
    elif channels != 3:
      raise ValueError(f"'imagenet' normalisation needs 1 or 3 channels, got {channels}")
    return mean * 255.0, std * 255.0
  raise ValueError(f"unknown value_range {value_range!r}; expected one of {VALUE_RANGES}")


def normalize(img_uint8: np.ndarray, value_range: str) -> np.ndarray:
  """uint8 -> float32 in the model family's range: unit [0,1], symmetric [-1,1], imagenet, raw."""
  img = _as_hwc(img_uint8)
  if img.dtype != np.uint8:
    raise TypeError(f"normalize expects uint8 input, got dtype {img.dtype}")
  offset, scale = _mean_std(value_range, img.shape[-1])
  return ((img.astype(np.float32) - offset) / scale).astype(np.float32)


def denormalize(x: np.ndarray, value_range: str) -> np.ndarray:
  """Inverse of `normalize` for display: float -> uint8 (rounded, clipped)."""
  x = _as_hwc(np.asarray(x, dtype=np.float32))
  offset, scale = _mean_std(value_range, x.shape[-1])
  return np.rint(np.clip(x * scale + offset, 0.0, 255.0)).astype(np.uint8)


def random_crop_with_margin(rng: np.random.Generator, img: np.ndarray, out_size: int | tuple[int, int],
                            margin: int) -> np.ndarray:
  """Random crop whose window stays `margin` px away from every edge (thesis §4.8 reading).

  Offsets are uniform in [margin, in - out - margin]; 240 -> 224 with margin 4 gives [4, 12].
  """
  img = _as_hwc(img)
  out_h, out_w = (out_size, out_size) if np.isscalar(out_size) else out_size
  in_h, in_w = img.shape[:2]
  if margin < 0 or in_h - out_h - 2 * margin < 0 or in_w - out_w - 2 * margin < 0:
    raise ValueError(f"cannot crop {out_h}x{out_w} with margin {margin} from a {in_h}x{in_w} image")
  top = int(rng.integers(margin, in_h - out_h - margin + 1))
  left = int(rng.integers(margin, in_w - out_w - margin + 1))
  return img[top:top + out_h, left:left + out_w]


def random_flip(rng: np.random.Generator, img: np.ndarray, horizontal: bool = True,
                vertical: bool = False, p: float = 0.5) -> np.ndarray:
  """Flips left-right and/or up-down, each independently with probability p."""
  img = _as_hwc(img)
  if horizontal and rng.random() < p:
    img = img[:, ::-1]
  if vertical and rng.random() < p:
    img = img[::-1]
  return np.ascontiguousarray(img)


def random_affine(rng: np.random.Generator, img: np.ndarray, degrees: float = 0., translate: float = 0.,
                  scale: float = 0., shear: float = 0., fill: str = "nearest") -> np.ndarray:
  """Random rotation/translation/scale/shear about the image centre (bilinear, scipy.ndimage).

  Ranges follow torchvision's RandomAffine: angle in [-degrees, degrees], shift in
  [-translate, translate] × size, zoom in [1 - scale, 1 + scale], shear angle in [-shear, shear].
  `fill` is the scipy.ndimage boundary mode ('constant' fills with 0).
  """
  if fill not in AFFINE_FILL_MODES:
    raise ValueError(f"unknown affine fill {fill!r}; expected one of {AFFINE_FILL_MODES}")
  if min(degrees, translate, scale, shear) < 0 or scale >= 1:
    raise ValueError(f"affine ranges must be >= 0 (scale < 1), got degrees={degrees}, "
                     f"translate={translate}, scale={scale}, shear={shear}")
  img = _as_hwc(img)
  if degrees == translate == scale == shear == 0:
    return img
  angle = np.deg2rad(rng.uniform(-degrees, degrees))
  shear_angle = np.deg2rad(rng.uniform(-shear, shear))
  zoom = rng.uniform(1 - scale, 1 + scale)
  shift = rng.uniform(-translate, translate, size=2) * np.asarray(img.shape[:2])
  # Forward map in (row, col) coordinates: out = A @ (in - centre) + centre + shift.
  rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  shearing = np.array([[1.0, 0.0], [np.tan(shear_angle), 1.0]])
  forward = zoom * rotation @ shearing
  inverse = np.linalg.inv(forward)
  centre = (np.asarray(img.shape[:2], np.float64) - 1) / 2
  offset = centre - inverse @ (centre + shift)
  warp = lambda channel: scipy.ndimage.affine_transform(  # noqa: E731
      channel.astype(np.float32), inverse, offset=offset, order=1, mode=fill, cval=0.0)
  if all(np.array_equal(img[..., 0], img[..., c]) for c in range(1, img.shape[-1])):
    # Grey images replicated to 3 channels (CT slices, most CXRs): warp once, identical result,
    # and the E_cov input pipeline spends a third of the time here.
    out = np.repeat(warp(img[..., 0])[..., None], img.shape[-1], axis=-1)
  else:
    out = np.stack([warp(img[..., c]) for c in range(img.shape[-1])], axis=-1)
  if img.dtype == np.uint8:
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8)
  return out.astype(img.dtype)


def random_brightness_contrast(rng: np.random.Generator, img: np.ndarray, brightness: float = 0.,
                               contrast: float = 0.) -> np.ndarray:
  """torchvision-style jitter on uint8: scale by b, then blend with the gray mean by c.

  b ~ U[max(0, 1 - brightness), 1 + brightness], c ~ U[max(0, 1 - contrast), 1 + contrast].
  """
  img = _as_hwc(img)
  if img.dtype != np.uint8:
    raise TypeError(f"random_brightness_contrast expects uint8, got dtype {img.dtype}")
  if brightness < 0 or contrast < 0:
    raise ValueError(f"brightness and contrast must be >= 0, got {brightness}, {contrast}")
  if brightness == contrast == 0:
    return img
  out = img.astype(np.float32)
  if brightness > 0:
    out = np.clip(out * rng.uniform(max(0.0, 1 - brightness), 1 + brightness), 0, 255)
  if contrast > 0:
    gray = luma(np.rint(out).astype(np.uint8)) if out.shape[-1] == 3 else out
    mean = float(np.mean(gray))
    factor = rng.uniform(max(0.0, 1 - contrast), 1 + contrast)
    out = np.clip((out - mean) * factor + mean, 0, 255)
  return np.rint(out).astype(np.uint8)


BIGAUG_PROBABILITY = 0.5  # BigAug's chance of applying each transform


def random_appearance(rng: np.random.Generator, img: np.ndarray, gamma: float = 0., blur_sharpen: float = 0.,
                      noise: float = 0., low_resolution: float = 0.,
                      probability: float = BIGAUG_PROBABILITY) -> np.ndarray:
  """BigAug's image-quality and appearance stack on uint8 (Zhang et al., IEEE TMI 2020, "Generalizing
  deep learning for medical image segmentation to unseen domains via deep stacked transformation").

  Unseen scanners differ in resolution, sharpness, intensity response and noise; stacking random
  versions of each during training makes a model less sensitive to them. Each transform whose
  range is > 0 is applied independently with `probability` (BigAug: 0.5), in this order:
  - low_resolution: shrink by f ~ U(1 - low_resolution, 1) (sides rounded, >= 1 px) and enlarge
    back, both bilinear (Pillow, antialiased when shrinking): a coarser scanner's resolution;
  - blur_sharpen: with probability 1/2 a Gaussian blur of σ ~ U(min(0.25, blur_sharpen),
    blur_sharpen) px, otherwise an unsharp mask x + α(x - blur_σ(x)) with σ drawn the same way and
    α ~ U(0, 1) (scipy.ndimage.gaussian_filter, 'nearest' edges, within each channel);
  - gamma: 255·(x/255)^γ with γ = exp(U(-gamma, gamma)) (γ > 1 darkens mid-tones);
  - noise: additive Gaussian noise of standard deviation U(0, noise)·255, one field shared by all
    channels (a grey CT slice repeated to RGB stays grey, as the detector noise it mimics would).
  Work is in float32, clipped to [0, 255] after each step, rounded to uint8 once at the end.
  Draws, per enabled transform in the order above: the coin rng.random(), then its parameters
  (blur_sharpen: rng.random() < 0.5 picks blur, then σ, then α for sharpening). With every range
  0 the image is returned untouched and rng is not used, so existing pipelines are unchanged.
  """
  img = _as_hwc(img)
  if img.dtype != np.uint8:
    raise TypeError(f"random_appearance expects uint8, got dtype {img.dtype}")
  for name, value in (("gamma", gamma), ("blur_sharpen", blur_sharpen), ("noise", noise)):
    if not value >= 0:
      raise ValueError(f"{name} must be >= 0, got {value}")
  if not 0 <= low_resolution < 1:
    raise ValueError(f"low_resolution must be in [0, 1), got {low_resolution}")
  if not 0 <= probability <= 1:
    raise ValueError(f"probability must be in [0, 1], got {probability}")
  if gamma == blur_sharpen == noise == low_resolution == 0:
    return img
  channels = img.shape[-1]
  # A grey image repeated to 3 channels (CT slices): every step acts within a channel and the
  # noise is shared, so working on one channel gives the identical result, 3x cheaper.
  grey = channels > 1 and all(np.array_equal(img[..., 0], img[..., c]) for c in range(1, channels))
  out = (img[..., :1] if grey else img).astype(np.float32)
  height, width = out.shape[:2]
  if low_resolution > 0 and rng.random() < probability:
    factor = rng.uniform(1 - low_resolution, 1)
    small = (max(1, round(height * factor)), max(1, round(width * factor)))
    out = resize(resize(out, small, "bilinear"), (height, width), "bilinear")
  if blur_sharpen > 0 and rng.random() < probability:
    blur = rng.random() < 0.5
    sigma = rng.uniform(min(0.25, blur_sharpen), blur_sharpen)
    blurred = scipy.ndimage.gaussian_filter(out, sigma=(sigma, sigma, 0), mode="nearest")
    out = blurred if blur else np.clip(out + np.float32(rng.uniform(0, 1)) * (out - blurred), 0, 255)
  if gamma > 0 and rng.random() < probability:
    out = 255 * (out / 255) ** np.float32(np.exp(rng.uniform(-gamma, gamma)))
  if noise > 0 and rng.random() < probability:
    sigma = rng.uniform(0, noise) * 255
    out = np.clip(out + rng.normal(0.0, sigma, (height, width, 1)).astype(np.float32), 0, 255)
  out = np.rint(np.clip(out, 0, 255)).astype(np.uint8)
  return np.repeat(out, channels, axis=-1) if grey else out


# BigAug fields (gamma ... low_resolution, with bigaug_probability): see `random_appearance`; all
# ranges 0 = off. `augments` says whether a config augments at all.
_AUGMENT_DEFAULTS = dict(crop_resize=0, crop_margin=0, hflip=False, affine_degrees=0.0,
                         affine_translate=0.0, affine_scale=0.0, brightness=0.0, contrast=0.0,
                         gamma=0.0, blur_sharpen=0.0, noise=0.0, low_resolution=0.0,
                         bigaug_probability=BIGAUG_PROBABILITY)
# Fields that only tune another field's transform: on their own they change no image.
_AUGMENT_MODIFIERS = ("crop_margin", "bigaug_probability")


def augments(augment_cfg) -> bool:
  """Whether an `augment` config changes training images at all (the jobs cache preprocessed
  training images only when it does not)."""
  return any(bool(v) for k, v in dict(augment_cfg).items() if k not in _AUGMENT_MODIFIERS)
# ct_window: () or None = the images are already 8-bit; (level, width) = Hounsfield-unit input.
_PREPROCESS_DEFAULTS = dict(image_size=224, channels=3, grayscale=False, equalize=True,
                            value_range="imagenet", ct_window=(), resize_method="bilinear")


def default_preprocess_config() -> ml_collections.ConfigDict:
  """The thesis §5.3 preprocessing (224, RGB, equalize, ImageNet), no augmentation."""
  return ml_collections.ConfigDict(dict(_PREPROCESS_DEFAULTS, augment=dict(_AUGMENT_DEFAULTS)))


def _resolve(cfg: Any) -> tuple[dict, dict]:
  """Fills defaults, rejects unknown fields and bad values with messages naming the field."""
  cfg = dict(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg)
  augment = dict(cfg.pop("augment", None) or {})
  unknown = set(cfg) - set(_PREPROCESS_DEFAULTS)
  unknown_aug = set(augment) - set(_AUGMENT_DEFAULTS)
  if unknown or unknown_aug:
    raise ValueError(f"unknown preprocess fields {sorted(unknown)} / augment fields {sorted(unknown_aug)}; "
                     f"expected {sorted(_PREPROCESS_DEFAULTS)} and augment.{sorted(_AUGMENT_DEFAULTS)}")
  cfg = {**_PREPROCESS_DEFAULTS, **cfg}
  augment = {**_AUGMENT_DEFAULTS, **augment}
  if not isinstance(cfg["image_size"], int) or cfg["image_size"] <= 0:
    raise ValueError(f"preprocess.image_size must be a positive int, got {cfg['image_size']!r}")
  if cfg["channels"] not in (1, 3):
    raise ValueError(f"preprocess.channels must be 1 or 3, got {cfg['channels']!r}")
  if cfg["value_range"] not in VALUE_RANGES:
    raise ValueError(f"unknown preprocess.value_range {cfg['value_range']!r}; expected one of {VALUE_RANGES}")
  if cfg["resize_method"] not in RESIZE_METHODS:
    raise ValueError(f"unknown preprocess.resize_method {cfg['resize_method']!r}; "
                     f"expected one of {sorted(RESIZE_METHODS)}")
  window = cfg["ct_window"] = tuple(cfg["ct_window"]) if cfg["ct_window"] else None
  if window is not None and (len(window) != 2 or not window[1] > 0):
    raise ValueError(f"preprocess.ct_window must be () or (level, width>0), got {window!r}")
  crop, margin = augment["crop_resize"], augment["crop_margin"]
  if crop and crop < cfg["image_size"] + 2 * margin:
    raise ValueError(f"augment.crop_resize={crop} must be 0 or >= image_size + 2*crop_margin "
                     f"= {cfg['image_size'] + 2 * margin}")
  for name in ("crop_margin", "affine_degrees", "affine_translate", "affine_scale", "brightness", "contrast",
               "gamma", "blur_sharpen", "noise", "low_resolution"):
    if not augment[name] >= 0:
      raise ValueError(f"augment.{name} must be >= 0, got {augment[name]}")
  for name in ("affine_scale", "low_resolution"):
    if augment[name] >= 1:
      raise ValueError(f"augment.{name} must be < 1, got {augment[name]}")
  if not 0 <= augment["bigaug_probability"] <= 1:
    raise ValueError(f"augment.bigaug_probability must be in [0, 1], got {augment['bigaug_probability']}")
  return cfg, augment


class _Preprocess:
  """The per-example function of `make_preprocess` (a class so it pickles into grain workers)."""

  def __init__(self, cfg: dict, augment: dict, training: bool):
    self.cfg, self.augment, self.training = cfg, augment, training

  def __call__(self, example: Mapping[str, Any], rng: np.random.Generator) -> dict:
    cfg, augment = self.cfg, self.augment
    size, channels, window = cfg["image_size"], cfg["channels"], cfg["ct_window"]
    image = np.asarray(example["image"])
    if window is not None:
      image = window_ct(image, *window)
    elif image.dtype != np.uint8:
      raise TypeError(f"image dtype {image.dtype} is not uint8; set preprocess.ct_window=(level, width) "
                      f"for Hounsfield-unit inputs")
    image = set_channels(image, channels)
    if self.training and augment["crop_resize"]:
      image = resize(image, (augment["crop_resize"],) * 2, cfg["resize_method"])
      image = random_crop_with_margin(rng, image, size, augment["crop_margin"])
    else:
      image = resize(image, (size, size), cfg["resize_method"])
    if cfg["equalize"]:
      image = equalize(image)
    if self.training:
      image = random_flip(rng, image, horizontal=augment["hflip"])
      image = random_affine(rng, image, augment["affine_degrees"], augment["affine_translate"],
                            augment["affine_scale"])
      image = random_brightness_contrast(rng, image, augment["brightness"], augment["contrast"])
      image = random_appearance(rng, image, augment["gamma"], augment["blur_sharpen"], augment["noise"],
                                augment["low_resolution"], augment["bigaug_probability"])
    if cfg["grayscale"] and channels == 3:
      image = set_channels(luma(image), channels)
    return {**example, "image": normalize(image, cfg["value_range"])}


def make_preprocess(cfg: Any, training: bool) -> Callable[[Mapping[str, Any], np.random.Generator], dict]:
  """Builds fn(example, rng) -> example with `image` float32 (size, size, channels).

  Order: channels/CT window -> resize (training with crop_resize: resize + margin crop) ->
  equalize -> augment (training only: flip, affine, brightness/contrast, then BigAug's
  `random_appearance`) -> grayscale (luma, repeat) -> normalize. Evaluation
  resizes straight to image_size, as the thesis does. Missing fields take the
  `default_preprocess_config()` values; unknown fields or bad values raise here, not mid-epoch.
  """
  cfg, augment = _resolve(cfg)
  return _Preprocess(cfg, augment, training)
