"""Lung findings painted into the healthy chest: COVID-19 and lobar (non-COVID) pneumonia.

COVID-19: peripheral, bilateral, multifocal ground-glass opacities (GGO) with consolidation
at higher severity. Lesions are the high part of a smooth random field tilted towards the
pleura, the bases and the back; its threshold is calibrated per patient so the involved lung
fraction matches the MosMed CT grade (CT-1 < 25 %, CT-2 25-50 %, CT-3 50-75 %, CT-4 > 75 %).

Pneumonia: dense consolidation filling part of one lobe, bounded sharply by its fissure,
with air bronchograms.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from prepnet_jax.data.phantom import anatomy
from prepnet_jax.data.phantom.anatomy import Anatomy, Tissue, Waves

KINDS = ("normal", "pneumonia", "covid")
# Involved lung fraction per MosMed grade (drawn uniformly inside the grade's band).
INVOLVEMENT = {1: (0.02, 0.15), 2: (0.28, 0.46), 3: (0.54, 0.72), 4: (0.78, 0.9)}
# Pull of mild disease towards the lung bases (score units per lung height): early COVID-19
# sits in the lower lobes, so upper slices of mild cases show nothing.
BASAL_PULL = {1: 5.0, 2: 3.5, 3: 2.0, 4: 1.0}
# Share of the involved volume that is consolidated rather than ground glass.
CONSOLIDATION_SHARE = {1: 0.03, 2: 0.1, 3: 0.2, 4: 0.3}
LOBES = ("RUL", "RML", "RLL", "LUL", "LLL")
LOBE_PROBS = (0.15, 0.1, 0.3, 0.15, 0.3)


@dataclasses.dataclass(frozen=True)
class Finding:
  kind: str                 # one of KINDS
  severity: int = 0         # MosMed CT grade 1-4 for COVID, else 0
  involvement: float = 0.0  # target fraction of lung volume with visible lesions (COVID)
  field: Waves | None = None
  threshold: float = 0.0
  consolidation_threshold: float = np.inf  # COVID: score above which GGO turns solid
  ggo_hu: float = -500.0
  consolidation_hu: float = 20.0
  lobe: str = ""            # pneumonia only


def _smoothstep(t: np.ndarray) -> np.ndarray:
  t = np.clip(t, 0.0, 1.0)
  return t * t * (3.0 - 2.0 * t)


def _covid_score(finding: Finding, anat: Anatomy, z, y, x, costal) -> np.ndarray:
  s = anat.scale
  return (finding.field(z, y, x) + 1.3 * np.exp(-np.maximum(costal, 0) / (18 * s))
          + BASAL_PULL[finding.severity] * (z / anat.lung_height - 0.5) + 0.6 * (y / anat.half_depth))


def _lobe_margin(lobe: str, anat: Anatomy, z, y, x) -> np.ndarray:
  """Signed distance-like margin (mm) inside the lobe: the oblique fissure runs from high at
  the back to low at the front; the right middle lobe sits in front, under the horizontal one."""
  h = anat.lung_height
  yb = np.clip(y / anat.half_depth, -1, 1)
  oblique = h * (0.32 + 0.6 * (0.9 - yb) / 1.8)
  side = (x < 0) if lobe[0] == "R" else (x > 0)
  if lobe.endswith("LL"):
    margin = z - oblique
  elif lobe == "RML":
    margin = np.minimum(oblique - z, z - 0.5 * h)
  else:
    margin = oblique - z if lobe == "LUL" else np.minimum(oblique - z, 0.5 * h - z)
  return np.where(side, margin, -100.0)


def sample_finding(rng: np.random.Generator, anat: Anatomy, label3: int, severity: int) -> Finding:
  """Draws the finding of one patient (label3: 0 normal, 1 pneumonia, 2 COVID)."""
  if label3 not in (0, 1, 2):
    raise ValueError(f"label3 must be 0 (normal), 1 (pneumonia) or 2 (COVID), got {label3}")
  if KINDS[label3] == "normal":
    return Finding(kind="normal")
  s = anat.scale
  if KINDS[label3] == "pneumonia":
    return Finding(kind="pneumonia", field=anatomy.random_waves(rng, 4, (40 * s, 70 * s)),
                   threshold=float(rng.uniform(0.3, 1.1)), consolidation_hu=float(rng.uniform(-10, 40)),
                   lobe=str(rng.choice(LOBES, p=LOBE_PROBS)))
  if severity not in INVOLVEMENT:
    raise ValueError(f"COVID severity must be a MosMed grade 1-4, got {severity}")
  finding = Finding(kind="covid", severity=severity, involvement=float(rng.uniform(*INVOLVEMENT[severity])),
                    field=anatomy.random_waves(rng, 5, (40 * s, 75 * s)),
                    ggo_hu=float(rng.uniform(-600, -420)), consolidation_hu=float(rng.uniform(-40, 30)))
  solid_fraction = finding.involvement * CONSOLIDATION_SHARE[severity]
  threshold, solid = _calibrate(finding, anat, (finding.involvement, solid_fraction))
  return dataclasses.replace(finding, threshold=threshold, consolidation_threshold=solid)


def _calibrate(finding: Finding, anat: Anatomy, fractions: tuple[float, float]) -> tuple[float, float]:
  """Thresholds of the lesion score that involve the given fractions of the lung volume."""
  h, a, b = anat.lung_height, anat.half_width, anat.half_depth
  z, y, x = np.meshgrid(np.linspace(0, h + 30 * anat.scale, 26, dtype=np.float32),
                        np.linspace(-b, b, 20, dtype=np.float32),
                        np.linspace(-a, a, 26, dtype=np.float32), indexing="ij")
  z, y, x = z.ravel(), y.ravel(), x.ravel()
  geo = anatomy.lung_geometry(anat, z, y, x)
  inside = geo.inside
  score = _covid_score(finding, anat, z[inside], y[inside], x[inside], geo.costal_depth[inside])
  return tuple(float(np.quantile(score, 1.0 - f)) for f in fractions)


def apply(finding: Finding, anat: Anatomy, tissue: Tissue) -> tuple[np.ndarray, np.ndarray]:
  """(HU with the finding painted in, bool mask of visible lesion) at the tissue's points."""
  hu = tissue.hu.copy()
  lesion = np.zeros(hu.shape, bool)
  if finding.kind == "normal":
    return hu, lesion
  idx = tissue.lung_index
  z, y, x = tissue.lung_points
  lhu = hu[idx]
  if finding.kind == "covid":
    score = _covid_score(finding, anat, z, y, x, tissue.costal_depth)
    ggo = _smoothstep((score - finding.threshold + 0.1) / 0.45)
    lhu = lhu + ggo * (finding.ggo_hu - anat.lung_hu) * (1.0 - 0.5 * np.clip((lhu - anat.lung_hu) / 500, 0, 1))
    solid = _smoothstep((score - finding.consolidation_threshold) / 0.3 + 0.5)
    lhu = lhu * (1 - solid) + solid * finding.consolidation_hu
    lesion[idx] = score > finding.threshold
  else:
    margin = _lobe_margin(finding.lobe, anat, z, y, x)
    fill = np.minimum(margin / (5 * anat.scale), 1.0) + 0.8 * finding.field(z, y, x) - finding.threshold
    solid = _smoothstep(fill / 0.5)
    bronchogram = tissue.small_vessels * (solid > 0.6)
    lhu = lhu * (1 - solid) + solid * finding.consolidation_hu
    lhu = lhu + 0.8 * bronchogram * (anatomy.HU_AIR + 100 - lhu)
    lesion[idx] = solid > 0.3
  hu[idx] = lhu
  return hu, lesion
