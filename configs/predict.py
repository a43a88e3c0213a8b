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
content; a folder's single-slice CT DICOM files of one series are one volume, sorted by slice
position), or 'phantom:ct' / 'phantom:cxr', which first exports a few phantom images of unseen
patients in every format to <workdir>/phantom_inputs and predicts those. `inputs_file`: a text
file with one such path per line (for names with commas), used together with `inputs`:
  --config.inputs_file=scans.txt
Writes, under <workdir>/predictions: one JSON per input (calibrated probabilities, reading notes
and warnings), a Grad-CAM overlay PNG per image (per slice for volumes), with a PrepNet AE also
the normalised image beside the original, predictions.csv over all inputs and summary.json
(counts, every input and folder entry as ok / failed / skipped with its reason). A bad file never
stops the job; the reading rules and limits are in prepnet_jax/data/readers. A few seconds
on CPU after the model is loaded.
"""

import ml_collections

from prepnet_jax.data import readers


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
  c.inputs_file = ""            # a text file: one input path per line (names may hold commas)
  c.temperature = 0.0           # 0: the fitted T of <model dir>/reports/calibration.json if present, else 1
  c.gradcam_layer = ""          # '' = the model's last conv stage; e.g. 'conv4' (ResNet), 'block4' (VGG)
  c.cam_alpha = 0.4             # Grad-CAM overlay opacity
  # Reading limits (data/readers), checked from the header before decoding; the defaults are the
  # ones training folders are read with (readers.MIN_SIDE, MAX_SIDE, MAX_PIXELS, MAX_VOXELS).
  c.min_side = readers.MIN_SIDE   # 32: images with a side outside [min_side, max_side] px are refused
  c.max_side = readers.MAX_SIDE   # 8192
  c.max_pixels = readers.MAX_PIXELS  # 25·10⁶ decoded pixels per image or DICOM frame
  c.max_voxels = readers.MAX_VOXELS  # 512³ values per volume (NIfTI, DICOM series) or multi-frame DICOM
  # DICOM grey levels (prepnet_jax/data/readers/dicom.py): () = CT (also DICOM series) windowed as the
  # model was trained (its preprocess.ct_window, else the lung window), X-rays by the header's VOI
  # LUT / window (pydicom); (level, width) = this linear window for every DICOM instead.
  c.dicom_window = ()
  # NIfTI CT volumes: the MosMed loader's slices (data/ct_datasets.MosmedConfig defaults); window
  # () = as CT DICOM, the model's training window (else the lung window); (level, width) = this one.
  c.nifti = ml_collections.ConfigDict(dict(
      positions=readers.THESIS_POSITIONS, window=(), rotate_k=1, crop=(25, 45),
      flip_ud=False))
  # Optional: a PrepNet run's AE (row prepnet_row, seed model_seed) in front of a classifier that
  # was trained on AE-normalised CT images ('' = none). PrepNet's own AE + E_cov pipeline is the
  # PrepNet workdir as model_workdir instead.
  c.prepnet_workdir = ""
  # The 'phantom:<modality>' inputs: a different phantom seed than training (0) = unseen patients.
  c.data = ml_collections.ConfigDict(dict(phantom_seed=1))
  return c
