"""Writes the built-in phantom in the on-disk layouts of the real CT datasets.

The TFDS builders in `ct_datasets` are then exercised on realistic files (PNG/JPEG of varying
sizes, official-style split lists, NIfTI int16 HU volumes with a real affine) without any
download. File names carry the patient id so patient-level splits can be checked.
"""

from __future__ import annotations

import pathlib
import re

import nibabel as nib
import numpy as np
from PIL import Image

from prepnet_jax.data import phantom, transforms

SEVERITY_FOLDERS = ("CT-0", "CT-1", "CT-2", "CT-3", "CT-4")


def _safe_patients(patients) -> dict[str, str]:
  """Phantom patient id -> an id of letters and digits only (file-name and regex safe)."""
  mapping = {str(p): re.sub(r"[^A-Za-z0-9]", "", str(p)) for p in patients}
  if len(set(mapping.values())) != len(mapping):
    raise ValueError("patient ids collide after removing punctuation; cannot export them in file names")
  return mapping


def _save_image(image: np.ndarray, path: pathlib.Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  array = image[..., 0] if image.shape[-1] == 1 else image
  if path.suffix == ".jpg":
    Image.fromarray(array).save(path, quality=92)
  else:
    Image.fromarray(array).save(path)


def _vary_size(rng: np.random.Generator, image: np.ndarray, size_jitter: float) -> np.ndarray:
  """Rescales each side by an independent factor in [1 - jitter, 1 + jitter] (real sets vary)."""
  if size_jitter <= 0:
    return image
  factors = rng.uniform(1 - size_jitter, 1 + size_jitter, size=2)
  height, width = (max(8, int(round(s * f))) for s, f in zip(image.shape[:2], factors))
  return transforms.resize(image, (height, width), "bicubic")


def export_sars_layout(out_dir: str | pathlib.Path, seed: int = 0, size_jitter: float = 0.25,
                       **overrides) -> pathlib.Path:
  """Phantom 'sars' site -> <out_dir>/COVID/*.png and <out_dir>/non-COVID/*.png.

  Names are '<patient>__Covid (k).png' / '<patient>__Non-Covid (k).png' (the Kaggle names with
  a patient prefix; builder config 'patient_prefix' reads it back).
  """
  out_dir = pathlib.Path(out_dir)
  arrays = phantom.generate_site("ct", "sars", seed=seed, **overrides)
  safe = _safe_patients(arrays["patient"])
  rng = np.random.default_rng(seed)
  counters = {0: 0, 1: 0}
  for image, label, patient in zip(arrays["image"], arrays["label"], arrays["patient"]):
    label = int(label)
    counters[label] += 1
    folder, stem = ("COVID", "Covid") if label == 1 else ("non-COVID", "Non-Covid")
    name = f"{safe[str(patient)]}__{stem} ({counters[label]}).png"
    _save_image(_vary_size(rng, image, size_jitter), out_dir / folder / name)
  return out_dir


def export_ucsd_layout(out_dir: str | pathlib.Path, seed: int = 0, size_jitter: float = 0.4,
                       official_split: str = "image", split_fractions=(0.57, 0.16, 0.27),
                       jpeg_fraction: float = 0.5, **overrides) -> pathlib.Path:
  """Phantom 'ucsd' site -> Images-processed/CT_{COVID,NonCOVID}/ + Data-split/*/{split}CT_*.txt.

  Files are PNG or JPEG (`jpeg_fraction`), named '<patient>-p<k>.png' (the builder's default
  patient regex takes the text before '-'). official_split='image' assigns images to splits
  independently, so patients leak across splits as in the published UCSD split; 'patient'
  keeps each patient in one split.
  """
  if official_split not in ("image", "patient"):
    raise ValueError(f"official_split must be 'image' or 'patient', got {official_split!r}")
  out_dir = pathlib.Path(out_dir)
  arrays = phantom.generate_site("ct", "ucsd", seed=seed, **overrides)
  safe = _safe_patients(arrays["patient"])
  rng = np.random.default_rng(seed)
  patient_split = {p: rng.choice(3, p=split_fractions) for p in sorted(safe)}
  lists = {(c, s): [] for c in ("COVID", "NonCOVID") for s in ("train", "val", "test")}
  for k, (image, label, patient) in enumerate(zip(arrays["image"], arrays["label"], arrays["patient"])):
    class_dir = "COVID" if int(label) == 1 else "NonCOVID"
    suffix = ".jpg" if rng.random() < jpeg_fraction else ".png"
    name = f"{safe[str(patient)]}-p{k}{suffix}"
    _save_image(_vary_size(rng, image, size_jitter), out_dir / "Images-processed" / f"CT_{class_dir}" / name)
    if official_split == "patient":
      split_id = patient_split[str(patient)]
    else:
      split_id = rng.choice(3, p=split_fractions)
    lists[(class_dir, ("train", "val", "test")[split_id])].append(name)
  for (class_dir, split), names in lists.items():
    path = out_dir / "Data-split" / class_dir / f"{split}CT_{class_dir}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{n}\n" for n in names))
  return out_dir


