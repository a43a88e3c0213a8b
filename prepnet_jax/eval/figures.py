"""Report figures: reliability diagrams, confusion matrices, ROC curves, Grad-CAM overlays, the
cross-site balanced-accuracy heatmap (alone or one per report row in a grid), labelled before/after
grids, metric-vs-step curves and forest plots of paired differences with their confidence intervals.

Figures are drawn on `matplotlib.figure.Figure` objects with an explicit Agg canvas rather than
through pyplot, so they need no display, leave the global backend alone and are safe to call
from any thread of a training job. The overlay functions return uint8 RGB arrays, which
`writer.write_images` (TensorBoard) and `writers.save_png` take as they are; the ROC, heatmap,
before/after and curve functions return the saved Figure, whose texts tests and notebooks can read;
the forest plot and heatmap grid return the path written.
"""

from __future__ import annotations

import os

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from sklearn import metrics as skm

from prepnet_jax.eval import calibration
from prepnet_jax.eval.metrics import as_class_probs
from prepnet_jax.runtime.writers import image_grid, to_uint8


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
                        n_bins: int = 15, calibrated_probs: np.ndarray | None = None,
                        title: str = "Reliability") -> str:
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
  figure.suptitle(f"{title} ({n_bins} bins, N={len(series[0][1])})", fontsize=11)
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


def roc_curves(path: str, probs: np.ndarray, labels: np.ndarray, class_names: list[str],
               title: str = "ROC") -> Figure:
  """One-vs-rest ROC curve of every class with its AUC in the legend; returns the saved Figure.

  A binary task draws the positive class (1) only: class 0's curve is the same curve mirrored,
  with the same AUC. A class with no positive or no negative example has no curve and says so
  in the legend (its AUC is undefined)."""
  probs = as_class_probs(probs)
  labels = np.asarray(labels).astype(int).reshape(-1)
  if len(class_names) != probs.shape[1] or len(labels) != len(probs):
    raise ValueError(f"roc_curves: {len(class_names)} class names, {len(labels)} labels and probs of shape "
                     f"{probs.shape}; expected one name per column and one label per row")
  figure = _new_figure(4.6, 4.4)
  ax = figure.subplots()
  for k in ([1] if probs.shape[1] == 2 else range(probs.shape[1])):
    positive = labels == k
    if positive.all() or not positive.any():
      ax.plot([], [], " ", label=f"{class_names[k]}: AUC undefined (one class only)")
      continue
    fpr, tpr, _ = skm.roc_curve(positive, probs[:, k])
    ax.plot(fpr, tpr, linewidth=1.5, label=f"{class_names[k]}: AUC {skm.auc(fpr, tpr):.3f}")
  ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="chance")
  ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal", xlabel="false positive rate",
         ylabel="true positive rate", title=f"{title} (N={len(labels)})")
  ax.legend(loc="lower right", fontsize=8)
  _save(figure, path)
  return figure


def cross_site_heatmap(path: str, values: np.ndarray, train_names: list[str], test_names: list[str],
                       title: str, stds: np.ndarray | None = None,
                       value_label: str = "balanced accuracy") -> Figure:
  """Train site (rows) × test site (columns) matrix of a metric in [0, 1], every cell annotated
  with its value (and ± std when given; NaN cells show '–'); returns the saved Figure."""
  values = np.asarray(values, np.float64)
  if values.shape != (len(train_names), len(test_names)):
    raise ValueError(f"cross_site_heatmap: values of shape {values.shape} for {len(train_names)} train and "
                     f"{len(test_names)} test names")
  figure = _new_figure(2.6 + 1.2 * len(test_names), 1.6 + 0.75 * len(train_names))
  ax = figure.subplots()
  image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
  figure.colorbar(image, ax=ax, fraction=0.05, label=value_label)
  for (row, col), value in np.ndenumerate(values):
    text = "–" if not np.isfinite(value) else f"{value:.3f}"
    if stds is not None and np.isfinite(value):
      text += f"\n± {np.asarray(stds)[row, col]:.3f}"
    ax.text(col, row, text, ha="center", va="center", fontsize=9,
            color="black" if np.isfinite(value) and value > 0.6 else "white")
  ax.set_xticks(np.arange(len(test_names)), test_names, rotation=20, ha="right")
  ax.set_yticks(np.arange(len(train_names)), train_names)
  ax.set(xlabel="test site", ylabel="trained on", title=title)
  ax.title.set_fontsize(10)
  _save(figure, path)
  return figure


