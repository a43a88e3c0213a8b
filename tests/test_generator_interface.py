"""Generators are interchangeable downstream: a StyleGAN2 run (conditional or one per class) works
in the sampling job, the generative metrics and the augmentation experiment wherever a GAN run
does, through `eval.generators`."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from configs import gan as gan_config, sample as sample_config
from helpers import load_config, set_fields
from prepnet_jax.data import diffaugment
from prepnet_jax.eval import generators
from prepnet_jax.models import stylegan2_hparams as hparams_lib
from prepnet_jax.runtime import checkpointing, rundir
from prepnet_jax.tasks import gen_metrics as gen_metrics_job
from prepnet_jax.tasks.augment_experiment import arms, generators as aug_generators, job as augment_job
from prepnet_jax.tasks.generative import gan as gan_train, sample
from prepnet_jax.tasks.stylegan2 import steps as sg2_steps, train as sg2_train

# The augmentation experiment's tiny phantom, so a per-class generator's patients are that
# experiment's training patients.
TINY_CXR = {"num_patients": 60, "image_size": 32}
SIZE = 16


def tiny_stylegan2(**overrides):
  """One minibatch of a 16-px StyleGAN2 with 8 maps (no lazy regularisation or DiffAugment: less to compile)."""
  c = load_config("stylegan2")
  c.preprocess.image_size = SIZE
  c.data.phantom_overrides = dict(TINY_CXR)
  c.model.z_dim, c.model.w_dim, c.model.mapping_layers = 8, 8, 1
  c.model.channel_base, c.model.channel_max = 64, 8
  c.batch_size = 4
  c.total_kimg = c.snapshot_kimg = c.checkpoint_kimg = 0.004
  c.pl_weight, c.r1_gamma = 0.0, 0.0
  c.log_every_steps = 1
  c.eval.num_generated, c.eval.grid_size, c.eval.leak_check = 0, 4, False
  c.diffaugment.policy = ""
  return set_fields(c, overrides)


def initial_checkpoint(config, workdir: str) -> None:
  """A run's step-0 checkpoint as the training loop writes it (state, `hparams` metadata,
  config.json), without compiling the training steps."""
  hp = hparams_lib.resolve_hparams(config)
  state = sg2_steps.create_state(sg2_steps.make_setup(hp, diffaugment.DiffAugment()), int(config.seed))
  rundir.write_config(config, workdir)
  checkpointing.Checkpointer(os.path.join(workdir, "checkpoints")).save(0, state, {"hparams": dataclasses.asdict(hp)})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """A per-class StyleGAN2 run (COVID only) after one training step and a conditional one at
  initialisation (training both would compile the steps twice)."""
  root = tmp_path_factory.mktemp("generators")
  out = {"conditional": str(root / "sg2_cond"), "covid": str(root / "sg2_covid")}
  sg2_train.train_and_evaluate(tiny_stylegan2(**{"data.class_filter": [1]}), out["covid"])
  initial_checkpoint(tiny_stylegan2(**{"data.conditional": True}), out["conditional"])
  return out


def test_the_interface_describes_each_run(runs):
  cond, covid = generators.load_generator(runs["conditional"]), generators.load_generator(runs["covid"])
  assert (cond.task, cond.kind, cond.num_classes, cond.classes, cond.step) == ("stylegan2", "stylegan2", 2, (0, 1), 0)
  assert (covid.num_classes, covid.classes, covid.class_filter, covid.step) == (0, (1,), (1,), 1)
  assert (covid.image_size, covid.channels, covid.training_data) == (SIZE, 1, "phantom_cxr/covidx:train")
  images = covid.generate(4, seed=0, label=1)
  assert images.dtype == np.uint8 and images.shape == (4, SIZE, SIZE, 1)
  with pytest.raises(ValueError, match="unconditional model trained on class_filter=\\[1\\]"):
    covid.generate(2, seed=0, label=0)
  with pytest.raises(ValueError, match="not a class of this model"):
    cond.generate(2, seed=0, label=2)
  with pytest.raises(ValueError, match="noise_mode='bogus'"):
    cond.generate(2, seed=0, noise_mode="bogus")


@pytest.mark.parametrize("run", ["conditional", "covid"])
def test_sampling_job_writes_pngs_per_class_a_grid_and_the_training_reals(runs, run, tmp_path):
  job = sample_config.get_config()
  job.source_workdir, job.seeds, job.truncation_psi = runs[run], "0-2", 0.7
  manifest = sample.run(job, str(tmp_path))
  out = tmp_path / "samples"
  classes = [0, 1] if run == "conditional" else [1]
  assert manifest["images_per_class"] == {str(k): 3 for k in classes} and manifest["seeds"] == [0, 1, 2]
  for k in classes:
    files = sorted(os.listdir(out / f"class_{k}"))
    assert files == [f"stylegan2_step{manifest['step']}_seed{s:05d}.png" for s in (0, 1, 2)]
    with Image.open(out / f"class_{k}" / files[0]) as img:
      assert img.mode == "L" and img.size == (SIZE, SIZE)
  for name in ("grid.png", "reals.png"):
    with Image.open(out / name) as img:
      assert img.size == Image.open(out / "grid.png").size  # as many reals as fakes, same layout
  saved = json.loads((out / "samples.json").read_text())
  assert saved["truncation_psi"] == 0.7 and saved["noise_mode"] == "const" and saved["kind"] == "stylegan2"
  assert saved["reals"] == {"file": "reals.png", "num_images": 3 * len(classes), "data": "phantom_cxr/covidx:train",
                            "class_filter": [] if run == "conditional" else [1]}


def test_same_seeds_same_images_and_psi_zero_puts_every_seed_at_w_avg(runs):
  generator = generators.load_generator(runs["covid"])  # trained a step: w_avg has moved off zero
  images = generator.generate_from_seeds([0, 1, 2, 3])
  np.testing.assert_array_equal(images, generator.generate_from_seeds([0, 1, 2, 3]))
  np.testing.assert_array_equal(images[2], generator.generate_from_seeds([2, 9, 8, 7])[0])  # seed 2's own image
  assert not np.array_equal(images[0], images[1])
  np.testing.assert_array_equal(generator.generate(4, seed=5), generator.generate(4, seed=5))
  truncated = generator.generate_from_seeds([0, 1, 2, 3], truncation_psi=0.0).astype(int)
  assert np.abs(truncated - truncated[0]).max() <= 1  # every z maps to w_avg; const noise
  noisy = generator.generate(4, seed=5, noise_mode="random")
  np.testing.assert_array_equal(noisy, generator.generate(4, seed=5, noise_mode="random"))


def test_models_without_a_w_space_refuse_truncation(tmp_path):
  c = gan_config.get_config()
  c.data.phantom_backend, c.data.phantom_overrides = "memory", {"num_patients": 12, "image_size": 32}
  c.preprocess.image_size, c.model.latent_dim = SIZE, 8
  c.model.mlp_g_hidden, c.model.mlp_d_hidden = (16,), (16,)
  c.batch_size, c.num_steps, c.num_grid_images, c.fd.enabled = 4, 0, 4, False  # the step-0 checkpoint
  gan_train.train_and_evaluate(c, str(tmp_path / "gan"))
  generator = generators.load_generator(str(tmp_path / "gan"))
  assert (generator.task, generator.kind, generator.classes, generator.step) == ("gan", "gan", (1,), 0)
  assert generator.generate(2, seed=0, label=1).shape == (2, SIZE, SIZE, 1)
  with pytest.raises(ValueError, match="StyleGAN2 only"):
    generator.generate(2, seed=0, truncation_psi=0.5)
  job = sample_config.get_config()
  job.source_workdir, job.truncation_psi = str(tmp_path / "gan"), 0.5
  with pytest.raises(ValueError, match="StyleGAN2 only"):
    sample.run(job, str(tmp_path / "samples"))


def test_gen_metrics_samples_a_stylegan2_workdir(runs, tmp_path):
  c = load_config("gen_metrics")
  c.data.phantom_backend, c.data.phantom_overrides = "memory", dict(TINY_CXR)
  c.generated.workdir, c.generated.num_images = runs["covid"], 12
  c.real.labels, c.real.max_images = (1,), 20
  c.extractors, c.metrics.names, c.metrics.kid_subsets = "randinit", "fd,kid", 5
  c.randinit.image_size, c.randinit.widths = SIZE, (8, 16, 32)
  result = gen_metrics_job.run(c, str(tmp_path))
  assert [r["metric"] for r in result["records"]] == ["fd_randinit", "kid_randinit"]
  assert all(r["n_gen"] == 12 for r in result["records"])
  assert result["generated"]["kind"] == "stylegan2" and result["generated"]["noise_mode"] == "random"
  assert "matched_16x16x1" in result["real"]["reference"]


def augment_config(**overrides):
  c = load_config("augment_experiment")
  c.data.phantom_overrides = dict(TINY_CXR)
  c.seeds, c.num_epochs, c.batch_size, c.log_every_steps, c.gradcam.num_images = (0,), 1, 16, 1, 2
  c.arms, c.preprocess.image_size = ("synthetic",), SIZE
  return set_fields(c, overrides)


def test_augmentation_synthetic_arm_with_stylegan2_generators(runs, tmp_path):
  config = augment_config(**{"generator.workdirs": ("", runs["covid"])})
  results = augment_job.train_and_evaluate(config, str(tmp_path))
  assert results["arms"]["synthetic"]["train_per_class"] == [74, 74]
  [record] = results["generator_data"]["generators"]
  assert (record["task"], record["kind"], record["label"], record["class_filter"]) == ("stylegan2", "stylegan2", 1, [1])
  assert record["data"] == "phantom_cxr/covidx:train" and record["num_images"] == 14
  assert record["overlap_patients"] == {"val": 0, "internal": 0, "external": 0}
  conditional = arms.synthetic_images([arms.Generator(runs["conditional"], None, False)], np.asarray([2, 3]), -1, 0)
  assert conditional.column("label").tolist() == [0, 0, 1, 1, 1]
  assert conditional[0]["image"].shape == (SIZE, SIZE, 1)
  wrong = augment_config(**{"generator.workdirs": (runs["covid"], "")})
  with pytest.raises(ValueError, match="makes classes \\[1\\], not class 0"):
    aug_generators.generator_data_check(wrong, aug_generators.resolve_generators(wrong, "", np.asarray([2, 0])), {})


def test_augmentation_trains_per_class_stylegan2_generators_itself(runs, tmp_path):
  config = augment_config()
  with config.unlocked():
    config.generator.train = tiny_stylegan2()  # the fixture's architecture: its compiled steps are reused
  [generator] = aug_generators.resolve_generators(config, str(tmp_path), np.asarray([0, 5]))
  assert generator.label == 1 and generator.trained_here
  trained = rundir.read_config(generator.workdir)
  assert trained.task == "stylegan2" and trained.data.class_filter == [1]
  loaded = generators.load_generator(generator.workdir)
  assert loaded.classes == (1,) and loaded.generate(2, seed=0, label=1).shape == (2, SIZE, SIZE, 1)
