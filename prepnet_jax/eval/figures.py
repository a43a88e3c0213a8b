"""Report figures: per-class reliability diagrams, confusion matrices and Grad-CAM overlays.

Figures are drawn on `matplotlib.figure.Figure` objects with an explicit Agg canvas rather than
through pyplot, so they need no display, leave the global backend alone and are safe to call
from any thread of a training job. The overlay functions return uint8 RGB arrays, which
`writer.write_images` (TensorBoard) and `writers.save_png` take as they are.
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from prepnet_jax.eval import calibration
from prepnet_jax.eval.metrics import as_class_probs
from prepnet_jax.runtime.writers import to_uint8


def _new_figure(width: float, height: float) -> Figure:
  figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
  FigureCanvasAgg(figure)
  return figure


def _save(figure: Figure, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path)
  return path


def _rgb_uint8(image: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
  """(H,W), (H,W,1) or (H,W,3), uint8 or float in `value_range` → (H,W,3) uint8."""
  image = np.asarray(image)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
    raise ValueError(f"image: expected (H,W), (H,W,1) or (H,W,3), got shape {image.shape}")
  image = to_uint8(image, value_range)
  return np.repeat(image[..., None], 3, axis=-1) if image.ndim == 2 else image


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.4,
                value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
  """Blends the jet-coloured CAM (H,W) in [0,1] over the image: (1−alpha)·image + alpha·heat.

  `image` is uint8 or float in `value_range`; denormalise ImageNet-normalised inputs first
  (`data.transforms.denormalize`). Returns (H,W,3) uint8.
  """
  rgb = _rgb_uint8(image, value_range)
  cam = np.asarray(cam, np.float32)
  if cam.shape != rgb.shape[:2]:
    raise ValueError(f"cam_overlay: cam shape {cam.shape} must equal the image size {rgb.shape[:2]}")
  heat = matplotlib.colormaps["jet"](np.clip(cam, 0.0, 1.0))[..., :3] * 255.0
  blended = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat
  return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def cam_overlays(images: np.ndarray, cams: np.ndarray, alpha: float = 0.4,
                 value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
  """Batched `cam_overlay`: (B,H,W[,C]) images and (B,H,W) CAMs → (B,H,W,3) uint8 for TensorBoard."""
  images, cams = np.asarray(images), np.asarray(cams)
  if len(images) != len(cams):
    raise ValueError(f"cam_overlays: {len(images)} images but {len(cams)} CAMs")
  return np.stack([cam_overlay(i, c, alpha, value_range) for i, c in zip(images, cams)])


def save_cam_grid(path: str, images: np.ndarray, cams: np.ndarray, titles: list[str] | None = None,
                  alpha: float = 0.4, value_range: tuple[float, float] = (0.0, 1.0),
                  ncols: int = 4) -> str:
  """PNG grid: for each sample its input above its CAM overlay, titled (e.g. 'true COVID / pred
  COVID 0.93')."""
  overlays = cam_overlays(images, cams, alpha, value_range)
  count = len(overlays)
  if titles is not None and len(titles) != count:
    raise ValueError(f"save_cam_grid: {len(titles)} titles for {count} images")
  ncols = min(ncols, count)
  nrows = -(-count // ncols)
  figure = _new_figure(2.2 * ncols, 4.6 * nrows)
  axes = figure.subplots(2 * nrows, ncols, squeeze=False)
  for ax in axes.ravel():
    ax.axis("off")
  for index in range(count):
    row, col = divmod(index, ncols)
    axes[2 * row, col].imshow(_rgb_uint8(images[index], value_range))
    axes[2 * row + 1, col].imshow(overlays[index])
    if titles is not None:
      axes[2 * row, col].set_title(titles[index], fontsize=9)
  return _save(figure, path)


def _reliability_bars(ax, bins: dict, offset: float, width: float, color: str, label: str) -> None:
  centers = (bins["edges"][:-1] + bins["edges"][1:]) / 2
  filled = bins["count"] > 0
  ax.bar(centers[filled] + offset, bins["accuracy"][filled], width=width, color=color,
         edgecolor="black", linewidth=0.5, alpha=0.85, label=label)


def reliability_diagram(path: str, probs: np.ndarray, labels: np.ndarray, class_names: list[str],
                        n_bins: int = 15, calibrated_probs: np.ndarray | None = None) -> str:
  """Per-class (one-vs-rest) reliability diagrams plus a top-label panel, as one PNG.

  Each panel bins P(class) into `n_bins` equal-width bins and draws the observed frequency of the
  class per bin against the diagonal (perfect calibration); bars below the diagonal mean
  over-confidence. With `calibrated_probs` (e.g. after temperature scaling) both are drawn side by
  side and the titles give the ECE before → after. Binary (N,) probabilities mean P(class 1).
  """
  series = [("uncalibrated", as_class_probs(probs), "tab:blue")]
  if calibrated_probs is not None:
    series.append(("temperature-scaled", as_class_probs(calibrated_probs), "tab:orange"))
  num_classes = series[0][1].shape[1]
  if len(class_names) != num_classes or any(p.shape != series[0][1].shape for _, p, _ in series):
    raise ValueError(f"reliability_diagram: {len(class_names)} class names, probs of shapes "
                     f"{[p.shape for _, p, _ in series]}; expected {num_classes} names and equal shapes")
  bar_width = 1.0 / n_bins / len(series)
  figure = _new_figure(3.4 * (num_classes + 1), 4.0)
  axes = figure.subplots(1, num_classes + 1, squeeze=False)[0]
  for panel, ax in enumerate(axes):
    errors = []
    for position, (label, class_probs, color) in enumerate(series):
      offset = (position - (len(series) - 1) / 2) * bar_width
      if panel < num_classes:
        bins = calibration.classwise_reliability(class_probs, labels, panel, n_bins)
      else:
        correct = class_probs.argmax(-1) == np.asarray(labels).reshape(-1)
        bins = calibration.reliability_bins(class_probs.max(-1), correct, n_bins)
      _reliability_bars(ax, bins, offset, bar_width, color, label)
      errors.append(f"{bins['ece']:.3f}")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal")
    if panel < num_classes:
      ax.set_title(f"{class_names[panel]}\nECE {' → '.join(errors)}", fontsize=10)
      ax.set_xlabel(f"mean predicted P({class_names[panel]})")
    else:
      ax.set_title(f"top label (gpleiss ECE)\nECE {' → '.join(errors)}", fontsize=10)
      ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("observed frequency" if panel < num_classes else "accuracy")
  axes[-1].legend(loc="upper left", fontsize=8)  # no top-label bars below 1/K
  figure.suptitle(f"Reliability ({n_bins} bins, N={len(series[0][1])})", fontsize=11)
  return _save(figure, path)


def confusion_matrix_plot(path: str, cm: np.ndarray, class_names: list[str],
                          title: str = "Confusion matrix") -> str:
  """Counts and row percentages (recall per true class), coloured by the row-normalised value."""
  cm = np.asarray(cm)
  if cm.shape != (len(class_names), len(class_names)):
    raise ValueError(f"confusion_matrix_plot: cm shape {cm.shape} does not match "
                     f"{len(class_names)} class names")
  row_totals = cm.sum(axis=1, keepdims=True)
  rates = np.divide(cm, row_totals, out=np.zeros(cm.shape, np.float64), where=row_totals > 0)
  size = 1.3 + 1.1 * len(class_names)
  figure = _new_figure(size + 1.2, size)
  ax = figure.subplots()
  image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
  figure.colorbar(image, ax=ax, fraction=0.046, label="fraction of true class")
  for (row, col), count in np.ndenumerate(cm):
    ax.text(col, row, f"{count}\n{100 * rates[row, col]:.1f}%", ha="center", va="center",
            fontsize=9, color="white" if rates[row, col] > 0.5 else "black")
  ticks = np.arange(len(class_names))
  ax.set_xticks(ticks, class_names, rotation=30, ha="right")
  ax.set_yticks(ticks, class_names)
  ax.set(xlabel="predicted", ylabel="true", title=f"{title} (N={int(cm.sum())})")
  return _save(figure, path)
