"""Config validation before any work: bad learning rates, epochs, batch sizes, fractions, sizes,
paths and vocabulary fields are refused with one line naming the field; every shipped config passes."""

from __future__ import annotations

import glob
import importlib
import inspect
import os
import subprocess
import sys

import pytest

from helpers import REPO, load_config
from prepnet_jax.runtime import config_checks
from prepnet_jax.tasks.config_vocabularies import VOCABULARIES


def _shipped_configs() -> list[tuple[str, str | None]]:
  """(config name, argument) of every configs/<x>.py get_config, at each preset it accepts (some
  take their preset list from the config they extend, so each known preset name is tried)."""
  modules = {os.path.basename(p)[:-3]: importlib.import_module(f"configs.{os.path.basename(p)[:-3]}")
             for p in sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))}
  preset_names = {p for m in modules.values() for p in getattr(m, "PRESETS", ())}
  found = []
  for name, module in modules.items():
    if not hasattr(module, "get_config"):
      continue  # common.py, studies.py: shared sections
    if not inspect.signature(module.get_config).parameters:
      found.append((name, None))
    elif name == "augment_experiment":  # a recipe and/or the generator trained per class
      found += [(name, spec) for spec in (None, "generator=stylegan2", "cxr_resnet34", "cxr_covidnet,generator=vae")]
    else:
      for preset in sorted(preset_names):
        try:
          module.get_config(preset)
        except ValueError as e:
          assert "unknown preset" in str(e)
          continue
        found.append((name, preset))
  return found


SHIPPED = _shipped_configs()


def _problems(config) -> list[str]:
  return config_checks.problems(config, VOCABULARIES)


def test_every_shipped_config_passes():
  assert len({name for name, _ in SHIPPED}) >= 35
  bad = {f"{name}:{arg}": found for name, arg in SHIPPED if (found := _problems(load_config(name, *([arg] if arg else []))))}
  assert not bad, bad


def test_every_vocabulary_names_a_real_registry_and_a_real_field():
  leaves = [(task, local) for name, arg in SHIPPED
            for task, local, *_ in config_checks.fields(load_config(name, *([arg] if arg else [])))]
  for pattern, names in {**config_checks.OWN_VOCABULARIES, **VOCABULARIES}.items():
    allowed = tuple(names())
    assert allowed and all(isinstance(n, str) for n in allowed), pattern
    assert any(config_checks.vocabulary_applies(pattern, task, local) for task, local in leaves), pattern


@pytest.mark.parametrize("field, value, message", [
    ("optim.learning_rate", -0.1, "config.optim.learning_rate = -0.1: must be > 0"),
    ("optim.learning_rate", float("nan"), "config.optim.learning_rate = nan: must be > 0"),
    ("num_epochs", 0, "config.num_epochs = 0: must be an integer >= 1"),
    ("batch_size", 0, "config.batch_size = 0: must be an integer >= 1"),
    ("preprocess.channels", 2, "config.preprocess.channels = 2: must be 1 or 3"),
    ("log_every_steps", -5, "config.log_every_steps = -5: must be an integer >= 1"),
    ("preprocess.image_size", 0, "config.preprocess.image_size = 0: must be an integer >= 1"),
    ("optim.momentum", 1.0, "config.optim.momentum = 1.0: must be a finite number in [0, 1)"),
    ("preprocess.augment.brightness", 1.5, "config.preprocess.augment.brightness = 1.5: must be a finite number in [0, 1]"),
    ("data.balance", (1, 1.5), "config.data.balance = (1, 1.5): must be () or (class label >= 0, fraction in (0, 1))"),
    ("checkpoint_every_epochs", 0, "config.checkpoint_every_epochs = 0: must be an integer >= 1"),
    ("optim.schedule", "cosin", "config.optim.schedule = 'cosin': must be one of constant, step, exponential, cosine"),
    ("model.name", "resnet19", "config.model.name = 'resnet19': must be one of vgg11,"),
    ("preprocess.resize_method", "cubic", "config.preprocess.resize_method = 'cubic': must be one of nearest,"),
    ("model.pretrained_path", "/no/such/weights.h5", "config.model.pretrained_path = '/no/such/weights.h5': no such file"),
    ("model.pretrained_sha256", "abc", "config.model.pretrained_sha256 = 'abc': must be '' or 64 hexadecimal digits"),
])
def test_a_bad_classifier_field_is_named_with_what_is_allowed(field, value, message):
  config = load_config("classifier")
  config.update_from_flattened_dict({field: value})
  found = _problems(config)
  assert len(found) == 1 and found[0].startswith(message), found
  with pytest.raises(config_checks.ConfigError, match=r"^config\."):
    config_checks.validate(config, VOCABULARIES)


