"""DiffAugment (Zhao et al. 2020): differentiable augmentation of real *and* generated images.

Exactly the ops of mit-han-lab/data-efficient-gans `DiffAugment_pytorch.py`, in NHWC, with one
random draw per image. Each op is split into `draw_<op>` (the per-sample random numbers) and
`apply_<op>` (a differentiable function of the images and those numbers), so tests can check
an op against its definition with known draws.

Policy: a comma-separated string applied in order. Group names expand as in the reference
('color' = brightness, saturation, contrast; 'translation'; 'cutout'); single op names
('brightness', 'contrast', ...) switch ops one by one, e.g. 'brightness,contrast,translation'
drops saturation and the leak-prone cutout.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

POLICY_GROUPS = {
    "color": ("brightness", "saturation", "contrast"),
    "translation": ("translation",),
    "cutout": ("cutout",),
}
OPS = ("brightness", "saturation", "contrast", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
  """'color,translation' → ('brightness', 'saturation', 'contrast', 'translation')."""
  ops = []
  for name in (p.strip() for p in policy.split(",")):
    if not name:
      continue
    if name in POLICY_GROUPS:
      ops.extend(POLICY_GROUPS[name])
    elif name in OPS:
      ops.append(name)
    else:
      raise ValueError(f"unknown DiffAugment policy entry {name!r} in {policy!r}; expected groups "
                       f"{sorted(POLICY_GROUPS)} or ops {list(OPS)}")
  return tuple(ops)


def _per_sample_uniform(key, x):
  return jax.random.uniform(key, (x.shape[0], 1, 1, 1), x.dtype)


def draw_brightness(key, x):
  return _per_sample_uniform(key, x)


def apply_brightness(x, u):
  """x + (u − 0.5): an additive shift in [−0.5, 0.5)."""
  return x + (u - 0.5)


def draw_saturation(key, x):
  return _per_sample_uniform(key, x)


def apply_saturation(x, u):
  """Scales the deviation from the per-pixel channel mean by 2u ∈ [0, 2); identity on 1 channel."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  return (x - mean) * (u * 2.0) + mean


def draw_contrast(key, x):
  return _per_sample_uniform(key, x)


def apply_contrast(x, u):
  """Scales the deviation from the per-image mean (over H, W, C) by u + 0.5 ∈ [0.5, 1.5)."""
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) * (u + 0.5) + mean


def max_shift(size: int, ratio: float) -> int:
  return int(size * ratio + 0.5)


def draw_translation(key, x, ratio: float = 0.125):
  """Integer shifts (N, 2) with |t_h| ≤ int(H·ratio + 0.5), |t_w| ≤ int(W·ratio + 0.5)."""
  _, h, w, _ = x.shape
  sh, sw = max_shift(h, ratio), max_shift(w, ratio)
  key_h, key_w = jax.random.split(key)
  return jnp.stack([jax.random.randint(key_h, (x.shape[0],), -sh, sh + 1),
                    jax.random.randint(key_w, (x.shape[0],), -sw, sw + 1)], axis=-1)


