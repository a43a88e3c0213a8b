"""Offline classical augmentation with Keras `ImageDataGenerator` semantics (thesis §2.5).

The xray_gan thesis augmented its COVID-positive X-rays once, offline, with Keras'
ImageDataGenerator and drew the same number of variants from every image. This module
reproduces that with scipy.ndimage and Keras' own `apply_affine_transform` construction:
the output->input matrix is rotation @ shift @ shear @ zoom about the image centre, sampled
with order-1 interpolation and nearest-edge fill, then an optional left-right flip.

Two deliberate departures from the installed Keras (keras.src.legacy.preprocessing.image),
both Keras bugs that only show on non-square images or in the shift direction:
- Keras applies `width_shift_range` to rows and `height_shift_range` to columns
  (keras-team/keras#17398, tf-keras#310, keras-preprocessing#348); here width shifts columns.
- Keras centres the transform at ((h-1)/2, (w-1)/2) taken as (column, row); here at the true
  centre. For square images both agree with Keras exactly (tested against it).
Note that Keras' `shear_range` is in degrees: the thesis' 0.15 is a 0.15 degree shear.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

FILL_MODES = ("nearest", "constant", "reflect", "wrap")


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  """ImageDataGenerator arguments (same names and units)."""
  rotation_range: float = 0.0  # degrees; angle ~ U(-r, r), positive = counter-clockwise
  zoom_range: float | tuple[float, float] = 0.0  # z -> [1-z, 1+z], drawn per axis; <1 magnifies
  width_shift_range: float = 0.0  # < 1: fraction of the width; >= 1: pixels
  height_shift_range: float = 0.0  # < 1: fraction of the height; >= 1: pixels
  shear_range: float = 0.0  # degrees (not radians, not a fraction)
  horizontal_flip: bool = False  # left-right mirror with probability 1/2
  fill_mode: str = "nearest"
  cval: float = 0.0  # fill value for fill_mode='constant'
  interpolation_order: int = 1

  def __post_init__(self):
    for name in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    low, high = self.zoom_bounds
    if not 0 < low <= high:
      raise ValueError(f"zoom_range must give 0 < low <= high, got {self.zoom_range} -> ({low}, {high})")
    if self.fill_mode not in FILL_MODES:
      raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {self.fill_mode!r}")

  @property
  def zoom_bounds(self) -> tuple[float, float]:
    if isinstance(self.zoom_range, (int, float)):
      return 1.0 - self.zoom_range, 1.0 + self.zoom_range
    if len(self.zoom_range) != 2:
      raise ValueError(f"zoom_range must be a float or a (low, high) pair, got {self.zoom_range}")
    return float(self.zoom_range[0]), float(self.zoom_range[1])


# xray_gan thesis §2.5: A ("severe", gave contorted images), then the milder B.
PRESETS = {
    "A": AugmentParams(rotation_range=30, zoom_range=0.15, width_shift_range=0.2,
                       height_shift_range=0.2, shear_range=0.15, horizontal_flip=True,
                       fill_mode="nearest"),
    "B": AugmentParams(rotation_range=15, zoom_range=0.15, width_shift_range=0.1,
                       height_shift_range=0.1, shear_range=0.15, horizontal_flip=True,
                       fill_mode="nearest"),
}
THESIS_DRAWS_PER_IMAGE = 10


@dataclasses.dataclass(frozen=True)
class AffineDraw:
  """One concrete transform. Shifts move the content by that many pixels (+ = right / down);
  zoom factors scale the sampling distance from the centre (Keras zx/zy: < 1 magnifies)."""
  rotation_deg: float = 0.0
  shift_rows: float = 0.0
  shift_cols: float = 0.0
  shear_deg: float = 0.0
  zoom_rows: float = 1.0
  zoom_cols: float = 1.0
  flip_horizontal: bool = False


def _shift_pixels(rng: np.random.Generator, shift_range: float, size: int) -> float:
  if not shift_range:
    return 0.0
  shift = rng.uniform(-shift_range, shift_range)
  return shift * size if shift_range < 1 else shift


def draw_transform(rng: np.random.Generator, shape: Sequence[int], params: AugmentParams) -> AffineDraw:
  """Random transform for an image of shape (H, W[, C]), distributed as ImageDataGenerator's."""
  height, width = shape[0], shape[1]
  low, high = params.zoom_bounds
  zoom_rows, zoom_cols = (1.0, 1.0) if low == high == 1.0 else rng.uniform(low, high, size=2)
  rotation = params.rotation_range
  return AffineDraw(
      rotation_deg=rng.uniform(-rotation, rotation) if rotation else 0.0,
      shift_rows=_shift_pixels(rng, params.height_shift_range, height),
      shift_cols=_shift_pixels(rng, params.width_shift_range, width),
      shear_deg=rng.uniform(-params.shear_range, params.shear_range) if params.shear_range else 0.0,
      zoom_rows=float(zoom_rows), zoom_cols=float(zoom_cols),
      flip_horizontal=bool(params.horizontal_flip and rng.random() < 0.5))


