"""What datasets burn into their pixels: letters, arrows, scale bars, side markers, view
prints, plus resizing, JPEG compression and the channel layout of the export."""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_COLORS = ((255, 255, 0), (255, 40, 40), (60, 255, 60), (255, 255, 255))
_LABELS = ("A", "B", "C", "D", "a", "b", "c", "R", "L", "1", "2", "5 cm", "Day 4", "Fig. 2")


@functools.lru_cache(maxsize=32)
def _font(size: int):
  return ImageFont.load_default(size=size)


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """float32 2-D image -> size x size (antialiased bilinear)."""
  if image.shape == (size, size):
    return image.astype(np.float32)
  resized = Image.fromarray(np.ascontiguousarray(image, np.float32), mode="F").resize((size, size), Image.BILINEAR)
  return np.asarray(resized, np.float32)


def _pick_color(rng: np.random.Generator, color: bool) -> tuple[int, int, int]:
  return _COLORS[rng.integers(len(_COLORS))] if color else (255, 255, 255)


def _arrow(draw: ImageDraw.ImageDraw, tip: np.ndarray, angle: float, length: float, fill, width: int) -> None:
  direction = np.array([np.cos(angle), np.sin(angle)])
  tail = tip - direction * length
  draw.line([tuple(tail[::-1]), tuple(tip[::-1])], fill=fill, width=width)
  head = length * 0.35
  left = tip - head * (direction * np.cos(0.45) + np.array([-direction[1], direction[0]]) * np.sin(0.45))
  right = tip - head * (direction * np.cos(0.45) - np.array([-direction[1], direction[0]]) * np.sin(0.45))
  draw.polygon([tuple(tip[::-1]), tuple(left[::-1]), tuple(right[::-1])], fill=fill)


def annotate(rgb: np.ndarray, rng: np.random.Generator, *, text_prob: float, arrow_prob: float,
             scale_bar_prob: float, color: bool, target: np.ndarray) -> np.ndarray:
  """Figure annotations as in images cut from papers. `target` is the (row, col) in [0, 1]
  that arrows point at (the lesion; NaN = somewhere in the middle)."""
  draws = rng.uniform(size=3)
  if draws[0] >= text_prob and draws[1] >= arrow_prob and draws[2] >= scale_bar_prob:
    return rgb
  size = rgb.shape[0]
  image = Image.fromarray(rgb)
  draw = ImageDraw.Draw(image)
  width = max(1, size // 64)
  if draws[0] < text_prob:
    label = _LABELS[rng.integers(len(_LABELS))]
    corner = rng.integers(4)
    font = _font(max(8, int(size * rng.uniform(0.09, 0.14))))
    x = 2 if corner % 2 == 0 else size - 2 - int(draw.textlength(label, font=font))
    y = 1 if corner < 2 else size - int(font.size * 1.2) - 1
    draw.text((x, y), label, fill=_pick_color(rng, color), font=font)
  if draws[1] < arrow_prob:
    tip = np.asarray(target, np.float64) if np.all(np.isfinite(target)) else rng.uniform(0.35, 0.65, size=2)
    tip = tip * size + rng.normal(0, size * 0.02, size=2)
    _arrow(draw, tip, rng.uniform(0, 2 * np.pi), size * rng.uniform(0.12, 0.2), _pick_color(rng, color), width)
  if draws[2] < scale_bar_prob:
    y = int(size * 0.93)
    x1 = size - 3
    x0 = x1 - int(size * rng.uniform(0.15, 0.3))
    fill = _pick_color(rng, color)
    draw.line([(x0, y), (x1, y)], fill=fill, width=width)
    for x in (x0, x1):
      draw.line([(x, y - 2 * width), (x, y)], fill=fill, width=width)
  return np.asarray(image)


def stamp(rgb: np.ndarray, text: str, corner: int, height_frac: float, fill=(255, 255, 255),
          boxed: bool = False) -> np.ndarray:
  """Burns `text` (a side marker, a view print) into a corner: 0 top-left, 1 top-right,
  2 bottom-left, 3 bottom-right."""
  size = rgb.shape[0]
  image = Image.fromarray(rgb)
  draw = ImageDraw.Draw(image)
  font = _font(max(8, int(size * height_frac)))
  w = int(draw.textlength(text, font=font))
  margin = max(2, size // 25)
  x = margin if corner % 2 == 0 else size - margin - w
  y = margin if corner < 2 else size - margin - int(font.size * 1.15)
  if boxed:
    draw.rectangle([x - 2, y - 1, x + w + 2, y + int(font.size * 1.15)], outline=fill)
  draw.text((x, y), text, fill=fill, font=font)
  return np.asarray(image)


def finish(rgb: np.ndarray, rng: np.random.Generator, jpeg_quality, channels: int) -> np.ndarray:
  """The export: RGB or grayscale, optionally through JPEG, as (H, W, channels) uint8."""
  image = Image.fromarray(rgb)
  if channels == 1:
    image = image.convert("L")
  if jpeg_quality is not None:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.uniform(*jpeg_quality)))
    image = Image.open(io.BytesIO(buffer.getvalue()))
  out = np.asarray(image, np.uint8)
  return out[..., None] if out.ndim == 2 else out
