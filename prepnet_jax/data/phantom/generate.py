"""Patients of a site, and their CT slices, CT volumes or X-rays as dataset arrays.

Every random draw comes from a generator keyed by (seed, modality, site, patient, purpose),
so a patient looks the same whatever else is generated, and a seed fixes everything.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from prepnet_jax.data.phantom import anatomy, findings, render_ct, render_cxr
from prepnet_jax.data.phantom.sites import SITES_BY_MODALITY, SiteProfile, site_profile

_MODALITY_IDS = {"ct": 0, "cxr": 1}
_PATIENT_STREAM, _CLASS_STREAM, _SCAN_STREAM, _NOISE_STREAM, _EXPORT_STREAM, _XRAY_STREAM = range(6)
DEFAULT_VOLUME_SPACING_MM = 5.0  # sites without a volume layout of their own


@dataclasses.dataclass(frozen=True)
class Patient:
  pid: str
  index: int
  label3: int        # 0 normal, 1 pneumonia, 2 COVID
  severity: int      # MosMed CT grade (0 unless COVID)
  style_index: int   # which of the site's styles (sources) produced this patient's images
  anatomy: anatomy.Anatomy
  finding: findings.Finding


def _check_seed(seed) -> int:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"phantom seed must be a non-negative int, got {seed!r}")
  return int(seed)


def _key(profile: SiteProfile, seed: int, *parts: int) -> list[int]:
  site_id = SITES_BY_MODALITY[profile.modality].index(profile.name)
  return [int(seed), _MODALITY_IDS[profile.modality], site_id, *parts]


def _exact_shares(probs, n: int, rng: np.random.Generator) -> np.ndarray:
  """n category indices with shares as close to probs as integers allow, in random order."""
  probs = np.asarray(probs, np.float64)
  if probs.min() < 0 or abs(probs.sum() - 1) > 1e-6:
    raise ValueError(f"phantom class/severity probabilities must be >= 0 and sum to 1, got {tuple(probs)}")
  raw = probs * n
  counts = np.floor(raw).astype(int)
  counts[np.argsort(counts - raw)[: n - counts.sum()]] += 1
  return rng.permutation(np.repeat(np.arange(len(probs)), counts))


def sample_patients(profile: SiteProfile, seed: int) -> list[Patient]:
  rng = np.random.default_rng(_key(profile, seed, _CLASS_STREAM))
  labels = _exact_shares(profile.class_probs, profile.num_patients, rng)
  severities = np.zeros(profile.num_patients, int)
  covid = np.flatnonzero(labels == 2)
  severities[covid] = _exact_shares(profile.severity_probs, len(covid), rng) + 1
  patients = []
  for i, (label3, severity) in enumerate(zip(labels.tolist(), severities.tolist())):
    prng = np.random.default_rng(_key(profile, seed, _PATIENT_STREAM, i))
    anat = anatomy.sample_anatomy(prng, profile.body_scale, profile.heart_scale)
    style_index = int(prng.choice(len(profile.styles), p=profile.style_probs[label3]))
    patients.append(Patient(pid=f"{profile.name}-p{i:04d}", index=i, label3=label3, severity=severity,
                            style_index=style_index, anatomy=anat,
                            finding=findings.sample_finding(prng, anat, label3, severity)))
  return patients


def _ct_scan(profile: SiteProfile, patient: Patient, rng: np.random.Generator, size: int):
  """Per-scan draws: geometry and reconstruction kernel."""
  style = profile.styles[patient.style_index]
  geometry = render_ct.CtGeometry(
      size=size, fov_mm=float(rng.uniform(*style.fov_scale)) * 2 * patient.anatomy.half_width,
      shift=(float(rng.normal(0, 6)), float(rng.normal(0, 6))), angle=float(rng.normal(0, 0.03)))
  return geometry, (float(rng.uniform(*style.blur_px)), float(rng.uniform(*style.sharpen)))


def _volume_heights(profile: SiteProfile, patient: Patient, rng: np.random.Generator) -> np.ndarray:
  anat = patient.anatomy
  lo, hi = profile.slice_spacing_mm
  spacing = float(rng.uniform(lo, hi)) if hi > 0 else DEFAULT_VOLUME_SPACING_MM
  start, stop = -25 * anat.scale, anat.lung_height + 35 * anat.scale
  return (start + spacing * np.arange(int((stop - start) / spacing) + 1)).astype(np.float32)


def _volume_plan(profile: SiteProfile, seed: int, patient: Patient):
  """Slice heights, in-plane geometry and kernel of the patient's volume scan."""
  rng = np.random.default_rng(_key(profile, seed, _SCAN_STREAM, patient.index))
  heights = _volume_heights(profile, patient, rng)
  geometry, kernel = _ct_scan(profile, patient, rng, profile.volume_size or profile.image_size)
  return heights, geometry, kernel


def _acquire_volume(profile: SiteProfile, seed: int, patient: Patient, plan, indices) -> render_ct.CtSlices:
  """Slices `indices` of the patient's volume, exactly as the scanner stores them."""
  heights, geometry, kernel = plan
  noise = [np.random.default_rng(_key(profile, seed, _NOISE_STREAM, patient.index, int(k))) for k in indices]
  return render_ct.acquire(patient.anatomy, patient.finding, heights[np.asarray(indices)], geometry,
                           profile.styles[patient.style_index], noise, kernel)