def ras_affine(spacing_zyx, shape_zyx) -> np.ndarray:
  """Affine of the RAS+ array of a phantom volume, centred on the volume (mm)."""
  spacing_xyz = np.asarray(spacing_zyx, np.float64)[::-1]
  affine = np.diag([*spacing_xyz, 1.0])
  affine[:3, 3] = -(np.asarray(shape_zyx[::-1]) - 1) / 2 * spacing_xyz
  return affine


def volume_to_nifti(volume_hu: np.ndarray, spacing_zyx, orientation: str = "canonical") -> nib.Nifti1Image:
  """A phantom volume (Z: head->feet, Y: anterior->posterior, X: patient right->left) as NIfTI.

  'canonical' stores the RAS+ array with a diagonal affine; 'flipped' stores the (Z, Y, X)
  array as it is, with the permuted, negated affine that puts it at the same world position,
  as DICOM-order converters do. Both read back identically through `nifti.load_canonical`.
  """
  volume_hu = np.asarray(volume_hu, np.int16)
  canonical_affine = ras_affine(spacing_zyx, volume_hu.shape)
  if orientation == "canonical":
    data, affine = np.ascontiguousarray(volume_hu[::-1, ::-1, ::-1].transpose(2, 1, 0)), canonical_affine
  elif orientation == "flipped":
    # Voxel (z, y, x) is RAS voxel (nx-1-x, ny-1-y, nz-1-z): compose that index map with the affine.
    nz, ny, nx = volume_hu.shape
    index_map = np.array([[0, 0, -1, nx - 1], [0, -1, 0, ny - 1], [-1, 0, 0, nz - 1], [0, 0, 0, 1]],
                         np.float64)
    data, affine = volume_hu, canonical_affine @ index_map
  else:
    raise ValueError(f"orientation must be 'canonical' or 'flipped', got {orientation!r}")
  image = nib.Nifti1Image(data, affine)
  image.header.set_data_dtype(np.int16)
  image.header.set_xyzt_units("mm")
  return image


def export_mosmed_layout(out_dir: str | pathlib.Path, seed: int = 0, orientation: str = "canonical",
                         suffix: str = ".nii.gz", **overrides) -> pathlib.Path:
  """Phantom 'mosmed' volumes -> <out_dir>/studies/CT-<severity>/study_0001.nii.gz, ..."""
  if suffix not in (".nii", ".nii.gz"):
    raise ValueError(f"suffix must be '.nii' or '.nii.gz', got {suffix!r}")
  out_dir = pathlib.Path(out_dir)
  for number, study in enumerate(phantom.generate_volumes("mosmed", seed=seed, **overrides), start=1):
    folder = out_dir / "studies" / SEVERITY_FOLDERS[int(study["severity"])]
    folder.mkdir(parents=True, exist_ok=True)
    image = volume_to_nifti(study["volume_hu"], study["spacing"], orientation)
    nib.save(image, folder / f"study_{number:04d}{suffix}")
  return out_dir
