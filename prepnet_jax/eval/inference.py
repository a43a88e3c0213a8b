"""Inference on single files with a trained classifier: the shared core of `predict` and `serve`.

  predictor = Predictor.from_config(config)       # loads the model (and PrepNet AE) once
  result = predictor.predict_file(path)           # FileResult, or InputError naming the file

Reading (`read_input`) decides the format by content, never by file name:
  DICOM  'DICM' at byte 128 → pixel data → rescale slope/intercept (modality LUT) → a linear
         window (`options.dicom_window`, else the header's WindowCenter/Width, first value when
         multi-valued, else the lung window for CT and the min–max range otherwise) → uint8 →
         inverted for MONOCHROME1. The window is `transforms.window_ct` (level ± width/2 →
         0..255), the project's one window function; the DICOM LINEAR function differs by < 1
         gray level.
  NIfTI  'n+1' / 'n+2' header (gzip or not) → `nifti.load_canonical` (RAS+) → the slices of
         `nifti.mosmed_slices` with the MosMed loader's settings (`options.nifti_*`).
  image  anything Pillow decodes (PNG, JPEG, ...), checked and decoded like the image-folder
         loader (`image_folder.check_image`, `pil_to_uint8`).
Every 2-D image then goes through the model's own evaluation preprocessing (`config.preprocess`
of its training run) and one jitted function gives its logits and Grad-CAM map, so a file
predicted here gets the same probabilities as the evaluation path on the same pixels.

The model comes from `eval.trained.load_trained_model`: any workdir of the classifier,
cxr_recipe (two-phase: its fine-tuning phase), augment_experiment (an arm and seed) or prepnet
jobs. A PrepNet workdir is served as one CT pipeline: the row's preprocessing → its AE
(→ grayscaling) → the E_cov trained on that AE's outputs, exactly the job's evaluation path; the
AE output is shown as the "PrepNet-normalised image" (web page, predict's `_prepnet.png`).

Probabilities are temperature-scaled with the temperature the training job fitted on the model's
validation split (`calibration.write_model_calibration`): `<model dir>/reports/calibration.json`
(`temperature_source` names that file), or `config.temperature` when > 0, or 1 (uncalibrated)
when neither exists.

Optional PrepNet auto-encoder in front of a separately trained classifier (`prepnet_workdir`,
`eval.prepnet_autoencoder.load_prepnet_autoencoder`): the image goes through the PrepNet run's
preprocessing and AE; the AE output, mapped back to uint8 with the PrepNet run's value range, is
the "PrepNet-normalised image", which the classifier then preprocesses like any other input. Use
it only with a classifier trained on AE-normalised images; PrepNet's own pipeline is the PrepNet
workdir as `model_workdir`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import gzip
import os
import tempfile
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, UnidentifiedImageError

from prepnet_jax.data import image_folder, nifti, transforms
from prepnet_jax.eval import calibration, figures, gradcam, prepnet_autoencoder, trained
from prepnet_jax.eval.metrics import as_class_probs

CALIBRATION_FILE = calibration.CALIBRATION_FILE
CT_DATASETS = ("sars_cov2_ct", "ucsd_covid_ct", "mosmed")
CXR_DATASETS = ("covidx", "deepcovid", "pediatric_cxr")
MODALITY_NAMES = {"ct": "CT", "cxr": "chest X-ray"}
# DICOM (0008,0060) Modality values of chest X-rays (computed / digital radiography).
CXR_DICOM_MODALITIES = ("CR", "DX", "DR", "RG")
_NIFTI1_MAGIC, _NIFTI2_MAGIC = b"n+1\0", b"n+2\0"


class InputError(ValueError):
  """A file this model cannot use; the message names the file and what was expected."""


# --- reading files -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ReadOptions:
  """How files become 2-D uint8 images; `from_config` reads the predict/serve config fields."""
  dicom_window: tuple[float, float] | None = None
  nifti_positions: tuple = nifti.THESIS_POSITIONS
  nifti_window: tuple[float, float] = nifti.LUNG_WINDOW
  nifti_rotate_k: int = 1
  nifti_crop: tuple[int, int] = (25, 45)
  nifti_flip_ud: bool = False
  min_side: int = 32
  max_side: int = 8192

  @classmethod
  def from_config(cls, config) -> "ReadOptions":
    window = tuple(float(v) for v in config.dicom_window) if config.dicom_window else None
    if window is not None and (len(window) != 2 or not window[1] > 0):
      raise ValueError(f"config.dicom_window must be () or (level, width > 0), got {config.dicom_window!r}")
    n = config.nifti
    return cls(dicom_window=window, nifti_positions=tuple(n.positions),
               nifti_window=tuple(float(v) for v in n.window), nifti_rotate_k=int(n.rotate_k),
               nifti_crop=tuple(int(v) for v in n.crop), nifti_flip_ud=bool(n.flip_ud),
               min_side=int(config.min_side), max_side=int(config.max_side))


@dataclasses.dataclass
class LoadedImage:
  """One 2-D image of a file: uint8 H×W×C, with the modality the file declares (None: unknown)."""
  image: np.ndarray
  modality: str | None
  label: str = ""  # which part of the file, e.g. 'slice 21' of a volume


@dataclasses.dataclass
class LoadedFile:
  path: str
  format: str  # 'dicom', 'nifti' or 'image'
  images: list[LoadedImage]
  notes: list[str]


def sniff_format(path: str) -> str:
  """'dicom', 'nifti' or 'image' (left to Pillow) from the first bytes of the file."""
  with open(path, "rb") as f:
    head = f.read(544)
  if head[128:132] == b"DICM":
    return "dicom"
  if head[:2] == b"\x1f\x8b":
    try:
      with gzip.open(path, "rb") as f:
        head = f.read(544)
    except (OSError, EOFError):
      return "image"
  if head[344:348] == _NIFTI1_MAGIC or head[4:8] == _NIFTI2_MAGIC:
    return "nifti"
  return "image"


def read_input(path: str, options: ReadOptions) -> LoadedFile:
  """The 2-D uint8 images of one file (one, or a volume's slices); InputError if unusable."""
  if os.path.isdir(path):
    raise InputError(f"{path}: a folder without image, DICOM or NIfTI files")
  if not os.path.isfile(path):
    raise InputError(f"{path}: no such file")
  try:
    kind = sniff_format(path)
  except OSError as e:
    raise InputError(f"{path}: cannot open: {e}") from e
  notes: list[str] = []
  if kind == "dicom":
    images = [_read_dicom(path, options, notes)]
  elif kind == "nifti":
    images = _read_nifti(path, options, notes)
  else:
    images = [LoadedImage(_read_pillow(path, options), None)]
  for loaded in images:
    _check_size(path, loaded, options)
  return LoadedFile(path, kind, images, notes)


def _check_size(path: str, loaded: LoadedImage, options: ReadOptions) -> None:
  height, width = loaded.image.shape[:2]
  _check_sides(path + (f" ({loaded.label})" if loaded.label else ""), height, width, options)


def _check_sides(name: str, height: int, width: int, options: ReadOptions) -> None:
  if min(height, width) < options.min_side or max(height, width) > options.max_side:
    raise InputError(f"{name}: image is {height}×{width} px; expected sides between "
                     f"{options.min_side} and {options.max_side} px (config.min_side/max_side)")


def _read_pillow(path: str, options: ReadOptions) -> np.ndarray:
  try:
    with Image.open(path) as im:
      width, height = im.size  # the header only: refuse huge images before decoding them
  except UnidentifiedImageError:
    raise InputError(f"{path}: not an image: Pillow cannot identify it, and it is neither DICOM "
                     "('DICM' at byte 128) nor NIfTI; expected PNG, JPEG, DICOM or NIfTI") from None
  except Exception as e:  # Pillow raises many types (OSError, DecompressionBombError, ...).
    raise InputError(f"{path}: cannot read image: {type(e).__name__}: {e}") from e
  _check_sides(path, height, width, options)
  reason = image_folder.check_image(path)
  if reason is not None:
    raise InputError(f"{path}: corrupt or truncated image: {reason}")
  try:
    return image_folder.decode_image(path)
  except image_folder.CorruptImageError as e:
    raise InputError(str(e)) from e


def _first_value(value) -> float:
  """A DICOM DS value that may be multi-valued (several windows): its first entry."""
  if isinstance(value, collections.abc.Sequence) and not isinstance(value, str):
    return float(value[0])
  return float(value)


def _read_dicom(path: str, options: ReadOptions, notes: list[str]) -> LoadedImage:
  import pydicom
  from pydicom.pixels import apply_modality_lut

  try:
    ds = pydicom.dcmread(path)
  except Exception as e:  # pydicom raises InvalidDicomError, EOFError, struct errors, ...
    raise InputError(f"{path}: cannot read DICOM: {type(e).__name__}: {e}") from e
  if "PixelData" not in ds:
    raise InputError(f"{path}: DICOM file has no pixel data (truncated, or a DICOMDIR or report)")
  _check_sides(path, int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), options)
  try:
    pixels = ds.pixel_array
  except Exception as e:  # missing decoders for compressed transfer syntaxes, bad lengths, ...
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    raise InputError(f"{path}: cannot decode DICOM pixel data (transfer syntax "
                     f"{getattr(syntax, 'name', syntax)}): {type(e).__name__}: {e}") from e
  dicom_modality = str(ds.get("Modality", "")).upper()
  modality = "ct" if dicom_modality == "CT" else "cxr" if dicom_modality in CXR_DICOM_MODALITIES else None
  frames = int(ds.get("NumberOfFrames", 1) or 1)
  samples = int(ds.get("SamplesPerPixel", 1))
  if frames > 1:
    pixels = pixels[frames // 2]
    notes.append(f"multi-frame DICOM ({frames} frames): used the middle frame {frames // 2}")
  if samples == 3:
    if pixels.dtype != np.uint8:
      raise InputError(f"{path}: colour DICOM with {pixels.dtype} samples; expected 8-bit RGB")
    return LoadedImage(np.ascontiguousarray(pixels), modality)
  if samples != 1 or pixels.ndim != 2:
    raise InputError(f"{path}: expected a single-frame grayscale or RGB DICOM image, got "
                     f"SamplesPerPixel={samples}, pixel array shape {pixels.shape}")
  values = np.asarray(apply_modality_lut(pixels, ds), np.float32)
  level, width = _dicom_window(ds, values, modality, options, notes)
  image = transforms.window_ct(values, level, width)
  if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
    image = 255 - image  # MONOCHROME1: the minimum value is white
    notes.append("MONOCHROME1: inverted so that high values are bright")
  return LoadedImage(image[..., None], modality)


def _dicom_window(ds, values: np.ndarray, modality: str | None, options: ReadOptions,
                  notes: list[str]) -> tuple[float, float]:
  if options.dicom_window is not None:
    notes.append(f"window {options.dicom_window} from config.dicom_window")
    return options.dicom_window
  if "WindowCenter" in ds and "WindowWidth" in ds:
    level, width = _first_value(ds.WindowCenter), _first_value(ds.WindowWidth)
    if width > 0:
      notes.append(f"window level {level:g} / width {width:g} from the DICOM header")
      return level, width
  if modality == "ct":
    notes.append(f"no window in the DICOM header: lung window {nifti.LUNG_WINDOW} (as for NIfTI)")
    return nifti.LUNG_WINDOW
  low, high = float(values.min()), float(values.max())
  notes.append(f"no window in the DICOM header: full range [{low:g}, {high:g}]")
  return (low + high) / 2.0, max(high - low, 1.0)


def _read_nifti(path: str, options: ReadOptions, notes: list[str]) -> list[LoadedImage]:
  with open(path, "rb") as f:
    compressed = f.read(2) == b"\x1f\x8b"
  suffix = ".nii.gz" if compressed else ".nii"
  with tempfile.TemporaryDirectory(prefix="prepnet_nifti_") as tmp:
    readable = path
    if not path.endswith(suffix):  # nibabel picks its reader from the file name
      readable = os.path.join(tmp, "volume" + suffix)
      os.symlink(os.path.abspath(path), readable)
    try:
      volume, _ = nifti.load_canonical(readable)
    except Exception as e:  # truncated data surfaces only when read: EOFError, zlib.error, ...
      raise InputError(f"{path}: cannot read NIfTI volume: {type(e).__name__}: {e}") from e
  indices = nifti.slice_indices(volume.shape[2], options.nifti_positions)
  try:
    slices = nifti.mosmed_slices(volume, options.nifti_positions, options.nifti_rotate_k,
                                 options.nifti_crop, options.nifti_window, options.nifti_flip_ud)
  except ValueError as e:
    raise InputError(f"{path}: {e}") from e
  notes.append(f"NIfTI volume {tuple(volume.shape)} (RAS+): slices {indices} of {volume.shape[2]}, "
               f"window {options.nifti_window}, crop {options.nifti_crop}")
  return [LoadedImage(s[..., None], "ct", f"slice {i}") for i, s in zip(indices, slices)]


# --- the model -----------------------------------------------------------------------------------

def dataset_modality(ref: str) -> str | None:
  """'ct' / 'cxr' for a dataset reference of the project; None for a user folder."""
  if ref.startswith("phantom_ct/"):
    return "ct"
  if ref.startswith("phantom_cxr/"):
    return "cxr"
  name = ref.partition("/")[0]
  return "ct" if name in CT_DATASETS else "cxr" if name in CXR_DATASETS else None


def training_modality(config) -> str | None:
  """The modality of the run's training data (config.data.train), None if mixed or unknown."""
  refs = config.data.train
  refs = [refs] if isinstance(refs, str) else list(refs or [])
  modalities = {dataset_modality(r) for r in refs}
  return modalities.pop() if len(modalities) == 1 else None


@functools.partial(jax.jit, static_argnums=(0, 1))
def _logits_and_cam(model, layer, variables, images):
  """One compiled forward + Grad-CAM per model and input shape (inputs are resized to it)."""
  cams, info = gradcam.grad_cam(model, variables, images, layer=layer)
  return info["logits"], cams


# --- predictions ---------------------------------------------------------------------------------

@dataclasses.dataclass
class ImagePrediction:
  """Everything shown for one 2-D image; images are uint8 for display."""
  label: str
  original: np.ndarray        # the image as read (H×W×C)
  normalised: np.ndarray | None  # the PrepNet-normalised image (AE output), if an AE is used
  model_input: np.ndarray     # the preprocessed model input, denormalised (S×S×C)
  logits: np.ndarray          # (K,) or (1,) for a binary single logit
  probabilities: np.ndarray   # (K ≥ 2,) temperature-scaled
  cam: np.ndarray             # (S, S) in [0, 1]
  overlay: np.ndarray         # (S, S, 3) Grad-CAM over the model input


@dataclasses.dataclass
class FileResult:
  path: str
  format: str
  modality: str | None
  predictions: list[ImagePrediction]
  notes: list[str]

  @property
  def probabilities(self) -> np.ndarray:
    """The file's probabilities: the image's, or the mean over a volume's slices."""
    return np.mean([p.probabilities for p in self.predictions], axis=0)


class Predictor:
  """A trained model (and optional PrepNet AE) loaded once, predicting one image at a time."""

  def __init__(self, model_workdir: str, options: ReadOptions = ReadOptions(), temperature: float = 0.0,
               gradcam_layer: str = "", cam_alpha: float = 0.4,
               autoencoder: prepnet_autoencoder.AutoEncoder | None = None,
               selection: trained.Selection = trained.Selection()):
    self.model_workdir = model_workdir
    self.options = options
    served = trained.load_trained_model(model_workdir, selection)
    self.served = served
    self.config, self.model, self.variables = served.config, served.model, served.variables
    self.class_names = list(served.class_names)
    self.modality = training_modality(self.config)
    preprocess = dict(served.preprocess)
    preprocess["ct_window"] = ()  # inputs arrive as windowed uint8 images (windowing is in reading)
    self.preprocess = transforms.make_preprocess(preprocess, training=False)
    self.image_size = int(preprocess["image_size"])
    self.channels = int(preprocess["channels"])
    self.value_range = preprocess["value_range"]
    if temperature > 0:
      self.temperature, self.temperature_source = float(temperature), "config.temperature"
    elif served.temperature is not None:
      self.temperature, self.temperature_source = served.temperature, served.calibration_file
    else:
      self.temperature = 1.0
      self.temperature_source = f"none (uncalibrated: no {served.calibration_file}; T = 1)"
    self.calibrated = not self.temperature_source.startswith("none")
    self.gradcam_layer = gradcam_layer or None
    gradcam.at_layer(self.model, self.gradcam_layer)  # a bad layer name fails here, not per upload
    self.cam_alpha = float(cam_alpha)
    if autoencoder is not None and served.kind == "prepnet":
      raise ValueError(f"config.prepnet_workdir puts a PrepNet AE in front of a classifier, but {model_workdir} "
                       "is a PrepNet run, served as its own AE + E_cov pipeline; leave prepnet_workdir empty")
    if autoencoder is not None and self.modality == "cxr":
      raise ValueError(f"a PrepNet auto-encoder normalises CT slices, but the model in {model_workdir} "
                       f"was trained on chest X-rays (data.train={self.config.data.train!r})")
    self.autoencoder = autoencoder
    self.pipeline_stage = served.autoencoder  # a PrepNet run's own AE (+ grayscaling) before E_cov

  @classmethod
  def from_config(cls, config) -> "Predictor":
    """From a predict/serve config: model_workdir and the model selection fields, temperature,
    PrepNet AE, reading options."""
    if not config.model_workdir:
      raise ValueError("config.model_workdir is empty; expected the workdir of a classifier, cxr_recipe, "
                       "augment_experiment or prepnet run (e.g. --config.model_workdir=runs/cls)")
    autoencoder = None
    if config.prepnet_workdir:
      autoencoder = prepnet_autoencoder.load_prepnet_autoencoder(config.prepnet_workdir, config.prepnet_row,
                                                                 int(config.model_seed))
    return cls(config.model_workdir, ReadOptions.from_config(config), float(config.temperature),
               config.gradcam_layer, float(config.cam_alpha), autoencoder, trained.Selection.from_config(config))

  @property
  def model_name(self) -> str:
    return self.served.name

  def describe(self) -> dict:
    return {"model_workdir": self.model_workdir, "model": self.model_name, "model_kind": self.served.kind,
            "model_description": self.served.description, "model_dir": self.served.model_dir,
            "trained_on": self.config.data.train, "modality": self.modality,
            "image_size": self.image_size, "class_names": self.class_names,
            "temperature": self.temperature, "calibrated": self.calibrated,
            "temperature_source": self.temperature_source,
            "prepnet_autoencoder": self.autoencoder.description if self.autoencoder else None}

  def probabilities(self, logits: np.ndarray) -> np.ndarray:
    """(N, K ≥ 2) temperature-scaled class probabilities of (N, K) or (N, 1) logits."""
    return as_class_probs(calibration.probabilities(np.asarray(logits), self.temperature))

  def predict_image(self, image: np.ndarray, label: str = "") -> ImagePrediction:
    """Preprocess → (AE) → classifier + Grad-CAM for one uint8 H×W×C image."""
    normalised = self.autoencoder.normalise(image) if self.autoencoder else None
    x = self.preprocess({"image": image if normalised is None else normalised}, None)["image"][None]
    if self.pipeline_stage is not None:  # a PrepNet run: E_cov sees the AE output, as in training
      ae_output, x = self.pipeline_stage(x)
      if ae_output is not None:
        normalised = transforms.denormalize(ae_output[0], self.value_range)
    logits, cams = _logits_and_cam(self.model, self.gradcam_layer, self.variables, jnp.asarray(x))
    logits, cam = np.asarray(logits)[0], np.asarray(cams)[0]
    model_input = transforms.denormalize(np.asarray(x)[0], self.value_range)
    return ImagePrediction(label=label, original=image, normalised=normalised, model_input=model_input,
                           logits=logits, probabilities=self.probabilities(logits[None])[0], cam=cam,
                           overlay=figures.cam_overlay(model_input, cam, self.cam_alpha))

  def check_modality(self, loaded: LoadedFile) -> None:
    declared = {image.modality for image in loaded.images} - {None}
    if self.modality is None or not declared or declared == {self.modality}:
      return
    given = MODALITY_NAMES[declared.pop()]
    what = "a CT volume (NIfTI)" if loaded.format == "nifti" else f"a {given} {loaded.format.upper()} image"
    raise InputError(f"{loaded.path}: {what}, but the model in {self.model_workdir} was trained on "
                     f"{MODALITY_NAMES[self.modality]} images (data.train={self.config.data.train!r}); "
                     f"give it a {MODALITY_NAMES[self.modality]} image or use a {given} model")

  def predict_file(self, path: str) -> FileResult:
    loaded = read_input(path, self.options)
    self.check_modality(loaded)
    predictions = [self.predict_image(image.image, image.label) for image in loaded.images]
    modality = next((i.modality for i in loaded.images if i.modality), None)
    return FileResult(path, loaded.format, modality, predictions, loaded.notes)

  def warm_up(self) -> None:
    """Compiles the forward + Grad-CAM (and AE) once, before the first real input."""
    self.predict_image(np.zeros((self.image_size, self.image_size, self.channels), np.uint8))


def probabilities_by_class(class_names: Sequence[str], probabilities: np.ndarray) -> dict[str, float]:
  return {name: float(p) for name, p in zip(class_names, probabilities)}
