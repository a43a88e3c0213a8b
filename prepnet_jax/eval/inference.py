"""Inference on single files with a trained classifier: the shared core of `predict` and `serve`.

  predictor = Predictor.from_config(config)       # loads the model (and PrepNet AE) once
  result = predictor.predict_file(path)           # FileResult, or readers.InputError(path, reason)

Files are read by `data.readers.read_input`, the one input boundary of training folders, predict
and serve (formats by content, the rules for bad values, the size limits, notes and warnings);
this module adds what depends on the model: CT DICOM is windowed with the model's training window
(`training_ct_window`), and a file whose modality differs from the model's training data is
refused (`Predictor.check_modality`). Every 2-D image then goes through the model's own
evaluation preprocessing (`config.preprocess` of its training run) and one jitted function gives
its logits and Grad-CAM map, so a file predicted here gets the same probabilities as the
evaluation path on the same pixels.

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

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from prepnet_jax.data import readers, transforms
from prepnet_jax.eval import calibration, figures, gradcam, prepnet_autoencoder, trained
from prepnet_jax.eval.metrics import as_class_probs

CALIBRATION_FILE = calibration.CALIBRATION_FILE
CT_DATASETS = ("sars_cov2_ct", "ucsd_covid_ct", "mosmed")
CXR_DATASETS = ("covidx", "deepcovid", "pediatric_cxr")
MODALITY_NAMES = {"ct": "CT", "cxr": "chest X-ray"}


def training_ct_window(preprocess, run: str) -> tuple[tuple[float, float], str]:
  """The HU window of a model's CT inputs, with where it came from: `preprocess.ct_window` of its
  training config, else the lung window that the project's HU loaders (MosMed, CT phantoms) apply
  to the data such a run trains on."""
  window = preprocess.get("ct_window")
  if window:
    return (float(window[0]), float(window[1])), f"preprocess.ct_window of the training config of {run}"
  return readers.LUNG_WINDOW, (f"the project's CT lung window: the training config of {run} has "
                               "preprocess.ct_window = () (its CT data came windowed by its loader)")


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
  notes: list[str]     # every reading step taken
  warnings: list[str]  # the reading steps that changed values or need attention (also in notes)

  @property
  def probabilities(self) -> np.ndarray:
    """The file's probabilities: the image's, or the mean over a volume's slices."""
    return np.mean([p.probabilities for p in self.predictions], axis=0)


class Predictor:
  """A trained model (and optional PrepNet AE) loaded once, predicting one image at a time."""

  def __init__(self, model_workdir: str, options: readers.ReadOptions = readers.ReadOptions(),
               temperature: float = 0.0, gradcam_layer: str = "", cam_alpha: float = 0.4,
               autoencoder: prepnet_autoencoder.AutoEncoder | None = None,
               selection: trained.Selection = trained.Selection()):
    self.model_workdir = model_workdir
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
    # CT pixels are windowed as the first network that sees them was trained: the AE in front if any.
    window, source = (training_ct_window(autoencoder.preprocess_config, autoencoder.description) if autoencoder
                      else training_ct_window(served.preprocess, model_workdir))
    self.options = dataclasses.replace(options, ct_window=window, ct_window_source=source)
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
    return cls(config.model_workdir, readers.ReadOptions.from_config(config), float(config.temperature),
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

  def check_modality(self, loaded: readers.LoadedFile) -> None:
    declared = {image.modality for image in loaded.images} - {None}
    if self.modality is None or not declared or declared == {self.modality}:
      return
    given = MODALITY_NAMES[declared.pop()]
    volumes = {"nifti": "a CT volume (NIfTI)", "dicom_series": "a CT volume (DICOM series)"}
    what = volumes.get(loaded.format, f"a {given} {loaded.format.upper()} image")
    raise readers.InputError(loaded.path, f"{what}, but the model in {self.model_workdir} was trained on "
                                          f"{MODALITY_NAMES[self.modality]} images (data.train="
                                          f"{self.config.data.train!r}); give it a {MODALITY_NAMES[self.modality]} "
                                          f"image or use a {given} model")

  def predict_file(self, source: str | readers.DicomSeries) -> FileResult:
    """One file, or one DICOM series read as a volume."""
    loaded = readers.read_input(source, self.options)
    self.check_modality(loaded)
    predictions = [self.predict_image(image.image, image.label) for image in loaded.images]
    modality = next((i.modality for i in loaded.images if i.modality), None)
    return FileResult(loaded.path, loaded.format, modality, predictions, loaded.notes, loaded.warnings)

  def warm_up(self) -> None:
    """Compiles the forward + Grad-CAM (and AE) once, before the first real input."""
    self.predict_image(np.zeros((self.image_size, self.image_size, self.channels), np.uint8))


def probabilities_by_class(class_names: Sequence[str], probabilities: np.ndarray) -> dict[str, float]:
  return {name: float(p) for name, p in zip(class_names, probabilities)}