def test_fractions_vocabularies_and_nested_jobs_of_other_tasks():
  gan = load_config("gan")
  gan.data.balance_fraction = 1.5
  gan.model.kind = "gann"
  gan.optim.g.learning_rate = 0.0
  assert _problems(gan) == [
      "config.data.balance_fraction = 1.5: must be a finite number in [0, 1]",
      "config.model.kind = 'gann': must be one of gan, cgan, dcgan, dcgan_upsample, wgan, wgan_gp",
      "config.optim.g.learning_rate = 0.0: must be > 0"]
  study = load_config("study_ctu_gan", "cpu")  # stages are whole jobs: paths name the stage
  study.stages.cls.optim.learning_rate = -1.0
  study.stages.vae.model.kind = "gan"  # a gan kind is no VAE kind: the vocabulary is the task's
  assert _problems(study) == ["config.stages.cls.optim.learning_rate = -1.0: must be > 0",
                              "config.stages.vae.model.kind = 'gan': must be one of vae_fc, vae_conv"]
  prepnet = load_config("prepnet")
  prepnet.schedule = "origina"
  prepnet.num_epochs.cov = 0
  prepnet.checkpoint_every_epochs = 0  # PrepNet's 'phase boundaries only'
  assert _problems(prepnet) == ["config.num_epochs.cov = 0: must be an integer >= 1",
                                "config.schedule = 'origina': must be one of none, ae_only, original, "
                                "pretrained_ae, joint, four_step, end_to_end, diagnostic"]
  stylegan2 = load_config("stylegan2")  # None = filled by the preset later
  assert _problems(stylegan2) == []
  stylegan2.lr = -0.002
  stylegan2.preset = "huge"
  assert _problems(stylegan2) == ["config.lr = -0.002: must be > 0",
                                  "config.preset = 'huge': must be one of small, low_shot, paper256, auto"]


def test_input_paths_must_exist_outputs_and_stage_references_need_not(tmp_path):
  predict = load_config("predict")
  predict.model_workdir = str(tmp_path / "missing")
  assert _problems(predict) == [f"config.model_workdir = {str(tmp_path / 'missing')!r}: no such directory"]
  predict.model_workdir = str(tmp_path)
  assert _problems(predict) == []
  sample = load_config("sample")
  sample.out_dir = str(tmp_path / "not_yet")  # written by the job
  sample.source_workdir = "@resnet50/generators/class_1"  # a study stage's output
  assert _problems(sample) == []


def test_main_refuses_a_negative_learning_rate_before_any_work(tmp_path):
  workdir = tmp_path / "run"
  cmd = [sys.executable, os.path.join(REPO, "main.py"),
         "--config=" + os.path.join(REPO, "tests", "tiny_classifier_config.py"), f"--workdir={workdir}",
         "--config.optim.learning_rate=-0.1"]
  done = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"),
                        capture_output=True, text=True, timeout=300)
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1] == "config.optim.learning_rate = -0.1: must be > 0", done.stderr
  assert "Traceback" not in done.stderr
  assert not workdir.exists()  # nothing was written: no config.json, no report of a bad run
