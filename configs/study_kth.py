"""Seed 002 (KTH) end to end: COVID-Net and ResNet50, 30 % COVID per batch, weights 1/1/6,
calibration, Grad-CAM and the web page.

  python main.py --config=configs/study_kth.py --workdir=runs/study_kth

The study (reference/cxr_papers.md §002) trains COVID-Net from scratch and an ImageNet ResNet50
with the same recipe (configs/cxr_covidnet.py, configs/cxr_resnet50_kth.py: 3 classes normal /
pneumonia / COVID-19, batches with 30 % COVID, class weights 1/1/6, Adam, reduce-on-plateau ×0.7),
then temperature-scales both (ECE before/after), explains them with Grad-CAM and serves the chosen
model on a local web page. Paper (COVIDx test): COVID-Net accuracy 93.3 % / COVID sensitivity
91.0 %; ResNet50 91.3 % / 74.2 %, PPV 95.8 %.
Stages, each in <workdir>/stages/<name>: `covidnet`, `resnet50` — each over seeds 0, 1, 2 on the
internal test split and the external 'ulm' site, with reliability diagrams and Grad-CAM PNGs in
the stage's reports/. The web page on any of the trained models (a servable workdir):
  python main.py --config=configs/serve.py --workdir=runs/serve \
      --config.model_workdir=<workdir>/stages/resnet50/arms/none/seed_0
Reports: <workdir>/reports/study.md (the table), study.json.

'cpu' (default): the phantom's COVIDx-like site at 64 px, COVID-Net ×0.125 and ResNet50 ×0.25 from
random weights, 15 epochs (the recipes' 'cpu' presets with 15 instead of 8 epochs).
Measured (2 CPU cores, idle): 3 min 18 s, 2.4 GB peak RSS. From random weights at 64 px both
networks call most images COVID (the 30 % COVID batches and the 6× COVID weight together): COVID
sensitivity 1.00 (COVID-Net) and 0.87 (ResNet50), PPV 0.26 / 0.24, internal accuracy 0.31 ± 0.09 /
0.28 ± 0.05, AUC 0.76 / 0.71; T reaches its bound (100) in one seed of each (uniform is the best fit
there) and ECE falls 0.44 → 0.16 / 0.42 → 0.12. The paper's numbers need its data and, for ResNet50,
ImageNet weights. Table: docs/studies_phantom.md.
'paper': --config=configs/study_kth.py:paper — 224 px, full widths, Adam 2e-5, 16 epochs (GPU);
ResNet50's ImageNet weights from a local torchvision file: --config.pretrained_path=
resnet50.safetensors (never downloaded; see prepnet_jax/models/torch_import.py). Real data:
--config.data_train=covidx/v8b --config.manual_dir=<downloads> --config.data_external=<site>.
"""

from configs import common, studies

SUMMARY = """Seed 002 (KTH): COVID-Net vs ImageNet ResNet50 for normal / pneumonia / COVID-19 with balanced
batches (30 % COVID) and class weights 1/1/6, calibrated by temperature scaling. Paper (COVIDx
test): COVID-Net 93.3 % accuracy, COVID sensitivity 91.0 %; ResNet50 91.3 %, sensitivity 74.2 %,
PPV 95.8 %."""

CPU = {"num_epochs": 15, "log_every_steps": 50}


def get_config(preset=None):
  preset = common.parse_preset(preset, studies.PRESETS)
  c = studies.study("kth", "Seed 002 — COVID-Net and ResNet50 with balanced batches, calibration, Grad-CAM",
                    SUMMARY, preset, data_train="phantom_cxr/covidx", data_external="phantom_cxr/ulm")
  studies.add_stage(c, "covidnet", studies.classifier_stage("cxr_covidnet", preset, cpu=CPU), label="COVID-Net")
  studies.add_stage(c, "resnet50", studies.classifier_stage("cxr_resnet50_kth", preset, cpu=CPU), label="ResNet50",
                    imagenet=True)
  c.labels["covidnet/none"] = "COVID-Net"
  c.labels["resnet50/none"] = "ResNet50"
  return c