def before_after_grid(path: str, before: np.ndarray, after: np.ndarray, title: str,
                      row_labels: tuple[str, str] = ("before", "after"), tile_inches: float = 1.3) -> Figure:
  """Two labelled rows of images (e.g. raw CT slices over the auto-encoder's outputs) under a
  title naming what they show (site, row); uint8 (N,H,W[,C]) each. Returns the saved Figure."""
  before, after = np.asarray(before), np.asarray(after)
  if before.shape != after.shape or before.dtype != np.uint8 or after.dtype != np.uint8:
    raise ValueError(f"before_after_grid: expected two uint8 batches of one shape, got {before.dtype}"
                     f"{before.shape} and {after.dtype}{after.shape}")
  count = len(before)
  figure = _new_figure(1.6 + tile_inches * count, 0.6 + 2 * tile_inches)
  axes = figure.subplots(2, 1, squeeze=False)[:, 0]
  for ax, images, label in zip(axes, (before, after), row_labels):
    grid = image_grid(images, ncols=count)
    ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray", vmin=0, vmax=255,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(label, fontsize=9, rotation=0, ha="right", va="center")  # horizontal: never clipped
  figure.suptitle(title, fontsize=10)
  _save(figure, path)
  return figure


def metric_curve(path: str, steps: np.ndarray, values: np.ndarray, metric: str, x_label: str = "step",
                 stds: np.ndarray | None = None, noise_floor: float | None = None, title: str = "") -> Figure:
  """A metric against training progress (markers at each evaluation, ± std as error bars, the
  real-vs-real noise floor as a dashed line); returns the saved Figure."""
  steps, values = np.asarray(steps, np.float64), np.asarray(values, np.float64)
  figure = _new_figure(5.2, 3.4)
  ax = figure.subplots()
  ax.errorbar(steps, values, yerr=None if stds is None else np.asarray(stds, np.float64), marker="o",
              markersize=4, capsize=3, linewidth=1.5, label=metric)
  if noise_floor is not None and np.isfinite(noise_floor):
    ax.axhline(noise_floor, color="gray", linestyle="--", linewidth=1, label="noise floor (real vs real)")
  ax.set(xlabel=x_label, ylabel=metric, title=title or f"{metric} vs {x_label}")
  if np.all(steps == np.round(steps)):  # no fractional ticks between training steps
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.title.set_fontsize(10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  _save(figure, path)
  return figure


def history_curves(out_dir: str, history: list[dict], x_key: str = "step", x_label: str = "step",
                   title: str = "") -> list[str]:
  """`curve_<metric>.png` in `out_dir` for every generative metric of a training history: entries
  holding `x_key` and the `records` of `gen_metrics.evaluate` (FD, KID, ... per label). Returns
  the paths written; none for a history without metric records."""
  series: dict[str, dict[str, list]] = {}
  for entry in history:
    for record in entry.get("records") or []:
      name = record["metric"] + ("" if record.get("label") is None else f"_label{record['label']}")
      s = series.setdefault(name, {"x": [], "value": [], "std": [], "floor": []})
      s["x"].append(entry[x_key])
      s["value"].append(record["value"])
      s["std"].append(np.nan if record.get("std") is None else record["std"])
      s["floor"].append(np.nan if record.get("noise_floor") is None else record["noise_floor"])
  paths = []
  for name, s in series.items():
    stds = np.asarray(s["std"], np.float64)
    floors = np.asarray(s["floor"], np.float64)
    floor = floors[np.isfinite(floors)][-1] if np.isfinite(floors).any() else None
    path = os.path.join(out_dir, f"curve_{name}.png")
    metric_curve(path, s["x"], s["value"], name, x_label, stds if np.isfinite(stds).any() else None, floor,
                 f"{title}: {name} vs {x_label}" if title else "")
    paths.append(path)
  return paths


_EVIDENCE_COLORS = {"improves": "tab:green", "hurts": "tab:red", "no evidence": "tab:gray"}


def forest_plot(path: str, rows: list[str], panels: dict[str, list[tuple[float, float, float]]], title: str,
                x_label: str = "Δ balanced accuracy (pp)") -> str:
  """Paired differences with their confidence intervals, one panel per quantity (e.g. 'Δ Cross',
  'Δ Within'), one line per row with the first row at the top.

  Each entry is (mean, ci_low, ci_high). Green: the interval lies above 0, red: below 0, grey: it
  contains 0; an entry without an interval (NaN, fewer than two seeds) is a hollow grey point.
  The colours follow `paired_stats.verdict` for a higher-is-better quantity.
  """
  if not panels or not rows:
    raise ValueError(f"forest_plot: {len(rows)} rows and {len(panels)} panels; expected at least one of each")
  for name, entries in panels.items():
    if len(entries) != len(rows):
      raise ValueError(f"forest_plot: panel {name!r} has {len(entries)} entries for {len(rows)} rows")
  figure = _new_figure(1.2 + 0.07 * max(len(r) for r in rows) + 2.8 * len(panels), 1.5 + 0.38 * len(rows))
  axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
  positions = np.arange(len(rows))
  for ax, (name, entries) in zip(axes, panels.items()):
    for y, (mean, low, high) in zip(positions, np.asarray(entries, np.float64).reshape(-1, 3)):
      if not np.isfinite(mean):
        continue
      if not (np.isfinite(low) and np.isfinite(high)):
        ax.plot(mean, y, "o", markersize=6, markerfacecolor="none", color=_EVIDENCE_COLORS["no evidence"])
        continue
      color = _EVIDENCE_COLORS["improves" if low > 0 else "hurts" if high < 0 else "no evidence"]
      ax.hlines(y, low, high, color=color, linewidth=2)
      ax.plot(mean, y, "o", markersize=6, color=color)
    ax.axvline(0.0, color="black", linestyle="--", linewidth=1)
    ax.set_title(name, fontsize=10)
    ax.set_xlabel(x_label, fontsize=9)
    ax.grid(axis="x", alpha=0.3)
  axes[0].set_yticks(positions, rows, fontsize=9)
  axes[0].set_ylim(len(rows) - 0.5, -0.5)  # first row at the top
  handles = [Line2D([], [], color=color, marker="o", linewidth=2, label=label)
             for label, color in (("CI > 0", _EVIDENCE_COLORS["improves"]), ("CI < 0", _EVIDENCE_COLORS["hurts"]),
                                  ("CI contains 0", _EVIDENCE_COLORS["no evidence"]))]
  handles.append(Line2D([], [], color=_EVIDENCE_COLORS["no evidence"], marker="o",
                                         markerfacecolor="none", linestyle="none", label="no CI (n < 2)"))
  figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
  figure.suptitle(title, fontsize=11)
  return _save(figure, path)


def cross_site_heatmap_grid(path: str, matrices: dict[str, np.ndarray], train_names: list[str],
                            test_names: list[str], title: str, vmin: float = 0.5, vmax: float = 1.0) -> str:
  """One train site × test site heatmap per row (e.g. Original, PrepNet, each baseline), at most
  four to a line, on one colour scale with one colorbar so the rows can be compared cell by cell;
  every cell shows its value (NaN cells '–')."""
  if not matrices:
    raise ValueError("cross_site_heatmap_grid: no matrices given")
  expected = (len(train_names), len(test_names))
  for name, values in matrices.items():
    if np.shape(values) != expected:
      raise ValueError(f"cross_site_heatmap_grid: matrix {name!r} of shape {np.shape(values)}; expected "
                       f"{expected} ({len(train_names)} train × {len(test_names)} test sites)")
  ncols = min(4, len(matrices))
  nrows = -(-len(matrices) // ncols)
  figure = _new_figure(1.6 + ncols * (1.0 + 0.7 * len(test_names)), 0.6 + nrows * (1.4 + 0.5 * len(train_names)))
  axes = figure.subplots(nrows, ncols, squeeze=False)
  for ax in axes.ravel()[len(matrices):]:
    ax.remove()
  used = axes.ravel()[:len(matrices)]
  for index, (ax, (name, values)) in enumerate(zip(used, matrices.items())):
    values = np.asarray(values, np.float64)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    for (row, col), value in np.ndenumerate(values):
      dark = np.isfinite(value) and (value - vmin) / (vmax - vmin) <= 0.6  # viridis is light at the top
      ax.text(col, row, f"{value:.2f}" if np.isfinite(value) else "–", ha="center", va="center",
              fontsize=8, color="white" if dark else "black")  # NaN cells are left blank (white)
    ax.set_xticks(np.arange(len(test_names)), test_names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(train_names)), train_names if index % ncols == 0 else [], fontsize=8)
    if index % ncols == 0:
      ax.set_ylabel("trained on", fontsize=8)
    ax.set_title(name, fontsize=9)
  figure.colorbar(image, ax=list(used), fraction=0.025, aspect=30, label="balanced accuracy")
  figure.suptitle(f"{title} (rows: trained on, columns: test site)", fontsize=10)
  return _save(figure, path)
