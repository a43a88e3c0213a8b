"""Acquisition sites of the phantom: the ground truth of what differs between datasets.

Each profile imitates one real dataset's look and composition (prepnet thesis §5, CXR papers
§002.4/§004.4). Ranges `(lo, hi)` are drawn uniformly per image (or per patient where noted),
so a site is a distribution of styles, not one fixed filter. A site may mix several styles
(COVIDx is assembled from several public sources, and which source an image comes from
depends on its class - a real shortcut of that dataset).
"""

from __future__ import annotations

import dataclasses

Range = tuple[float, float]
ByClass = tuple[float, float, float]  # indexed by label3: normal, pneumonia, COVID


@dataclasses.dataclass(frozen=True)
class CtStyle:
  name: str
  window_level: Range       # HU of the export window centre
  window_width: Range       # HU
  gamma: Range              # applied to the windowed [0, 1] image
  blur_px: Range            # soft reconstruction kernel (Gaussian sigma, native pixels)
  sharpen: Range            # sharp (lung) kernel: unsharp-mask amount
  noise_hu: Range           # quantum noise standard deviation
  noise_grain_px: float     # noise correlation length (kernel-dependent texture)
  fov_scale: Range          # reconstructed field of view / body width
  native_size: Range        # original matrix before export resizing; (0, 0) = image_size
  circular_fov: bool        # outside the reconstruction circle is -1024 HU
  table: bool               # patient couch visible under the back
  flip_lr: bool             # exported with the patient's left on the image left
  crop: tuple[float, float, float, float]  # fraction cut (top, bottom, left, right) before resizing
  brightness: Range         # added to the [0, 1] image
  contrast: Range           # multiplies the [0, 1] image around 0.5
  jpeg_quality: Range | None
  text_prob: float          # burned-in letters / figure labels
  arrow_prob: ByClass       # burned-in arrows (papers point them at lesions)
  scale_bar_prob: float
  color_overlays: bool      # overlays in colour (needs RGB export)


@dataclasses.dataclass(frozen=True)
class CxrStyle:
  name: str
  exposure: Range           # detected photons per exported pixel without patient (quantum noise)
  scatter: Range            # scatter fraction: low-frequency fog that lowers contrast
  gamma: Range
  contrast: Range           # slope of the sigmoid tone curve
  edge_enhance: Range       # unsharp-mask amount of the vendor processing
  detector_blur_px: Range
  collimation: Range        # fraction of each border outside the collimated field
  fov_scale: Range          # detector field / body width
  marker_prob: float        # lead side marker burned in
  marker: str               # letters it may show: 'L', 'R' or 'LR'
  view_text_prob: float     # prints 'AP' / 'PORTABLE' on AP images
  text_prob: float          # annotation letters (figures from papers)
  arrow_prob: ByClass
  jpeg_quality: Range | None


@dataclasses.dataclass(frozen=True)
class SiteProfile:
  name: str
  modality: str             # 'ct' or 'cxr'
  imitates: str
  num_patients: int
  slices_per_patient: int   # CT slices or X-ray images per patient
  image_size: int           # exported H = W
  channels: int             # 1 (grayscale PNG) or 3 (RGB export)
  class_probs: ByClass      # exact patient shares of normal / pneumonia / COVID
  severity_probs: tuple[float, float, float, float]  # MosMed CT-1..CT-4 among COVID patients
  body_scale: Range         # per patient: 1 = adult
  heart_scale: Range        # per patient
  styles: tuple             # CtStyle or CxrStyle
  style_probs: tuple[tuple[float, ...], ...]  # per class: probability of each style
  slice_mode: str = ""      # CT: 'stratified' / 'random' over slice_range, or 'volume' (n//4, n//2, 3n//4)
  slice_range: Range = (0.0, 1.0)  # CT: fraction of the lung height (apex 0 .. costophrenic 1)
  slice_spacing_mm: Range = (0.0, 0.0)  # CT volume mode
  volume_size: int = 0      # CT volume mode: in-plane matrix
  ap_fraction: ByClass = (0.0, 0.0, 0.0)  # CXR: share of AP (bedside) images per class


_NO_ARROWS = (0.0, 0.0, 0.0)
_SINGLE = ((1.0,), (1.0,), (1.0,))

SARS = CtStyle(
    name="sars", window_level=(-540, -480), window_width=(1300, 1500), gamma=(0.9, 1.1),
    blur_px=(0, 0), sharpen=(0.5, 0.8), noise_hu=(8, 14), noise_grain_px=0.6, fov_scale=(1.02, 1.12),
    native_size=(0, 0), circular_fov=False, table=False, flip_lr=False, crop=(0, 0, 0, 0),
    brightness=(0, 0), contrast=(1, 1), jpeg_quality=None, text_prob=0.0, arrow_prob=_NO_ARROWS,
    scale_bar_prob=0.0, color_overlays=False)
