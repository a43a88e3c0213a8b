"""Studies end to end (task 'study'): every study config is a valid pipeline of the project's jobs,
references between stages resolve, and a tiny study runs generator → metrics → best generator →
augmentation → sampling and prints its table."""

from __future__ import annotations

import glob
import json
import os

import ml_collections
import pytest

from helpers import load_config
from prepnet_jax import tasks
from prepnet_jax.runtime import rundir
from prepnet_jax.tasks.study import job as study_job

STUDIES = ("study_ctu_gan", "study_kth", "study_covid_gan", "study_ulm")
TINY_CXR = {"num_patients": 60, "image_size": 32}


def _references(node, prefix=""):
  """(dotted field, string) of every '@' reference in a stage config."""
  for key, value in node.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _references(value, f"{prefix}{key}.")
    elif isinstance(value, str) and "@" in value:
      yield f"{prefix}{key}", value
    elif isinstance(value, (tuple, list)):
      yield from ((f"{prefix}{key}", v) for v in value if isinstance(v, str) and "@" in v)


@pytest.mark.parametrize("preset", ["cpu", "paper"])
@pytest.mark.parametrize("name", STUDIES)
def test_every_study_is_a_valid_pipeline(name, preset, tmp_path):
  config = load_config(name, preset)
  assert config.task == "study" and sorted(config.stage_order) == sorted(config.stages.keys())
  for index, stage_name in enumerate(config.stage_order):
    stage = config.stages[stage_name]
    assert stage.task in tasks.TASKS, (stage_name, stage.task)
    earlier = set(config.stage_order[:index])
    for field, value in _references(stage):
      if value == study_job.BEST_GENERATOR:
        assert set(config.select.stages) <= earlier and config.select.stages, (stage_name, field)
        assert all(config.stages[s].task == "gen_metrics" for s in config.select.stages)
      else:
        # Resolving with only the earlier stages done must succeed: references point backwards.
        resolved = study_job.resolve_references(
            ml_collections.ConfigDict({"task": "x", "f": value}), config, str(tmp_path), earlier, {})
        assert "@" not in resolved.f and str(tmp_path) in resolved.f, (stage_name, field, value)
    if stage.task == "augment_experiment":
      assert len(stage.seeds) >= 3, "the paper compares methods: mean ± std over >= 3 seeds"


def test_shared_fields_reach_every_stage():
  config = load_config("study_ulm")
  config.data_train = "covidx/v8b"
  config.manual_dir = "/data/downloads"
  config.pretrained_path = "/w/resnet50.safetensors"
  config.seeds = (0, 1, 2, 3, 4)
  stage = config.stages.resnet50.copy_and_resolve_references()
  assert stage.data.train == "covidx/v8b" and stage.data.manual_dir == "/data/downloads"
  assert stage.model.pretrained_path == "/w/resnet50.safetensors" and tuple(stage.seeds) == (0, 1, 2, 3, 4)
  # The generators trained inside the stage follow the classifier's data (generator.data_train '').
  assert stage.generator.data_train == ""
  kth = load_config("study_kth")
  kth.pretrained_path = "/w/resnet50.safetensors"
  assert kth.stages.resnet50.model.pretrained_path == "/w/resnet50.safetensors"
  assert kth.stages.covidnet.model.pretrained_path == ""  # COVID-Net is trained from scratch


def test_references_resolve_and_bad_ones_are_named(tmp_path):
  config = ml_collections.ConfigDict({"stages": {"gen": {"task": "gan"}, "m": {"task": "gen_metrics"},
                                                 "aug": {"task": "x"}},
                                      "stage_order": ("gen", "m", "aug"), "data_external": "",
                                      "select": {"metric": "fd_randinit", "stages": ("m",)}})
  stage = ml_collections.ConfigDict({"task": "x", "a": "@gen", "b": "randinit,classifier:@gen",
                                     "c": ("", "@gen"), "d": "@best_generator", "e": "plain"})
  # '@best_generator' reads the metrics stage's report: the lower fd_randinit wins.
  for name, value in (("m", 3.0),):
    rundir.write_report(study_job.stage_dir(str(tmp_path), name), "gen_metrics", {
        "generated": {"workdir": "/runs/g1"}, "records": [{"metric": "fd_randinit", "value": value}]})
  selection = {}
  out = study_job.resolve_references(stage, config, str(tmp_path), {"gen", "m"}, selection)
  gen_dir = study_job.stage_dir(str(tmp_path), "gen")
  assert out.a == gen_dir and out.b == f"randinit,classifier:{gen_dir}" and out.c == ("", gen_dir)
  assert out.d == "/runs/g1" and out.e == "plain" and selection["best_generator"]["best"] == "/runs/g1"
  with pytest.raises(ValueError, match="no stage named 'nope'"):
    study_job.resolve_references(ml_collections.ConfigDict({"task": "x", "a": "@nope"}), config,
                                 str(tmp_path), {"gen"}, {})
  with pytest.raises(ValueError, match="stage 'aug' has not run yet"):
    study_job.resolve_references(ml_collections.ConfigDict({"task": "x", "a": "@aug"}), config,
                                 str(tmp_path), {"gen"}, {})