def _ct_slices(profile: SiteProfile, seed: int, patient: Patient) -> list[tuple[render_ct.CtSlices, int]]:
  """(acquired slices, count) groups: one scan per patient, or one per slice for sites whose
  images come from different sources (varying matrix and field of view)."""
  n = profile.slices_per_patient
  if profile.slice_mode == "volume":
    plan = _volume_plan(profile, seed, patient)
    count = len(plan[0])
    positions = [(k + 1) * count // (n + 1) for k in range(n)]
    return [(_acquire_volume(profile, seed, patient, plan, positions), n)]
  rng = np.random.default_rng(_key(profile, seed, _SCAN_STREAM, patient.index))
  lo, hi = profile.slice_range
  if profile.slice_mode == "stratified":
    t = lo + (hi - lo) * (np.arange(n) + rng.uniform(0.2, 0.8, size=n)) / n
  else:
    t = np.sort(rng.uniform(lo, hi, size=n))
  heights = (t * patient.anatomy.lung_height).astype(np.float32)
  noise = [np.random.default_rng(_key(profile, seed, _NOISE_STREAM, patient.index, k)) for k in range(n)]
  style = profile.styles[patient.style_index]
  if style.native_size == (0, 0):
    geometry, kernel = _ct_scan(profile, patient, rng, profile.image_size)
    return [(render_ct.acquire(patient.anatomy, patient.finding, heights, geometry, style, noise, kernel), n)]
  groups = []
  for k in range(n):
    geometry, kernel = _ct_scan(profile, patient, rng, int(rng.uniform(*style.native_size)))
    groups.append((render_ct.acquire(patient.anatomy, patient.finding, heights[k:k + 1], geometry, style,
                                     noise[k:k + 1], kernel), 1))
  return groups


def _ct_images(profile: SiteProfile, seed: int, patient: Patient):
  style = profile.styles[patient.style_index]
  k = 0
  for slices, count in _ct_slices(profile, seed, patient):
    for j in range(count):
      rng = np.random.default_rng(_key(profile, seed, _EXPORT_STREAM, patient.index, k))
      image = render_ct.export(slices.hu[j], slices.lesion_center[j], style, rng, profile.image_size,
                               profile.channels, patient.label3)
      yield image, float(slices.lesion_fraction[j]), k, "axial", style.name
      k += 1


def _cxr_images(profile: SiteProfile, seed: int, patient: Patient):
  style = profile.styles[patient.style_index]
  anat = patient.anatomy
  for k in range(profile.slices_per_patient):
    rng = np.random.default_rng(_key(profile, seed, _XRAY_STREAM, patient.index, k))
    view = "AP" if rng.uniform() < profile.ap_fraction[patient.label3] else "PA"
    geometry = render_cxr.CxrGeometry(
        view=view, render_size=max(32, profile.image_size // 2),
        field_mm=float(rng.uniform(*style.fov_scale)) * 2 * anat.half_width * (1.04 if view == "PA" else 1.15),
        center_z=float(0.45 * anat.lung_height + rng.normal(0, 0.03 * anat.lung_height)),
        shift_x=float(rng.normal(0, 0.03 * anat.half_width)), tilt=float(rng.normal(0, 0.03)))
    projection = render_cxr.acquire(anat, patient.finding, geometry, rng)
    image = render_cxr.export(projection, view, style, rng, profile.image_size, profile.channels, patient.label3)
    yield image, projection.lesion_fraction, k, view, style.name


def generate_site(modality: str, site: str, seed: int = 0, **overrides) -> dict[str, np.ndarray]:
  """All images of one site as equal-length arrays (see the package docstring for the keys)."""
  profile = site_profile(modality, site, **overrides)
  seed = _check_seed(seed)
  images_of = _ct_images if modality == "ct" else _cxr_images
  columns = {k: [] for k in ("image", "label", "label3", "severity", "lesion_fraction", "patient",
                             "domain", "slice_index", "view", "source")}
  domain = SITES_BY_MODALITY[modality].index(site)
  for patient in sample_patients(profile, seed):
    for image, lesion_fraction, index, view, source in images_of(profile, seed, patient):
      for key, value in (("image", image), ("label", int(patient.label3 == 2)), ("label3", patient.label3),
                         ("severity", patient.severity), ("lesion_fraction", lesion_fraction),
                         ("patient", patient.pid), ("domain", domain), ("slice_index", index),
                         ("view", view), ("source", source)):
        columns[key].append(value)
  out = {"image": np.stack(columns.pop("image")).astype(np.uint8),
         "lesion_fraction": np.asarray(columns.pop("lesion_fraction"), np.float32)}
  for key in ("patient", "view", "source"):
    out[key] = np.asarray(columns.pop(key), dtype=object)
  out.update({key: np.asarray(values, np.int32) for key, values in columns.items()})
  return out


def generate_volumes(site: str, seed: int = 0, **overrides) -> list[dict]:
  """CT volumes in HU, one dict per patient (see the package docstring)."""
  profile = site_profile("ct", site, **overrides)
  seed = _check_seed(seed)
  volumes = []
  for patient in sample_patients(profile, seed):
    plan = _volume_plan(profile, seed, patient)
    heights, geometry, _ = plan
    slices = _acquire_volume(profile, seed, patient, plan, np.arange(len(heights)))
    pixel = geometry.fov_mm / geometry.size
    spacing = (float(heights[1] - heights[0]), pixel, pixel)
    involvement = float(slices.lesion_pixels.sum() / max(slices.lung_pixels.sum(), 1))
    volumes.append({"volume_hu": slices.hu, "spacing": spacing, "lesion_fraction": slices.lesion_fraction,
                    "involvement": involvement,
                    "label": int(patient.label3 == 2), "label3": patient.label3, "severity": patient.severity,
                    "patient": patient.pid})
  return volumes