UCSD = CtStyle(
    name="ucsd", window_level=(-750, -350), window_width=(900, 1700), gamma=(0.65, 1.5),
    blur_px=(0.2, 0.8), sharpen=(0, 0), noise_hu=(12, 30), noise_grain_px=1.0, fov_scale=(0.95, 1.45),
    native_size=(56, 110), circular_fov=False, table=False, flip_lr=False, crop=(0, 0, 0, 0),
    brightness=(-0.12, 0.12), contrast=(0.75, 1.2), jpeg_quality=(20, 55), text_prob=0.6,
    arrow_prob=(0.05, 0.15, 0.5), scale_bar_prob=0.35, color_overlays=True)
MOSMED = CtStyle(
    name="mosmed", window_level=(-600, -600), window_width=(1500, 1500), gamma=(1, 1),
    blur_px=(0.6, 0.9), sharpen=(0, 0), noise_hu=(30, 45), noise_grain_px=0.9, fov_scale=(1.22, 1.35),
    native_size=(0, 0), circular_fov=True, table=True, flip_lr=True,
    crop=(45 / 512, 45 / 512, 25 / 512, 25 / 512), brightness=(0, 0), contrast=(1, 1),
    jpeg_quality=None, text_prob=0.0, arrow_prob=_NO_ARROWS, scale_bar_prob=0.0, color_overlays=False)

RSNA = CxrStyle(
    name="rsna", exposure=(4000, 8000), scatter=(0.15, 0.25), gamma=(0.9, 1.1), contrast=(5, 6),
    edge_enhance=(0.2, 0.4), detector_blur_px=(0.6, 0.9), collimation=(0, 0.04), fov_scale=(1.35, 1.5),
    marker_prob=0.3, marker="LR", view_text_prob=0.2, text_prob=0.0, arrow_prob=_NO_ARROWS,
    jpeg_quality=None)
COHEN = CxrStyle(
    name="cohen", exposure=(1500, 4000), scatter=(0.2, 0.35), gamma=(0.7, 1.4), contrast=(3.5, 7),
    edge_enhance=(0, 0.6), detector_blur_px=(0.8, 1.4), collimation=(0, 0.1), fov_scale=(1.2, 1.6),
    marker_prob=0.5, marker="LR", view_text_prob=0.3, text_prob=0.3, arrow_prob=(0.0, 0.1, 0.35),
    jpeg_quality=(30, 65))
SIRM = CxrStyle(
    name="sirm", exposure=(2000, 5000), scatter=(0.1, 0.2), gamma=(1.1, 1.5), contrast=(6, 8),
    edge_enhance=(0.5, 0.9), detector_blur_px=(0.6, 1.0), collimation=(0.02, 0.08), fov_scale=(1.3, 1.45),
    marker_prob=0.6, marker="LR", view_text_prob=0.4, text_prob=0.1, arrow_prob=(0.0, 0.0, 0.15),
    jpeg_quality=(55, 80))
PEDIATRIC = CxrStyle(
    name="pediatric", exposure=(1500, 3000), scatter=(0.3, 0.45), gamma=(0.8, 1.0), contrast=(4, 5),
    edge_enhance=(0.1, 0.3), detector_blur_px=(0.9, 1.3), collimation=(0.04, 0.18), fov_scale=(1.5, 1.9),
    marker_prob=0.75, marker="R", view_text_prob=0.0, text_prob=0.0, arrow_prob=_NO_ARROWS,
    jpeg_quality=(70, 90))
ULM = CxrStyle(
    name="ulm", exposure=(6000, 12000), scatter=(0.08, 0.15), gamma=(1.2, 1.4), contrast=(7, 9),
    edge_enhance=(0.9, 1.4), detector_blur_px=(0.5, 0.7), collimation=(0.03, 0.08), fov_scale=(1.3, 1.4),
    marker_prob=0.95, marker="L", view_text_prob=0.9, text_prob=0.0, arrow_prob=_NO_ARROWS,
    jpeg_quality=None)

CT_SITES = ("sars", "ucsd", "mosmed")
CXR_SITES = ("covidx", "pediatric", "ulm")