def test_best_generator_is_the_lowest_metric(tmp_path):
  config = ml_collections.ConfigDict({"select": {"metric": "fd_randinit", "stages": ("m1", "m2", "m3")}})
  for name, value in (("m1", 12.0), ("m2", 4.5), ("m3", 7.0)):
    rundir.write_report(study_job.stage_dir(str(tmp_path), name), "gen_metrics", {
        "generated": {"workdir": f"/runs/{name}"},
        "records": [{"metric": "kid_randinit", "value": 0.0}, {"metric": "fd_randinit", "value": value}]})
  best, record = study_job.best_generator(config, str(tmp_path))
  assert best == "/runs/m2" and record["scores"] == {"/runs/m1": 12.0, "/runs/m2": 4.5, "/runs/m3": 7.0}
  config.select.metric = "fid"
  with pytest.raises(ValueError, match="reports no 'fid'"):
    study_job.best_generator(config, str(tmp_path))


def tiny_study():
  """A DCGAN and a VAE → their metrics → the better one's images in a small CNN's synthetic arm
  → the sampling job on the DCGAN: the seams of seed 001's study, in seconds."""
  from configs import studies
  c = studies.study("tiny", "Tiny study", "Two generators, one classifier.", "cpu",
                    data_train="phantom_cxr/covidx", data_external="phantom_cxr/ulm")
  c.seeds = (0,)
  for name in ("dcgan", "vae"):
    g = load_config(name)
    g.data.phantom_backend = "memory"
    g.data.phantom_overrides = dict(TINY_CXR)
    g.preprocess.image_size = 32  # the conv VAE's five stride-2 stages need 32
    g.num_steps, g.save_every, g.sample_every, g.batch_size, g.log_every_steps = 2, 2, 2, 8, 1
    g.fd.num_fake = 16
    studies.add_stage(c, name, g)
  for name in ("dcgan", "vae"):
    m = load_config("gen_metrics")
    m.data.phantom_backend = "memory"
    m.data.phantom_overrides = dict(TINY_CXR)
    m.generated.workdir = f"@{name}"
    m.generated.num_images = 24
    m.real.labels = (1,)
    m.extractors = "randinit"
    m.randinit.image_size, m.randinit.widths = 32, (8, 16)
    m.metrics.names, m.metrics.kid_subsets, m.metrics.kid_subset_size = "fd,kid", 5, 10
    studies.add_stage(c, f"metrics_{name}", m, label=name)
  c.select.stages = ("metrics_dcgan", "metrics_vae")
  a = studies.classifier_stage(None, "cpu", ("none", "synthetic"))
  a.data.phantom_overrides = dict(TINY_CXR)
  a.num_epochs, a.batch_size, a.log_every_steps, a.gradcam.num_images = 1, 16, 1, 2
  a.generator.workdirs = ("", "@best_generator")
  studies.add_stage(c, "classifier", a)
  s = load_config("sample")
  s.source_workdir = "@dcgan"
  s.num_images, s.num_reals = 6, 4
  studies.add_stage(c, "samples", s)
  c.labels["classifier/none"] = "small CNN (real only)"
  return c


def test_a_tiny_study_runs_every_stage_and_prints_its_table(tmp_path, capsys):
  config, workdir = tiny_study(), str(tmp_path / "study")
  results = study_job.train_and_evaluate(config, workdir)
  printed = capsys.readouterr().out
  table = open(os.path.join(workdir, "reports", "study.md")).read()
  assert table in printed
  # Generators: both measured, the lower fd_randinit selected and used by the synthetic arm.
  scores = results["selection"]["best_generator"]["scores"]
  best = min(scores, key=scores.get)
  assert results["selection"]["best_generator"]["best"] == best
  assert best in (study_job.stage_dir(workdir, "dcgan"), study_job.stage_dir(workdir, "vae"))
  arm_config = rundir.read_config(os.path.join(workdir, "stages", "classifier"), "augment")
  assert tuple(arm_config.generator.workdirs) == ("", best)
  with open(os.path.join(workdir, "stages", "classifier", "reports", "augment_results.json")) as f:
    used = json.load(f)["generator_data"]["generators"]
  assert [g["workdir"] for g in used] == [best]
  assert "| dcgan |" in table and "| vae |" in table and "**(selected)**" in table
  assert "| small CNN (real only) |" in table and "| classifier: synthetic |" in table
  assert len([r for r in results["classifiers"]]) == 2
  # The sampling stage wrote its PNGs, grid and reals from the DCGAN stage.
  samples = os.path.join(workdir, "stages", "samples", "samples")
  assert len(glob.glob(os.path.join(samples, "**", "*_step2_*.png"), recursive=True)) == 6
  assert os.path.exists(os.path.join(samples, "grid.png")) and os.path.exists(os.path.join(samples, "reals.png"))
  # A rerun finds every stage finished and rebuilds the same table without training.
  again = study_job.train_and_evaluate(config, workdir)
  assert "finished earlier" in capsys.readouterr().out
  assert again["classifiers"] == results["classifiers"] and again["generators"] == results["generators"]
