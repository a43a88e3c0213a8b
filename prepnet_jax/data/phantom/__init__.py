"""The built-in multi-site chest phantom: the default dataset of every job.

One parametric 3-D chest per patient (anatomy.py) with COVID-19 or lobar-pneumonia findings
(findings.py), seen by CT scanners (render_ct.py) and X-ray units (render_cxr.py) whose
per-site differences are listed in sites.py.

  generate_site(modality, site, seed=0, **overrides) -> dict of equal-length arrays:
    image uint8 (N, H, W, C), C = the site's export channels (1 or 3)
    label int32 (1 = COVID), label3 int32 (0 normal, 1 pneumonia, 2 COVID)
    severity int32 (MosMed CT grade 1-4 for COVID, 0 otherwise)
    lesion_fraction float32 (lesion share of the lung area of that slice / projected lung field;
      0 for normal patients, and 0 on some slices of sick patients: labels are per patient)
    patient object str ('<site>-p0012'), domain int32 (index in CT_SITES / CXR_SITES),
    slice_index int32, view object str ('axial', 'PA', 'AP'),
    source object str (the style that made the image; COVIDx mixes sources by class)
  generate_volumes(site, seed=0, **overrides) -> per CT patient: volume_hu int16 (Z, Y, X),
    spacing (z, y, x) mm, lesion_fraction (Z,), involvement (lesion share of the lung volume),
    label, label3, severity, patient.
    Axes: z index 0 = above the lung apex (superior) .. Z-1 = below the bases (inferior);
    y index 0 = anterior .. posterior; x index 0 = patient's right .. left (radiological view).
    For 'mosmed', generate_site's slices are exactly slices n//4, n//2, 3n//4 of these volumes.
  Overrides: num_patients, slices_per_patient, image_size, channels, class_probs,
    severity_probs, volume_size.
"""

from __future__ import annotations

from prepnet_jax.data.phantom.contact_sheet import contact_sheet
from prepnet_jax.data.phantom.generate import generate_site, generate_volumes
from prepnet_jax.data.phantom.sites import CT_SITES, CXR_SITES, SITE_PROFILES

__all__ = ["CT_SITES", "CXR_SITES", "SITE_PROFILES", "contact_sheet", "generate_site", "generate_volumes",
           "prepare_tfds"]


def prepare_tfds(data_dir: str, configs=("ct", "cxr"), *, seed: int = 0, overrides=None) -> None:
  """Writes the phantom as the TFDS dataset `chest_phantom/<config>` (array_record) into
  data_dir; a config already prepared there is left alone (see tfds_builder.prepare)."""
  from prepnet_jax.data.phantom import tfds_builder  # TensorFlow is slow to import
  tfds_builder.prepare(data_dir, configs, seed=seed, overrides=overrides)
