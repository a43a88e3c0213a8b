"""A parametric 3-D chest in Hounsfield units, evaluated at arbitrary points.

The chest is an analytic function of position, so CT slices (points on a plane) and chest
X-rays (points along diverging rays) are two samplings of one patient, with no voxel grid in
between. Evaluation takes broadcastable coordinate arrays, is vectorised numpy, and spends
work on small organs only at the points inside their bounding regions.

Patient frame (millimetres): x runs from the patient's right (-) to left (+), y from anterior
(-) to posterior (+), z from the lung apex (0) down towards the feet (+).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

HU_AIR = -1000.0
HU_FAT = -95.0
HU_MEDIASTINAL_FAT = -80.0
HU_MUSCLE = 45.0
HU_BLOOD = 40.0
HU_LIVER = 60.0
HU_CSF = 12.0
HU_DISC = 90.0
HU_CARTILAGE = 130.0
HU_MARROW = 240.0
HU_CORTEX = 750.0


@dataclasses.dataclass(frozen=True)
class Waves:
  """A smooth random field: a sum of plane waves, cheap to evaluate anywhere (no grid).

  Normalised to unit variance, so thresholds on it are in standard deviations.
  """
  vectors: np.ndarray  # (K, 3) wave vectors (z, y, x) in rad/mm
  phases: np.ndarray   # (K,)

  def __call__(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.zeros(np.shape(z), np.float32)
    for (kz, ky, kx), phase in zip(self.vectors.tolist(), self.phases.tolist()):
      out += np.cos(kz * z + ky * y + kx * x + phase)
    return out * np.float32(np.sqrt(2.0 / len(self.phases)))


def random_waves(rng: np.random.Generator, count: int, wavelength_mm: tuple[float, float]) -> Waves:
  directions = rng.normal(size=(count, 3))
  directions /= np.linalg.norm(directions, axis=1, keepdims=True)
  wavelengths = rng.uniform(*wavelength_mm, size=(count, 1))
  return Waves(vectors=(2 * np.pi / wavelengths * directions).astype(np.float32),
               phases=rng.uniform(0, 2 * np.pi, size=count).astype(np.float32))


@dataclasses.dataclass(frozen=True)
class Anatomy:
  """Shape parameters of one patient's chest (mm unless noted)."""
  scale: float            # overall body size (1 = adult, ~0.55 = child)
  half_width: float       # thorax half width at mid-lung
  half_depth: float       # thorax half depth (anterior-posterior)
  fat: float              # subcutaneous fat thickness
  wall: float             # chest-wall muscle + rib thickness
  lung_height: float      # apex (z=0) to the costophrenic angles
  dome_right: float       # height of the right hemidiaphragm dome above the angles
  dome_left: float
  heart_center: tuple[float, float, float]  # (x, y, z)
  heart_radii: tuple[float, float, float]   # (x, y, z) before rotation
  heart_angle: float      # rad, rotation of the long axis towards the left-anterior
  spine_y: float          # vertebral body centre
  vertebra_period: float  # vertebra + disc height
  rib_first: float        # z of the first rib where it leaves the spine
  rib_spacing: float
  rib_slope: float        # how far a rib descends from its posterior to its anterior end
  hilum: tuple[float, float, float]  # (|x|, y, z) of the hila
  carina_z: float
  lung_hu: float          # parenchyma density at mid-depth
  vessel_large: tuple[Waves, Waves]
  vessel_small: tuple[Waves, Waves]
  texture: Waves

  def body_axes(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half width and half depth of the body outline at height z (neck, shoulders, chest)."""
    h = self.lung_height
    zs = np.array([-260, -90, -75, -60, -40, 0, 0.55 * h, h + 40, h + 300], np.float32)
    zs[:6] *= self.scale
    a = self.half_width * np.array([0.36, 0.40, 0.72, 1.05, 1.18, 1.04, 1.0, 1.0, 0.98], np.float32)
    b = self.half_depth * np.array([0.60, 0.64, 0.76, 0.86, 0.88, 0.92, 1.0, 1.02, 1.02], np.float32)
    return np.interp(z, zs, a).astype(np.float32), np.interp(z, zs, b).astype(np.float32)


def sample_anatomy(rng: np.random.Generator, body_scale: tuple[float, float] = (0.9, 1.1),
                   heart_scale: tuple[float, float] = (0.9, 1.1)) -> Anatomy:
  """Draws one patient; sizes covary with a body scale, shapes vary independently."""
  s = float(rng.uniform(*body_scale))

  def u(lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))

  a = 150 * s * u(0.92, 1.08)
  b = 105 * s * u(0.9, 1.1)
  h = 235 * s * u(0.9, 1.1)
  heart = u(*heart_scale)
  spine_y = 0.52 * b
  return Anatomy(
      scale=s, half_width=a, half_depth=b, fat=u(5, 22) * s, wall=u(13, 17) * s,
      lung_height=h, dome_right=u(48, 64) * s, dome_left=u(36, 50) * s,
      heart_center=(u(12, 28) * s, -0.22 * b, 0.66 * h),
      heart_radii=(u(52, 62) * s * heart, 0.40 * b * heart, 0.25 * h * heart),
      heart_angle=float(np.deg2rad(u(-35, -20))), spine_y=spine_y,
      vertebra_period=0.105 * h, rib_first=u(-14, -6) * s, rib_spacing=(h + 28 * s) / 11.0,
      rib_slope=u(55, 80) * s, hilum=(u(40, 52) * s, 0.02 * b, 0.43 * h),
      carina_z=0.30 * h, lung_hu=u(-875, -835),
      vessel_large=(random_waves(rng, 3, (55 * s, 75 * s)), random_waves(rng, 3, (55 * s, 75 * s))),
      vessel_small=(random_waves(rng, 3, (20 * s, 28 * s)), random_waves(rng, 3, (20 * s, 28 * s))),
      texture=random_waves(rng, 3, (6 * s, 11 * s)))


class LungGeometry(NamedTuple):
  """Where the lungs are, and how far each point lies from the pleura (mm)."""
  inside: np.ndarray        # bool (N,)
  depth: np.ndarray         # distance to the nearest pleural surface (positive inside)
  costal_depth: np.ndarray  # distance to the chest wall / diaphragm / apex (peripheral = small)
  below_diaphragm: np.ndarray  # bool (N,)
  heart: np.ndarray         # squared normalised heart radius (< 1 inside)


class Tissue(NamedTuple):
  """The healthy chest at N points, plus the lung points that findings paint into."""
  hu: np.ndarray            # float32 (N,)
  lung: np.ndarray          # bool (N,)
  lung_index: np.ndarray    # (M,) flat indices of the lung points
  lung_points: tuple[np.ndarray, np.ndarray, np.ndarray]  # (z, y, x) of the lung points
  costal_depth: np.ndarray  # (M,) distance to the chest wall / diaphragm / apex
  small_vessels: np.ndarray  # (M,) in [0, 1]: thin tubes, reused as air bronchograms


def _ellipse(u: np.ndarray, v: np.ndarray, ru: float, rv: float) -> np.ndarray:
  return (u / ru) ** 2 + (v / rv) ** 2


def _segment_distance(z, y, x, p0, p1) -> np.ndarray:
  """Distance of points to the 3-D segment p0-p1 (both (z, y, x))."""
  d = np.subtract(p1, p0, dtype=np.float32)
  wz, wy, wx = z - p0[0], y - p0[1], x - p0[2]
  t = np.clip((wz * d[0] + wy * d[1] + wx * d[2]) / float(d @ d), 0.0, 1.0)
  return np.sqrt((wz - t * d[0]) ** 2 + (wy - t * d[1]) ** 2 + (wx - t * d[2]) ** 2)


def _skin_depth(anat: Anatomy, z, y, x, axes=None) -> np.ndarray:
  """Depth below the skin along the ray from the body axis (exact for an ellipse; the back
  is squared off a little, as in a patient lying on it)."""
  a, b = anat.body_axes(z) if axes is None else axes
  xn2, yn = (x / a) ** 2, y / b
  yn2 = yn * yn
  rho2 = xn2 + yn2 - 0.6 * xn2 * np.where(yn > 0, yn2, 0.0) / np.maximum(xn2 + yn2, 1e-6)
  rho = np.sqrt(np.maximum(rho2, 1e-8))
  return np.sqrt(x * x + y * y) * (1.0 / rho - 1.0)


def lung_geometry(anat: Anatomy, z, y, x, skin: np.ndarray | None = None) -> LungGeometry:
  """Lungs as the intersection of half-spaces: chest wall, apex cupola, diaphragm dome,
  mediastinum, heart, spine and aorta. Each constraint's margin (mm) doubles as a distance."""
  s, a, b, h = anat.scale, anat.half_width, anat.half_depth, anat.lung_height
  skin = _skin_depth(anat, z, y, x) if skin is None else skin
  m_wall = skin - (anat.fat + anat.wall)
  ax = np.abs(x)
  inner_half = a - anat.fat - anat.wall
  yb = y / b
  cupola = ((ax - 0.52 * inner_half) / (0.5 * inner_half)) ** 2 + ((yb - 0.15) / 0.75) ** 2
  m_apex = z - (85 * s * cupola - 4 * s)
  dome = np.where(x < 0, anat.dome_right, anat.dome_left)
  bulge = 1 - ((ax - 0.5 * inner_half) / (0.62 * a)) ** 2 - ((yb + 0.05) / 0.85) ** 2
  m_dome = h - dome * np.clip(bulge, 0, 1) + 22 * s * np.clip(yb, 0, 1) - z
  yc = np.clip(yb, -1, 1)
  # Mediastinal half width: narrow behind the sternum, widest mid-chest (quadratic fits).
  med_half = np.where(yc < 0, 24 + 37 * yc + 18 * yc * yc, 24 - 7.16 * yc - 3.84 * yc * yc) * s
  m_med = ax - med_half - 6 * s * (z < 0.45 * h)
  heart = _heart_radius(anat, z, y, x)
  m_heart = (np.sqrt(heart) - 1.0) * (0.5 * (anat.heart_radii[0] + anat.heart_radii[1])) - 3 * s
  m_spine = np.sqrt(x * x + (y - anat.spine_y) ** 2) - 30 * s
  m_aorta = np.sqrt((x - 22 * s) ** 2 + (y - anat.spine_y + 14 * s) ** 2) - 15 * s
  costal = np.minimum(np.minimum(m_wall, m_dome), m_apex)
  depth = np.minimum(np.minimum(np.minimum(costal, m_med), np.minimum(m_heart, m_spine)), m_aorta)
  return LungGeometry(inside=depth > 0, depth=depth, costal_depth=costal,
                      below_diaphragm=(m_dome < 0) & (z > 0.4 * h), heart=heart)


def _heart_radius(anat: Anatomy, z, y, x) -> np.ndarray:
  """Squared normalised radius of the (rotated) heart ellipsoid: < 1 inside."""
  hx, hy, hz = anat.heart_center
  rx, ry, rz = anat.heart_radii
  c, sn = np.cos(anat.heart_angle), np.sin(anat.heart_angle)
  u, v = c * (x - hx) + sn * (y - hy), -sn * (x - hx) + c * (y - hy)
  return _ellipse(u, v, rx, ry) + ((z - hz) / rz) ** 2


def _spine(anat: Anatomy, hu, z, y, x) -> np.ndarray:
  s = anat.scale
  yv = y - anat.spine_y
  body = _ellipse(x, yv, 19 * s, 15 * s)
  level = z / anat.vertebra_period
  disc = (level - np.floor(level)) < 0.2
  hu = np.where(body < 1, np.where(disc, HU_DISC, np.where(body > 0.72, HU_CORTEX, HU_MARROW)), hu)
  yc = yv - 23 * s
  r_canal = np.sqrt(x * x + yc * yc)
  arch = (r_canal > 7.5 * s) & (r_canal < 12 * s) & (yc > -5 * s)
  spinous = _ellipse(x, yc - 17 * s, 4.5 * s, 10 * s) < 1
  processes = (_ellipse(np.abs(x) - 21 * s, yc + 2 * s, 14 * s, 5 * s) < 1) & ~disc
  hu = np.where(arch | spinous | processes, 0.6 * HU_CORTEX, hu)
  return np.where(r_canal < 7.5 * s, HU_CSF, hu)


def _ribs_and_sternum(anat: Anatomy, hu, z, y, x, skin, fine: bool) -> np.ndarray:
  """Twelve ribs as one periodic band: each rib falls from its posterior end at the spine to
  its anterior end by `rib_slope`, so axial slices cut them obliquely as in real CT. Coarse
  sampling gets thicker, fainter ribs with the same line integral (no aliasing)."""
  s = anat.scale
  theta = np.arctan2(x, -y)  # 0 anterior, +-pi posterior
  u = (z - anat.rib_first - anat.rib_slope * (1 + np.cos(theta)) / 2) / anat.rib_spacing
  k = np.floor(u + 0.5)
  dz = (u - k) * anat.rib_spacing
  radial = skin - (anat.fat + 0.55 * anat.wall)
  thickness = 4.5 * s if fine else 8.0 * s
  band = (dz / (5.5 * s)) ** 2 + (radial / thickness) ** 2
  at = np.abs(theta)
  rib = (band < 1) & (k >= 0) & (k <= 11) & (at < np.pi - 0.28) & (at > np.where(k >= 9, 1.3, 0.45))
  cartilage = (band < 1) & (k >= 0) & (k <= 8) & (at <= 0.45) & (at > 0.12)
  bone = np.where(band > 0.45, HU_CORTEX, HU_MARROW) if fine else HU_MUSCLE + (520 - HU_MUSCLE) * 4.5 / 8.0
  hu = np.where(rib, bone, np.where(cartilage, HU_CARTILAGE, hu))
  sternum = (at < 0.14) & (np.abs(radial) < 6 * s) & (z > -8 * s) & (z < 0.8 * anat.lung_height)
  return np.where(sternum, np.where(np.abs(radial) > 4 * s, HU_CORTEX, HU_MARROW), hu)


def _tubes(hu, z, y, x, segments, radius, wall, lumen_hu, wall_hu) -> np.ndarray:
  """Paints tubes along segments, each only within its own bounding box (narrowed along z
  first, the cheapest cut)."""
  reach = radius + wall
  for p0, p1 in segments:
    lo, hi = np.minimum(p0, p1) - reach, np.maximum(p0, p1) + reach
    box = np.flatnonzero((z > lo[0]) & (z < hi[0]))
    bx, by = x[box], y[box]
    box = box[(bx > lo[2]) & (bx < hi[2]) & (by > lo[1]) & (by < hi[1])]
    if box.size:
      d = _segment_distance(z[box], y[box], x[box], p0, p1)
      hu[box] = np.where(d < radius, lumen_hu, np.where(d < reach, wall_hu, hu[box]))
  return hu


class _Subset:
  """Points of a larger array picked by a condition, so small organs cost only their own
  points: `sub = _Subset(mask, z, y, x, hu)`, compute on `sub.arrays`, then write the
  result into the full array with `sub.write_back(hu, values)`."""

  def __init__(self, mask, *arrays):
    self.index = np.flatnonzero(mask)
    self.arrays = [arr[self.index] for arr in arrays]

  def write_back(self, target, values) -> None:
    target[self.index] = values


def _mediastinum(anat: Anatomy, hu, z, y, x, geo: LungGeometry) -> np.ndarray:
  """Cavity contents other than lungs: heart, great vessels, liver and stomach gas."""
  s, b, h = anat.scale, anat.half_depth, anat.lung_height
  abdomen = geo.below_diaphragm
  hu = np.where(abdomen, HU_LIVER, hu)
  hu = np.where((geo.heart < 1.0) & ~abdomen, HU_BLOOD, hu)
  gas = (_ellipse(x - 0.42 * anat.half_width, y + 0.15 * b, 32 * s, 28 * s)
         + ((z - h + anat.dome_left - 24 * s) / (18 * s)) ** 2)
  hu = np.where(abdomen & (gas < 1), HU_AIR, hu)
  central = _Subset((np.abs(x) < 45 * s) & (z < 0.6 * h), z, y, x, hu)
  cz, cy, cx, chu = central.arrays
  zarch = 0.22 * h
  aorta_desc = (_ellipse(cx - 22 * s, cy - anat.spine_y + 14 * s, 12 * s, 12 * s) < 1) & (cz > zarch)
  aorta_asc = (_ellipse(cx - 2 * s, cy + 0.12 * b, 15 * s, 15 * s) < 1) & (cz > zarch) & (cz < 0.56 * h)
  svc = (_ellipse(cx + 24 * s, cy + 0.1 * b, 10 * s, 10 * s) < 1) & (cz < 0.5 * h)
  trunk = (_ellipse(cx - 18 * s, cy + 0.22 * b, 14 * s, 14 * s) < 1) & (cz > 0.36 * h) & (cz < 0.52 * h)
  chu = np.where(aorta_desc | aorta_asc | svc | trunk, HU_BLOOD, chu)
  arch = [((zarch, -0.12 * b, 2 * s), (zarch, anat.spine_y - 14 * s, 22 * s))]
  central.write_back(hu, _tubes(chu, cz, cy, cx, arch, 12 * s, 0.0, HU_BLOOD, HU_BLOOD))
  return hu


def _lung_parenchyma(anat: Anatomy, z, y, x, depth, fine: bool) -> tuple[np.ndarray, np.ndarray]:
  """Parenchyma denser towards the back (gravity), with vessels thinning to the periphery."""
  s, b = anat.scale, anat.half_depth
  hxh, hyh, hzh = anat.hilum
  hilum_dist = np.sqrt((np.abs(x) - hxh) ** 2 + (y - hyh) ** 2 + (z - hzh) ** 2)
  parenchyma = anat.lung_hu + 40.0 * (y / b)
  n1, n2 = (w(z, y, x) for w in anat.vessel_large)
  width = 0.42 * (0.3 + 0.7 * np.exp(-hilum_dist / (70 * s)))
  if not fine:  # twice as wide, half as dense: the same line integral without aliasing
    vessels = 0.5 * np.exp(-(n1 * n1 + n2 * n2) / (4 * width * width))
    return parenchyma + vessels * (HU_BLOOD - parenchyma), np.zeros(z.shape, np.float32)
  vessels = np.exp(-(n1 * n1 + n2 * n2) / (width * width))
  m1, m2 = (w(z, y, x) for w in anat.vessel_small)
  small = np.exp(-(m1 * m1 + m2 * m2) / 0.09) * np.clip(depth / (8 * s), 0, 1)
  vessels = np.maximum(vessels, 0.8 * small)
  parenchyma = parenchyma + 12.0 * anat.texture(z, y, x)
  return parenchyma + vessels * (HU_BLOOD - parenchyma), small


def _airways(anat: Anatomy, hu, z, y, x) -> np.ndarray:
  """Main and lobar bronchi (air lumen, soft-tissue wall) and the hilar arteries."""
  s, b, h = anat.scale, anat.half_depth, anat.lung_height
  hxh, hyh, hzh = anat.hilum
  carina = (anat.carina_z, anat.spine_y - 41 * s, 0.0)
  sides = (-1.0, 1.0)
  main = [(carina, (hzh, hyh, side * 0.8 * hxh)) for side in sides]
  lobar = [((hzh, hyh, side * 0.8 * hxh), end) for side in sides for end in (
      (hzh - 45 * s, hyh - 15 * s, side * 1.35 * hxh), (hzh + 55 * s, hyh + 25 * s, side * 1.3 * hxh))]
  arteries = [((hzh - 5 * s, hyh - 12 * s, side * hxh), end) for side in sides for end in (
      (hzh - 70 * s, hyh - 20 * s, side * 1.55 * hxh), (hzh + 85 * s, hyh + 20 * s, side * 1.5 * hxh),
      (hzh + 15 * s, hyh - 5 * s, side * 2.1 * hxh))]
  pulmonary = [((0.42 * h, -0.2 * b, 18 * s), (hzh - 5 * s, hyh - 12 * s, side * hxh)) for side in sides]
  hu = _tubes(hu, z, y, x, arteries, 4.5 * s, 0.0, HU_BLOOD, HU_BLOOD)
  hu = _tubes(hu, z, y, x, pulmonary, 9 * s, 0.0, HU_BLOOD, HU_BLOOD)
  hu = _tubes(hu, z, y, x, main, 6 * s, 2 * s, HU_AIR, HU_MUSCLE)
  return _tubes(hu, z, y, x, lobar, 3.5 * s, 1.5 * s, HU_AIR, HU_MUSCLE)


def evaluate(anat: Anatomy, z: np.ndarray, y: np.ndarray, x: np.ndarray, *, fine: bool = True) -> Tissue:
  """HU of the healthy chest at the points of broadcastable coordinate arrays (flattened in
  the output). `fine=False` drops structures thinner than a coarse X-ray sampling resolves
  (small vessels, parenchymal texture)."""
  z, y, x = (np.asarray(v, np.float32) for v in (z, y, x))
  shape = np.broadcast_shapes(z.shape, y.shape, x.shape)
  axes = tuple(np.broadcast_to(v, shape).ravel() for v in anat.body_axes(z))  # z-only: cheap before broadcasting
  z, y, x = (np.broadcast_to(v, shape).ravel() for v in (z, y, x))
  s, b, h = anat.scale, anat.half_depth, anat.lung_height
  n = z.shape[0]
  hu = np.full(n, HU_AIR, np.float32)
  # The body's bounding box first: the skin depth is the costliest full-size computation.
  box = _Subset((np.abs(x) < axes[0]) & (np.abs(y) < axes[1]), z, y, x, axes[0], axes[1])
  skin_box = _skin_depth(anat, *box.arrays[:3], axes=box.arrays[3:])
  body = _Subset(skin_box > 0, *box.arrays[:3], skin_box)
  body.index = box.index[body.index]
  bz, by, bx, skin = body.arrays
  bhu = np.where(skin < anat.fat, HU_FAT, HU_MUSCLE).astype(np.float32)

  cavity = _Subset((skin > anat.fat + anat.wall) & (bz > -60 * s), bz, by, bx, skin)
  cz, cy, cx, cskin = cavity.arrays
  chu = np.where(cz > -20 * s, HU_MEDIASTINAL_FAT, HU_MUSCLE).astype(np.float32)
  chu = np.where(cz > h + 25 * s, HU_LIVER, chu)
  # Lungs, heart and great vessels live between the apex and the deepest costophrenic recess.
  chest = _Subset((cz > -5 * s) & (cz < h + 25 * s), cz, cy, cx, cskin, chu)
  kz, ky, kx, kskin, khu = chest.arrays
  geo = lung_geometry(anat, kz, ky, kx, skin=kskin)
  khu = _mediastinum(anat, khu, kz, ky, kx, geo)
  lungs = _Subset(geo.inside, kz, ky, kx, geo.depth, geo.costal_depth)
  lz, ly, lx, ldepth, lcostal = lungs.arrays
  lhu, lsmall = _lung_parenchyma(anat, lz, ly, lx, ldepth, fine)
  lungs.write_back(khu, lhu)
  hxh, _, hzh = anat.hilum
  hilar = _Subset((np.abs(kz - hzh) < 90 * s) & (np.abs(kx) < 2.2 * hxh), kz, ky, kx, khu)
  hilar.write_back(khu, _airways(anat, hilar.arrays[3], *hilar.arrays[:3]))
  chest.write_back(chu, khu)
  cavity.write_back(bhu, chu)

  spine = _Subset((np.abs(bx) < 45 * s) & (by > anat.spine_y - 25 * s), bz, by, bx, bhu)
  spine.write_back(bhu, _spine(anat, spine.arrays[3], *spine.arrays[:3]))
  wall = _Subset((skin > anat.fat - 2 * s) & (skin < anat.fat + anat.wall + 2 * s), bz, by, bx, bhu, skin)
  wz, wy, wx, whu, wskin = wall.arrays
  wall.write_back(bhu, _ribs_and_sternum(anat, whu, wz, wy, wx, wskin, fine))
  ty = anat.spine_y - 41 * s
  trachea = _Subset((np.abs(bx) < 11 * s) & (np.abs(by - ty) < 10 * s) & (bz < anat.carina_z), bz, by, bx, bhu)
  tz, tyy, tx, thu = trachea.arrays
  trachea.write_back(bhu, np.where(_ellipse(tx, tyy - ty, 8 * s, 7 * s) < 1, HU_AIR,
                                   np.where(_ellipse(tx, tyy - ty, 10 * s, 9 * s) < 1, HU_MUSCLE, thu)))
  clavicles = [((-4 * s, -0.82 * b, side * 16 * s), (-34 * s, -0.05 * b, side * 1.02 * anat.half_width))
               for side in (-1.0, 1.0)]
  bhu = _tubes(bhu, bz, by, bx, clavicles, 5 * s, 3 * s, HU_MARROW, HU_CORTEX)
  body.write_back(hu, bhu)

  lung_index = body.index[cavity.index[chest.index[lungs.index]]]
  lung = np.zeros(n, bool)
  lung[lung_index] = True
  return Tissue(hu=hu, lung=lung, lung_index=lung_index, lung_points=(lz, ly, lx), costal_depth=lcostal,
                small_vessels=lsmall)
