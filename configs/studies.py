"""What the four study configs (configs/study_*.py) share: the study skeleton and its stages.

A study (task 'study', prepnet_jax/tasks/study/job.py) runs complete configs of other jobs in
order. The fields every stage shares are field references on the study, so one override reaches
every stage: `--config.data_train=covidx/v8b` (the training dataset of every stage; a TFDS
builder of the real data, read from --config.manual_dir), `--config.data_external=<dataset>`
(the external test site), `--config.seeds='(0,1,2,3,4)'`, `--config.manual_dir=/data/downloads` (root of the
real datasets' downloads, TFDS manual_dir), `--config.pretrained_path=resnet50.safetensors`
(the ImageNet file of the stages whose paper fine-tuned ImageNet weights),
`--config.pretrained_sha256=<hex>` and `--config.half_precision=True` (bfloat16 compute in every
stage that trains networks, `configs/common.top_level`).
"""

from __future__ import annotations

import ml_collections

from configs import augment_experiment

PRESETS = ("cpu", "paper")


def study(name: str, title: str, summary: str, preset: str, data_train: str,
          data_external: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "study"
  c.name = name
  c.title = title
  c.summary = summary
  c.preset = preset
  c.seeds = ml_collections.FieldReference((0, 1, 2))
  c.data_train = ml_collections.FieldReference(data_train)        # every stage's data.train
  c.data_external = ml_collections.FieldReference(data_external)  # the external test site
  c.manual_dir = ml_collections.FieldReference("")
  c.pretrained_path = ml_collections.FieldReference("")
  c.pretrained_sha256 = ml_collections.FieldReference("")
  c.half_precision = ml_collections.FieldReference(False)          # every stage's (configs/common.top_level)
  c.stages = ml_collections.ConfigDict()
  c.stage_order = ()
  c.labels = ml_collections.ConfigDict()   # '<stage>' or '<stage>/<arm>' -> row name in the tables
  c.select = ml_collections.ConfigDict()   # what '@best_generator' means
  c.select.metric = "fd_randinit"
  c.select.stages = ()                     # the gen_metrics stages to choose among
  return c


def add_stage(c: ml_collections.ConfigDict, name: str, stage: ml_collections.ConfigDict, *,
              label: str = "", imagenet: bool = False) -> ml_collections.ConfigDict:
  """Appends `stage` (a complete config of any task) and ties it to the study's shared fields."""
  c.stages[name] = stage
  c.stage_order = tuple(c.stage_order) + (name,)
  if label:
    c.labels[name] = label
  if "data" in stage:
    stage.data.train = c.get_ref("data_train")
    stage.data.manual_dir = c.get_ref("manual_dir")
  if stage.task == "augment_experiment":
    stage.seeds = c.get_ref("seeds")
  if "half_precision" in stage:  # stages that train networks (gen_metrics trains none)
    stage.half_precision = c.get_ref("half_precision")
  if imagenet:
    stage.model.pretrained_path = c.get_ref("pretrained_path")
    stage.model.pretrained_sha256 = c.get_ref("pretrained_sha256")
  return stage


def classifier_stage(recipe: str, preset: str, arms=("none",), generator: str = "dcgan", *,
                     cpu: dict | None = None) -> ml_collections.ConfigDict:
  """An augmentation experiment around a paper's recipe (`arms=('none',)`: the recipe alone,
  over the study's seeds, with calibration and Grad-CAM). `cpu`: dotted overrides that make the
  'cpu' preset fit a 10-minute study on 2 cores."""
  e = augment_experiment.experiment(recipe, preset, generator)
  e.arms = tuple(arms)
  if preset == "cpu" and cpu:
    e.update_from_flattened_dict(dict(cpu))
  return e
