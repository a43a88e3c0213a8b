"""Predict COVID probabilities + Grad-CAM for image files with a trained model (task 'predict').

  python main.py --config=configs/classifier.py --workdir=runs/cls
  python main.py --config=configs/predict.py --workdir=runs/predict \
      --config.model_workdir=runs/cls --config.inputs=phantom:ct

`model_workdir` is any workdir of the classifier-producing jobs (`eval.trained.load_trained_model`):
a classifier or cxr_recipe run (two-phase recipes: the top-level workdir, served from its
finetune/ phase); an augment_experiment run with `arm` (and `model_seed`), or one of its
`arms/<arm>/seed_<s>` directories; a prepnet run, served as one CT pipeline (the row's AE, then
the E_cov trained on its outputs) chosen with `prepnet_row`, `model_seed` and `train_site`, e.g.
  --config.model_workdir=runs/prepnet --config.prepnet_row=PrepNet --config.train_site=sars
Probabilities use the temperature the training job fitted on the model's validation split
(<model dir>/reports/calibration.json; the summary names the file), unless `temperature` > 0.

`inputs`: comma-separated files and folders (PNG/JPEG, DICOM, NIfTI; the type is read from the
content), or 'phantom:ct' / 'phantom:cxr', which first exports a few phantom images of unseen
patients in every format to <workdir>/phantom_inputs and predicts those. Writes, under
<workdir>/predictions: one JSON per input (calibrated probabilities), a Grad-CAM overlay PNG per
image (per slice for volumes), with a PrepNet AE also the normalised image beside the original,
predictions.csv over all inputs and summary.json (n ok / n failed with reasons). A few seconds
on CPU after the model is loaded.
"""

import ml_collections

from prepnet_jax.data import nifti


def get_config():
  c = ml_collections.ConfigDict()
  c.task = "predict"
  c.seed = 0
  c.model_workdir = ""          # a classifier / cxr_recipe / augment_experiment / prepnet workdir
  # Which model of a workdir that holds several (augment_experiment arms, prepnet rows):
  c.arm = ""                    # augment_experiment: '' = its only trained arm
  c.model_seed = -1             # augment_experiment / prepnet: -1 = the run's first seed
  c.prepnet_row = ""            # prepnet: '' = the row 'PrepNet', else its first row with an AE
  c.train_site = ""             # prepnet: E_cov's COVID training set ('sars', 'sars+ucsd'); '' = the first
  c.inputs = ""                 # 'a.png,scans/,b.nii.gz' or 'phantom:ct' / 'phantom:cxr'
  c.temperature = 0.0           # 0: the fitted T of <model dir>/reports/calibration.json if present, else 1
  c.gradcam_layer = ""          # '' = the model's last conv stage; e.g. 'conv4' (ResNet), 'block4' (VGG)
  c.cam_alpha = 0.4             # Grad-CAM overlay opacity
  c.min_side = 32               # images with a side outside [min_side, max_side] px are refused
  c.max_side = 8192
  c.dicom_window = ()           # () = the header's WindowCenter/Width; (level, width) overrides it
  # NIfTI CT volumes: the MosMed loader's slices (data/ct_datasets.MosmedConfig defaults).
  c.nifti = ml_collections.ConfigDict(dict(
      positions=nifti.THESIS_POSITIONS, window=nifti.LUNG_WINDOW, rotate_k=1, crop=(25, 45),
      flip_ud=False))
  # Optional: a PrepNet run's AE (row prepnet_row, seed model_seed) in front of a classifier that
  # was trained on AE-normalised CT images ('' = none). PrepNet's own AE + E_cov pipeline is the
  # PrepNet workdir as model_workdir instead.
  c.prepnet_workdir = ""
  # The 'phantom:<modality>' inputs: a different phantom seed than training (0) = unseen patients.
  c.data = ml_collections.ConfigDict(dict(phantom_seed=1))
  return c