SITE_PROFILES: dict[str, SiteProfile] = {
    "sars": SiteProfile(
        name="sars", modality="ct", num_patients=62, slices_per_patient=8, image_size=128, channels=1,
        imitates="SARS-COV-2 CT (Brazil): large, 74 % COVID, lung-window PNG slices cropped to the body, "
                 "sharp kernel, little noise; negatives are healthy or other pneumonias",
        class_probs=(0.13, 0.13, 0.74), severity_probs=(0.2, 0.35, 0.28, 0.17),
        body_scale=(0.9, 1.1), heart_scale=(0.9, 1.1), styles=(SARS,), style_probs=_SINGLE,
        slice_mode="stratified", slice_range=(0.12, 0.95)),
    "ucsd": SiteProfile(
        name="ucsd", modality="ct", num_patients=50, slices_per_patient=3, image_size=96, channels=3,
        imitates="UCSD COVID-CT (China): small, images cut from papers: low and varying resolution, "
                 "JPEG, RGB, burned-in arrows/letters/scales, brightness and contrast vary",
        class_probs=(0.33, 0.2, 0.47), severity_probs=(0.2, 0.35, 0.3, 0.15),
        body_scale=(0.85, 1.1), heart_scale=(0.9, 1.1), styles=(UCSD,), style_probs=_SINGLE,
        slice_mode="random", slice_range=(0.3, 0.9)),
    "mosmed": SiteProfile(
        name="mosmed", modality="ct", num_patients=100, slices_per_patient=3, image_size=128, channels=1,
        imitates="MosMedData (Moscow): NIfTI volumes graded CT-0..CT-4, ~8 mm slices, low-dose noise, "
                 "soft kernel, table; 3 slices per patient (n//4, n//2, 3n//4), lung window, cropped "
                 "25/45 px as in the thesis, left-right flipped by the NIfTI export",
        class_probs=(0.25, 0.0, 0.75), severity_probs=(0.45, 0.27, 0.16, 0.12),
        body_scale=(0.9, 1.15), heart_scale=(0.9, 1.15), styles=(MOSMED,), style_probs=_SINGLE,
        slice_mode="volume", slice_spacing_mm=(7.5, 8.5), volume_size=128),
    "covidx": SiteProfile(
        name="covidx", modality="cxr", num_patients=150, slices_per_patient=2, image_size=128, channels=3,
        imitates="COVIDx: multi-source, 3-class; normals/pneumonia from RSNA-like DICOM exports, COVID "
                 "from public collections (JPEG, annotated figures), so source tracks the label",
        class_probs=(0.45, 0.35, 0.2), severity_probs=(0.25, 0.35, 0.25, 0.15),
        body_scale=(0.9, 1.1), heart_scale=(0.9, 1.1), styles=(RSNA, COHEN, SIRM),
        style_probs=((1.0, 0.0, 0.0), (0.8, 0.2, 0.0), (0.0, 0.5, 0.5)), ap_fraction=(0.3, 0.45, 0.6)),
    "pediatric": SiteProfile(
        name="pediatric", modality="cxr", num_patients=100, slices_per_patient=2, image_size=128, channels=1,
        imitates="Pediatric pneumonia CXR (Guangzhou-like): children, mostly AP, pneumonia heavy, wide "
                 "collimation, 'R' markers, grayscale JPEG",
        class_probs=(0.35, 0.55, 0.1), severity_probs=(0.5, 0.3, 0.15, 0.05),
        body_scale=(0.45, 0.7), heart_scale=(1.1, 1.3), styles=(PEDIATRIC,), style_probs=_SINGLE,
        ap_fraction=(0.85, 0.85, 0.85)),
    "ulm": SiteProfile(
        name="ulm", modality="cxr", num_patients=100, slices_per_patient=2, image_size=128, channels=1,
        imitates="Local hospital external test site (like Uniklinik Ulm, seed 004): 33 % COVID, many AP "
                 "bedside films (more for COVID), strong edge enhancement, 'L' marker and 'AP' print",
        class_probs=(0.5, 0.17, 0.33), severity_probs=(0.3, 0.35, 0.25, 0.1),
        body_scale=(0.9, 1.1), heart_scale=(0.9, 1.1), styles=(ULM,), style_probs=_SINGLE,
        ap_fraction=(0.3, 0.5, 0.65)),
}

SITES_BY_MODALITY = {"ct": CT_SITES, "cxr": CXR_SITES}
OVERRIDABLE = ("num_patients", "slices_per_patient", "image_size", "channels", "class_probs",
               "severity_probs", "volume_size")


def site_profile(modality: str, site: str, **overrides) -> SiteProfile:
  """The profile of `site`, with size overrides; unknown names raise with the valid ones."""
  if modality not in SITES_BY_MODALITY:
    raise ValueError(f"unknown phantom modality {modality!r}; expected one of {tuple(SITES_BY_MODALITY)}")
  if site not in SITES_BY_MODALITY[modality]:
    raise ValueError(f"unknown {modality} phantom site {site!r}; expected one of {SITES_BY_MODALITY[modality]}")
  unknown = sorted(set(overrides) - set(OVERRIDABLE))
  if unknown:
    raise ValueError(f"unknown phantom override(s) {unknown}; expected some of {OVERRIDABLE}")
  for key in ("num_patients", "slices_per_patient", "image_size", "volume_size"):
    if key in overrides and (not isinstance(overrides[key], int) or overrides[key] < 1):
      raise ValueError(f"phantom override {key} must be a positive int, got {overrides[key]!r}")
  if "image_size" in overrides and overrides["image_size"] < 16:
    raise ValueError(f"phantom override image_size must be >= 16, got {overrides['image_size']}")
  if "channels" in overrides and overrides["channels"] not in (1, 3):
    raise ValueError(f"phantom override channels must be 1 or 3, got {overrides['channels']!r}")
  return dataclasses.replace(SITE_PROFILES[site], **overrides)