def output_to_input_matrix(draw: AffineDraw, height: int, width: int) -> np.ndarray:
  """3x3 matrix taking output (row, col, 1) to the input point it samples.

  Built as Keras does in (x=col, y=row) coordinates: rotation @ shift @ shear @ zoom, moved to
  the image centre, then conjugated by the x/y swap.
  """
  theta, shear = np.deg2rad(draw.rotation_deg), np.deg2rad(draw.shear_deg)
  rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
  shift = np.array([[1, 0, -draw.shift_cols], [0, 1, -draw.shift_rows], [0, 0, 1]])
  shear_matrix = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
  zoom = np.diag([draw.zoom_cols, draw.zoom_rows, 1.0])
  centre_x, centre_y = (width - 1) / 2, (height - 1) / 2
  to_centre = np.array([[1, 0, centre_x], [0, 1, centre_y], [0, 0, 1]])
  from_centre = np.array([[1, 0, -centre_x], [0, 1, -centre_y], [0, 0, 1]])
  in_xy = to_centre @ rotation @ shift @ shear_matrix @ zoom @ from_centre
  swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])
  return swap @ in_xy @ swap


def apply_transform(img: np.ndarray, draw: AffineDraw,
                    params: AugmentParams = AugmentParams()) -> np.ndarray:
  """Applies one transform to an HxWxC image; uint8 in -> uint8 out (rounded), float stays float."""
  if img.ndim != 3:
    raise ValueError(f"expected an HxWxC image, got shape {img.shape}")
  height, width = img.shape[:2]
  out = img
  if draw != AffineDraw(flip_horizontal=draw.flip_horizontal):
    matrix = output_to_input_matrix(draw, height, width)
    pixels = img.astype(np.float64)
    out = np.stack([ndimage.affine_transform(pixels[..., c], matrix[:2, :2], matrix[:2, 2],
                                             order=params.interpolation_order,
                                             mode=params.fill_mode, cval=params.cval)
                    for c in range(img.shape[2])], axis=-1)
    if img.dtype == np.uint8:
      out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    else:
      out = out.astype(img.dtype)
  if draw.flip_horizontal:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def augment_image(rng: np.random.Generator, img: np.ndarray, params: AugmentParams) -> np.ndarray:
  """One random ImageDataGenerator-style variant of an HxWxC image."""
  return apply_transform(img, draw_transform(rng, img.shape, params), params)


def build_augmented_dataset(images: np.ndarray, labels: np.ndarray, params: AugmentParams,
                            draws_per_image: int = THESIS_DRAWS_PER_IMAGE,
                            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """`draws_per_image` variants of every image (thesis: the same number from each image).

  Returns only the augmented images, image-major (all draws of image 0 first); image i draws
  from the generator seeded by (seed, i), so any draw can be reproduced from its index alone.
  """
  images = np.asarray(images)
  labels = np.asarray(labels)
  if images.ndim != 4 or len(images) != len(labels):
    raise ValueError(f"expected images (N, H, W, C) and N labels, got {images.shape} and {labels.shape}")
  if draws_per_image < 1:
    raise ValueError(f"draws_per_image must be >= 1, got {draws_per_image}")
  out = np.empty((len(images) * draws_per_image,) + images.shape[1:], images.dtype)
  for i, img in enumerate(images):
    rng = np.random.default_rng([seed, i])
    for d in range(draws_per_image):
      out[i * draws_per_image + d] = augment_image(rng, img, params)
  return out, np.repeat(labels, draws_per_image)


def write_class_folders(root: str | pathlib.Path, images: np.ndarray, labels: np.ndarray,
                        class_names: Sequence[str], prefix: str = "aug") -> list[pathlib.Path]:
  """Writes uint8 images as root/<class name>/<prefix>_<index>.png (an ImageFolder layout)."""
  images = np.asarray(images)
  if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"expected uint8 (N, H, W, 1|3) images, got {images.dtype} {images.shape}")
  root = pathlib.Path(root)
  paths = []
  for index, (img, label) in enumerate(zip(images, np.asarray(labels))):
    if not 0 <= int(label) < len(class_names):
      raise ValueError(f"label {label} of image {index} is outside class_names {list(class_names)}")
    path = root / class_names[int(label)] / f"{prefix}_{index:06d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(path)
    paths.append(path)
  return paths
