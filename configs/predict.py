"""Predict COVID probabilities + Grad-CAM for image files with a trained classifier (task 'predict').

  python main.py --config=configs/classifier.py --workdir=runs/cls
  python main.py --config=configs/predict.py --workdir=runs/predict \
      --config.model_workdir=runs/cls --config.inputs=phantom:ct

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
  c.model_workdir = ""          # workdir of a classifier run (config.json + best/ checkpoint)
  c.inputs = ""                 # 'a.png,scans/,b.nii.gz' or 'phantom:ct' / 'phantom:cxr'
  c.temperature = 0.0           # 0: <model_workdir>/reports/calibration.json if present, else 1
  c.gradcam_layer = ""          # '' = the model's last conv stage; e.g. 'conv4' (ResNet), 'block4' (VGG)
  c.cam_alpha = 0.4             # Grad-CAM overlay opacity
  c.min_side = 32               # images with a side outside [min_side, max_side] px are refused
  c.max_side = 8192
  c.dicom_window = ()           # () = the header's WindowCenter/Width; (level, width) overrides it
  # NIfTI CT volumes: the MosMed loader's slices (data/ct_datasets.MosmedConfig defaults).
  c.nifti = ml_collections.ConfigDict(dict(
      positions=nifti.THESIS_POSITIONS, window=nifti.LUNG_WINDOW, rotate_k=1, crop=(25, 45),
      flip_ud=False))
  # Optional PrepNet auto-encoder applied to CT inputs first ('' = none).
  c.prepnet_workdir = ""        # workdir of a prepnet run
  c.prepnet_row = "PrepNet"     # row name in that run's config
  c.prepnet_seed = -1           # -1 = the run's first seed
  # The 'phantom:<modality>' inputs: a different phantom seed than training (0) = unseen patients.
  c.data = ml_collections.ConfigDict(dict(phantom_seed=1))
  return c