def apply_translation(x, shifts):
  """out[i, j] = x[i + t_h, j + t_w], zero where that falls outside the image.

  As in the reference: pad by one zero pixel and gather with clamped indices.
  """
  n, h, w, _ = x.shape
  rows = jnp.clip(jnp.arange(h)[None, :] + shifts[:, :1] + 1, 0, h + 1)  # (N, H)
  cols = jnp.clip(jnp.arange(w)[None, :] + shifts[:, 1:] + 1, 0, w + 1)  # (N, W)
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return padded[jnp.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def cutout_size(size: int, ratio: float) -> int:
  return int(size * ratio + 0.5)


def draw_cutout(key, x, ratio: float = 0.5):
  """Square centres (N, 2): offset ~ U{0 … size + (1 − s mod 2) − 1} per axis, s the cutout side."""
  _, h, w, _ = x.shape
  ch, cw = cutout_size(h, ratio), cutout_size(w, ratio)
  key_h, key_w = jax.random.split(key)
  return jnp.stack([jax.random.randint(key_h, (x.shape[0],), 0, h + (1 - ch % 2)),
                    jax.random.randint(key_w, (x.shape[0],), 0, w + (1 - cw % 2))], axis=-1)


def apply_cutout(x, offsets, ratio: float = 0.5):
  """Zeroes rows off_h − ⌊s_h/2⌋ … off_h − ⌊s_h/2⌋ + s_h − 1 (clipped), same for columns.

  The reference clamps the square's indices into the image; as the square always overlaps the
  image, that equals intersecting the square with the image.
  """
  _, h, w, _ = x.shape
  ch, cw = cutout_size(h, ratio), cutout_size(w, ratio)
  top = offsets[:, :1] - ch // 2
  left = offsets[:, 1:] - cw // 2
  rows = jnp.arange(h)[None, :]
  cols = jnp.arange(w)[None, :]
  in_rows = (rows >= top) & (rows < top + ch)  # (N, H)
  in_cols = (cols >= left) & (cols < left + cw)  # (N, W)
  keep = 1.0 - (in_rows[:, :, None] & in_cols[:, None, :]).astype(x.dtype)
  return x * keep[..., None]


@dataclasses.dataclass(frozen=True)
class DiffAugment:
  """Callable `augment(key, images)` for a policy; images NHWC in [-1, 1]."""
  policy: str = "color,translation,cutout"
  translation_ratio: float = 0.125
  cutout_ratio: float = 0.5

  @property
  def ops(self) -> tuple[str, ...]:
    return parse_policy(self.policy)

  def describe(self, channels: int) -> str:
    """The ops that actually change images with `channels` channels; logs the no-op once."""
    ops = self.ops
    if channels == 1 and "saturation" in ops:
      logging.info("DiffAugment: 'saturation' is a no-op on 1-channel images (the channel mean is "
                   "the pixel itself); 'color' acts as brightness + contrast here.")
      ops = tuple(op for op in ops if op != "saturation")
    return ",".join(ops) or "(identity)"

  def __call__(self, key, x):
    for op, op_key in zip(self.ops, jax.random.split(key, max(1, len(self.ops)))):
      if op == "brightness":
        x = apply_brightness(x, draw_brightness(op_key, x))
      elif op == "saturation":
        x = apply_saturation(x, draw_saturation(op_key, x))
      elif op == "contrast":
        x = apply_contrast(x, draw_contrast(op_key, x))
      elif op == "translation":
        x = apply_translation(x, draw_translation(op_key, x, self.translation_ratio))
      else:
        x = apply_cutout(x, draw_cutout(op_key, x, self.cutout_ratio), self.cutout_ratio)
    return x


def leak_fractions(images_uint8: np.ndarray, augment: DiffAugment, tolerance: float = 4.0) -> dict:
  """How often generated images show DiffAugment's fill value (0 in [-1, 1], mid-gray in uint8).

  cutout_leak: fraction of images with a (s/2 × s/2) window entirely within `tolerance` grey
    levels of mid-gray, s the cutout side (s/2 is the smallest piece of a square left in a corner).
  border_leak: fraction with a whole side whose outer max(1, shift/2) rows or columns are
    mid-gray, shift the largest translation.
  Compare with the same numbers on real images, which may have such regions by nature.
  """
  x = np.asarray(images_uint8, np.float32)
  if x.ndim != 4:
    raise ValueError(f"leak_fractions expects (N, H, W, C) images, got shape {x.shape}")
  n, h, w, _ = x.shape
  flat = np.all(np.abs(x - 127.5) <= tolerance, axis=-1).astype(np.int64)  # (N, H, W)
  win_h = max(1, cutout_size(h, augment.cutout_ratio) // 2)
  win_w = max(1, cutout_size(w, augment.cutout_ratio) // 2)
  integral = np.pad(flat.cumsum(1).cumsum(2), ((0, 0), (1, 0), (1, 0)))
  window = (integral[:, win_h:, win_w:] - integral[:, :-win_h, win_w:]
            - integral[:, win_h:, :-win_w] + integral[:, :-win_h, :-win_w])
  cutout = np.any(window == win_h * win_w, axis=(1, 2))
  k_h = max(1, max_shift(h, augment.translation_ratio) // 2)
  k_w = max(1, max_shift(w, augment.translation_ratio) // 2)
  flat = flat.astype(bool)
  border = (flat[:, :k_h].all((1, 2)) | flat[:, -k_h:].all((1, 2))
            | flat[:, :, :k_w].all((1, 2)) | flat[:, :, -k_w:].all((1, 2)))
  return {"cutout_leak": float(cutout.mean()) if n else 0.0, "border_leak": float(border.mean()) if n else 0.0}
