"""A PNG grid of phantom images, one row per site, columns grouped by class, to eyeball."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from prepnet_jax.data.phantom.generate import generate_site
from prepnet_jax.data.phantom.sites import SITES_BY_MODALITY

_CLASS_NAMES = ("normal", "pneumonia", "COVID")


def contact_sheet(modality: str, path: str, seed: int = 0, per_class: int = 3, tile: int = 128,
                  **overrides) -> np.ndarray:
  """Writes and returns the sheet: per site, `per_class` images of each class (spread from
  least to most lesion), with site, class, severity, lesion fraction, view and source printed."""
  rows = []
  for site in SITES_BY_MODALITY.get(modality, ()):
    data = generate_site(modality, site, seed=seed, **overrides)
    tiles = []
    for label3 in range(3):
      idx = np.flatnonzero(data["label3"] == label3)
      idx = idx[np.argsort(data["lesion_fraction"][idx], kind="stable")]
      if len(idx) > per_class:  # spread over the range of lesion sizes
        idx = idx[np.linspace(0, len(idx) - 1, per_class).round().astype(int)]
      for i in list(idx) + [None] * (per_class - len(idx)):
        tiles.append(_tile(data, i, site, tile))
    rows.append(np.concatenate(tiles, axis=1))
  if not rows:
    raise ValueError(f"unknown phantom modality {modality!r}; expected one of {tuple(SITES_BY_MODALITY)}")
  sheet = np.concatenate(rows, axis=0)
  Image.fromarray(sheet).save(path)
  return sheet


def _tile(data: dict, i: int | None, site: str, size: int) -> np.ndarray:
  if i is None:
    return np.zeros((size, size, 3), np.uint8)
  image = data["image"][i]
  image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
  pil = Image.fromarray(image).resize((size, size), Image.BILINEAR)
  draw = ImageDraw.Draw(pil)
  text = (f"{site} {_CLASS_NAMES[data['label3'][i]]} s{data['severity'][i]}\n"
          f"lf={data['lesion_fraction'][i]:.2f} {data['view'][i]} {data['source'][i]}")
  # Placed by the text's own height: the default font's size differs between Pillow versions.
  draw.text((2, size - 4 - draw.multiline_textbbox((0, 0), text)[3]), text, fill=(0, 255, 255))
  return np.asarray(pil)
