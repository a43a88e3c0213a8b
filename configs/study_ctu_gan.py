"""Seed 001 (CTU X-ray GAN thesis) end to end: GAN family → FD/KID/IS → ResNet-18 with and without
the best generator's images; DeepCovid's frozen-backbone ResNet-18.

  python main.py --config=configs/study_ctu_gan.py --workdir=runs/study_ctu_gan

The thesis (reference/xray_gan_thesis.md) trains GAN, WGAN, WGAN-GP, CGAN, DCGAN and a VAE on
COVID-positive chest X-rays, compares them by FID and IS, keeps the best one and adds its images
to the training data of DeepCovid's ResNet-18 ("312 real + 312 generated"). Stages, each in
<workdir>/stages/<name>:
  gan, wgan, wgan_gp, cgan, dcgan, vae   the generators (COVID-positive training images; CGAN
                                          learns both classes and is sampled as class COVID)
  cls            a small COVID classifier on the same data: the feature extractor of
                 `is_classifier` / `fd_classifier` (IS needs class probabilities; on a 2-class
                 classifier, images of one class score IS ≈ 1 by construction; the standard
                 Inception weights give `fid`/`is` when --config.stages.metrics_<g>.inception.
                 weights_path is set)
  metrics_<g>    generative metrics of each generator against the real COVID-positive training
                 images: fd/kid/precision/recall on a fixed random-init CNN (`*_randinit`) and
                 fd/is on the classifier's features (`*_classifier`), each with its noise floor
  resnet18       ResNet-18 fine-tuned on real images, and on real + generated COVID images of the
                 generator with the lowest fd_randinit ('@best_generator'), seeds 0, 1, 2
  deepcovid      the same two arms with DeepCovid's recipe: frozen backbone, head-only SGD
                 (configs/cxr_deepcovid.py); without an ImageNet file the frozen backbone is random
                 and the head alone cannot learn much — the table shows it
Reports: <workdir>/reports/study.md (the table), study.json.

'cpu' (default): 32 px generators × 500 steps, 300 generated images per metric, classifiers at
32 px (ResNet-18 ×0.25), COVID filled up to the negative count with generated images.
Measured (2 CPU cores, idle): 4 min 47 s, 2.3 GB peak RSS. DCGAN had the lowest fd_randinit
(1.19, noise floor 1.42; GAN 3.81, VAE 1.72, WGAN-GP 4.27, CGAN 7.32, WGAN 17.3) and was selected;
ResNet-18 fine-tuned: internal accuracy 0.788 ± 0.080 real only → 0.871 ± 0.080 with 130 DCGAN
COVID images (AUC 0.877 → 0.909); DeepCovid's frozen random backbone: 0.750 → 0.705 (AUC 0.64 →
0.72); every row is at chance on the external site (accuracy 0.33–0.47). Three seeds: the
differences are within about one seed spread. Table: docs/studies_phantom.md.
'paper': --config=configs/study_ctu_gan.py:paper — the thesis protocol of each generator (64 px,
10 000 iterations; configs/<model>.py:thesis) and DeepCovid at 224 px ×1, 50 epochs, 312
generated images (GPU); ImageNet ResNet-18: --config.pretrained_path=resnet18.safetensors (a
torchvision file, never downloaded); real data: --config.data_train=covidx/v8b
--config.manual_dir=<downloads> --config.data_external=<site>.
"""

import importlib

from configs import classifier, common, gen_metrics, studies

GENERATORS = ("gan", "wgan", "wgan_gp", "cgan", "dcgan", "vae")
SUMMARY = """Seed 001 (CTU X-ray GAN thesis): five GAN variants and a VAE trained on COVID-positive chest
X-rays, compared by Fréchet distance, KID, precision/recall and IS; the best generator's images
are added to a ResNet-18 COVID classifier. Thesis: the vanilla GAN was best (FID); DeepCovid
ResNet-18 reached specificity 0.998 but COVID sensitivity 0.51, and 93 % accuracy with no false
negatives on 312 real + 312 generated images."""

CPU_CLASSIFIER = {"preprocess.image_size": 32, "num_epochs": 8, "log_every_steps": 50}


def generator(name: str, paper: bool):
  g = importlib.import_module(f"configs.{name}").get_config("thesis" if paper else None)
  if not paper:
    g.preprocess.image_size = 32
    g.num_steps = 500
    g.save_every = g.sample_every = 500
    g.log_every_steps = 50
    g.fd.num_fake = 200
  return g


def metrics(name: str, paper: bool):
  m = gen_metrics.get_config()
  m.generated.workdir = f"@{name}"
  m.generated.num_images = 1000 if paper else 300
  m.generated.label = 1 if name == "cgan" else -1   # the COVID class of the conditional model
  m.real.labels = (1,)
  m.extractors = "inception,randinit,classifier:@cls"
  m.metrics.kid_subset_size = 1000 if paper else 100
  if not paper:
    m.randinit.image_size = 64
  return m


def get_config(preset=None):
  preset = common.parse_preset(preset, studies.PRESETS)
  paper = preset == "paper"
  c = studies.study("ctu_gan", "Seed 001 — GAN family for COVID chest X-rays, metrics, ResNet-18 augmentation",
                    SUMMARY, preset, data_train="phantom_cxr/covidx", data_external="phantom_cxr/ulm")
  for name in GENERATORS:
    studies.add_stage(c, name, generator(name, paper), label=name)
  cls = classifier.get_config()
  cls.data.eval = ()
  cls.data.class_names = ("non-COVID", "COVID")
  cls.data.phantom_backend = "memory"
  cls.preprocess.image_size = 64 if paper else 32
  cls.preprocess.channels = 1
  cls.num_epochs = 10 if paper else 6
  studies.add_stage(c, "cls", cls)
  for name in GENERATORS:
    studies.add_stage(c, f"metrics_{name}", metrics(name, paper), label=name)
  c.select.metric = "fd_randinit"
  c.select.stages = tuple(f"metrics_{name}" for name in GENERATORS)

  per_class = (0, 312) if paper else (0, -1)
  fine_tuned = studies.classifier_stage("cxr_deepcovid", preset, ("none", "synthetic"), cpu=CPU_CLASSIFIER)
  fine_tuned.model.freeze_backbone = False
  deepcovid = studies.classifier_stage("cxr_deepcovid", preset, ("none", "synthetic"), cpu=CPU_CLASSIFIER)
  for name, stage in (("resnet18", fine_tuned), ("deepcovid", deepcovid)):
    stage.generator.workdirs = ("", "@best_generator")
    stage.extra.per_class = per_class
    studies.add_stage(c, name, stage, imagenet=True)
  c.labels["resnet18/none"] = "ResNet-18 fine-tuned (real only)"
  c.labels["resnet18/synthetic"] = "ResNet-18 fine-tuned + best generator's images"
  c.labels["deepcovid/none"] = "DeepCovid frozen ResNet-18 (real only)"
  c.labels["deepcovid/synthetic"] = "DeepCovid frozen ResNet-18 + best generator's images"
  return c
