"""Seed 003 (COVID-GAN) end to end: VAE / DCGAN / VAE-GAN images → ResNet34 with each.

  python main.py --config=configs/study_covid_gan.py --workdir=runs/study_covid_gan

The study (reference/cxr_papers.md §003) trains ResNet34 (SGD, ExponentialLR 0.9, early
stopping, class weights; configs/cxr_resnet34.py) on normal / pneumonia / COVID-19 chest X-rays
and compares it with the same network trained on real + VAE, + DCGAN and + VAE-GAN images of the
rare COVID class (paper: validation accuracy 88.89 % real only, 94.26 % with VAE-GAN images).
Stages, each in <workdir>/stages/<name>:
  real    ResNet34 on real images only, and + classical augmentation (the control the paper lacks)
  vae     a VAE trained on the COVID training images, its images added (COVID filled up to the
          largest class), ResNet34 retrained
  dcgan   the same with a DCGAN;  vaegan  the same with a VAE-GAN
Every classifier runs for seeds 0, 1, 2 (mean ± std), is tested on the internal test split and the
external 'ulm' site, calibrated (temperature on validation logits, reliability diagrams) and
explained (Grad-CAM). The generators never see validation or test patients (asserted).
Reports: <workdir>/reports/study.md (the table), study.json; each stage's own reports.

'cpu' (default): the phantom's COVIDx-like site (3 classes, 20 % COVID) at 32 px, ResNet34
×0.25, at most 6 epochs (early stopping after 3), generators 32 px × 300 steps.
Measured (2 CPU cores, idle): 3 min 50 s, 2.4 GB peak RSS. Generators on the 44 COVID training
images: fd_randinit 115.7 → 6.3 (VAE), 3.7 (DCGAN), 43.7 (VAE-GAN). Internal accuracy (3 classes):
real only 0.659 ± 0.023, + classical 0.606 ± 0.066, + VAE 0.652 ± 0.086, + DCGAN 0.598 ± 0.069,
+ VAE-GAN 0.598 ± 0.086; AUC 0.79–0.83 in every row; no row beats real-only beyond the seed spread
(the paper's +5.4 pp from VAE-GAN images is not reproduced here). Every row is at chance on the
external site. Table: docs/studies_phantom.md.
'paper': --config=configs/study_covid_gan.py:paper — 384 px ResNet34 ×1, 10 epochs, generators at
their thesis settings' resolution of 64 px … (see configs/vae.py, dcgan.py, vaegan.py), on a GPU.
Real data: --config.data_train=<builder> --config.manual_dir=<downloads> (e.g. pediatric_cxr, the
study's pneumonia-heavy pediatric data) --config.data_external=<another site>.
"""

from configs import common, studies

SUMMARY = """Seed 003 (COVID-GAN): does adding VAE, DCGAN or VAE-GAN images of the COVID class help a
ResNet34 (3 classes: normal / pneumonia / COVID-19)? Paper: 88.89 % real only, 94.26 % with
VAE-GAN images (validation, 27 images). Same recipe, data and seeds in every row; only the extra
training images differ."""

CPU = {"preprocess.image_size": 32, "model.width_multiplier": 0.25, "num_epochs": 6,
       "log_every_steps": 50}


def get_config(preset=None):
  preset = common.parse_preset(preset, studies.PRESETS)
  c = studies.study("covid_gan", "Seed 003 — VAE / DCGAN / VAE-GAN augmentation of ResNet34", SUMMARY, preset,
                    data_train="phantom_cxr/covidx", data_external="phantom_cxr/ulm")
  studies.add_stage(c, "real", studies.classifier_stage("cxr_resnet34", preset, ("none", "classical"), cpu=CPU))
  for generator in ("vae", "dcgan", "vaegan"):
    studies.add_stage(c, generator, studies.classifier_stage("cxr_resnet34", preset, ("synthetic",), generator,
                                                             cpu=CPU))
  c.labels["real/none"] = "ResNet34 (real only)"
  c.labels["real/classical"] = "ResNet34 + classical augmentation"
  c.labels["vae/synthetic"] = "ResNet34 + VAE images"
  c.labels["dcgan/synthetic"] = "ResNet34 + DCGAN images"
  c.labels["vaegan/synthetic"] = "ResNet34 + VAE-GAN images"
  return c
