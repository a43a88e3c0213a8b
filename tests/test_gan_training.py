"""Generative training loops on tiny phantom chest X-rays: one step of every model kind, WGAN
clipping, resume and second-wind restarts reproduce an uninterrupted run, non-finite losses
stop with the step, the Fréchet hook, and sampling PNGs from checkpoints."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import cgan, dcgan, gan, sample as sample_config, vae, vaegan, wgan, wgan_gp
from prepnet_jax.runtime import checkpointing, checks, sharding
from prepnet_jax.tasks.generative import (common as gen_common, gan as gan_train, sample, vae as vae_train,
                                          vaegan as vaegan_train)

SIZE = 32
TINY_PHANTOM = {"num_patients": 12, "image_size": SIZE}
CONFIGS = {
    "gan": (gan, {}), "cgan": (cgan, {}), "dcgan": (dcgan, {}), "dcgan_upsample": (dcgan, {"kind": "dcgan_upsample"}),
    "wgan": (wgan, {}), "wgan_gp": (wgan_gp, {}), "vae_fc": (vae, {"kind": "vae_fc"}), "vae_conv": (vae, {}),
    "vaegan": (vaegan, {}),
}
TRAINERS = {"gan": gan_train, "vae": vae_train, "vaegan": vaegan_train}


def tiny_config(kind: str, **overrides):
  module, model_overrides = CONFIGS[kind]
  c = module.get_config()
  c.data.phantom_backend = "memory"
  c.data.phantom_overrides = dict(TINY_PHANTOM)
  c.data.class_filter = []
  c.preprocess.image_size = SIZE
  c.model.update(model_overrides)
  c.model.width_multiplier = 0.0625
  c.model.latent_dim = 8
  if "mlp_g_hidden" in c.model:
    c.model.mlp_g_hidden, c.model.mlp_d_hidden = (16, 16), (16, 16)
  if "conv_filters" in c.model:
    c.model.conv_filters = (4, 8)
  if "n_critic" in c and c.n_critic > 1:
    c.n_critic = 2  # still several critic batches per step, half the graph of 5
  c.batch_size = 4
  c.num_steps, c.save_every, c.sample_every, c.log_every_steps = 4, 2, 2, 1
  c.num_grid_images = 4
  c.fd.enabled = False
  c.fd.num_fake = 24
  for key, value in overrides.items():
    target = c
    *path, last = key.split(".")
    for p in path:
      target = target[p]
    target[last] = value
  return c


def _leaves(tree):
  """Copies of every array leaf (RNG keys as their key data)."""
  return [np.array(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
          for x in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_one_training_step_of_every_kind_is_finite(kind):
  config = tiny_config(kind)
  family = gen_common.build_family(TRAINERS[config.task].make_family, config, sharding.make_mesh())
  state = family.init_state(jax.random.key(0))
  before = _leaves(state)
  k = family.batches_per_step
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(-1, 1, (4, k, SIZE, SIZE, 1)).astype(np.float32),
           "label": rng.integers(0, 2, (4, k)).astype(np.int32)}
  state, scalars = family.train_step(state, batch)
  scalars = jax.device_get(scalars)
  assert scalars and all(np.isfinite(float(v)) for v in scalars.values()), scalars
  assert int(state.step) == 1
  changed = [not np.array_equal(a, b) for a, b in zip(before, _leaves(state))]
  assert sum(changed) > len(changed) // 3  # parameters and optimizer states moved
  images = family.generate(state, jnp.zeros((3, family.latent_dim)), jnp.array([0, 1, 0]))
  assert images.shape == (3, SIZE, SIZE, 1) and float(jnp.abs(images).max()) <= 1.0
  if kind == "wgan":
    c = float(config.clip_value)
    critic = np.concatenate([p.ravel() for p in _leaves(state.critic.params)])
    assert np.abs(critic).max() <= c + 1e-7
    assert np.mean(np.isclose(np.abs(critic), c)) > 0.5  # glorot init exceeds c: clipping was active
  if kind == "wgan_gp":
    assert float(scalars["gradient_penalty"]) > 0


def _final_params(result):
  return _leaves(jax.device_get((result["state"].generator, result["state"].critic)))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """A 4-step MLP GAN run with checkpoints at 0, 2, 4 and the Fréchet hook on."""
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  config = tiny_config("gan", **{"fd.enabled": True})
  result = gan_train.train_and_evaluate(config, workdir)
  return workdir, config, result


def test_checkpoints_samples_and_frechet_history(uninterrupted):
  workdir, _, result = uninterrupted
  assert checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), None).all_steps() == [0, 2, 4]
  for step in (0, 2, 4):
    assert os.path.isfile(os.path.join(workdir, "reports", f"samples_{step:06d}.png"))
  with open(os.path.join(workdir, "reports", "fd_history.json")) as f:
    history = json.load(f)
  assert history["metric"] == "fd_randinit"
  assert [r["step"] for r in history["history"]] == [0, 2, 4]
  for record in history["history"]:
    assert np.isfinite(record["fd_randinit"]) and record["fd_randinit"] > 0
    fd = next(r for r in record["records"] if r["metric"] == "fd_randinit")
    assert fd["n_gen"] == 24 and fd["extractor"] == "randinit" and len(fd["weights_sha256"]) == 64
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["kind"] == "gan"


def test_resume_matches_an_uninterrupted_run(uninterrupted, tmp_path):
  _, config, full = uninterrupted
  workdir = str(tmp_path / "resumed")
  config.fd.enabled = False
  config.num_steps = 2
  gan_train.train_and_evaluate(config, workdir)  # "killed" after step 2
  config.num_steps = 4
  resumed = gan_train.train_and_evaluate(config, workdir)
  for a, b in zip(_final_params(full), _final_params(resumed)):
    np.testing.assert_array_equal(a, b)


def test_second_wind_restart_from_an_earlier_checkpoint(uninterrupted, tmp_path):
  source, config, full = uninterrupted
  config.fd.enabled = False
  config.resume_step = 2
  with pytest.raises(ValueError, match="resume_workdir"):  # would overwrite checkpoint 4
    gan_train.train_and_evaluate(config, source)
  config.resume_workdir = source
  branch = str(tmp_path / "branch")
  restarted = gan_train.train_and_evaluate(config, branch)
  assert checkpointing.Checkpointer(os.path.join(branch, "checkpoints"), None).all_steps() == [4]
  for a, b in zip(_final_params(full), _final_params(restarted)):
    np.testing.assert_array_equal(a, b)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
  config = tiny_config("gan", **{"optim.d.learning_rate": float("nan"), "save_every": 10})
  with pytest.raises(checks.NonFiniteLossError, match="at step 1"):
    gan_train.train_and_evaluate(config, str(tmp_path))
  assert checkpointing.Checkpointer(str(tmp_path / "checkpoints"), None).all_steps() == [0]


def test_sampling_from_checkpoints(uninterrupted, tmp_path):
  workdir, _, _ = uninterrupted
  job = sample_config.get_config()
  job.source_workdir, job.step, job.num_images, job.out_dir = workdir, 2, 5, str(tmp_path / "png")
  manifest = sample.run(job, str(tmp_path))
  files = sorted(f for f in os.listdir(tmp_path / "png") if f.startswith("gan_step2_"))
  assert len(files) == 5 and manifest["step"] == 2
  for name in files:
    with Image.open(tmp_path / "png" / name) as img:
      assert img.mode == "L" and img.size == (SIZE, SIZE)
  assert os.path.isfile(tmp_path / "png" / "grid.png")
  images = sample.sample_images(workdir, 2, 3, seed=0)
  assert images.dtype == np.uint8 and images.shape == (3, SIZE, SIZE, 1)
  np.testing.assert_array_equal(images, sample.sample_images(workdir, 2, 3, seed=0))
  assert not np.array_equal(images, sample.sample_images(workdir, 2, 3, seed=1))
  assert not np.array_equal(images, sample.sample_images(workdir, None, 3, seed=0))  # latest = step 4
  with pytest.raises(ValueError, match="unconditional"):
    sample.sample_images(workdir, None, 2, seed=0, label=1)


def test_conditional_sampling_writes_every_class(tmp_path):
  config = tiny_config("cgan", num_steps=1, save_every=1)
  gan_train.train_and_evaluate(config, str(tmp_path / "run"))
  job = sample_config.get_config()
  job.source_workdir, job.num_images = str(tmp_path / "run"), 3
  manifest = sample.run(job, str(tmp_path))
  assert manifest["images_per_class"] == {"0": 3, "1": 3}
  for cls in (0, 1):
    assert len(os.listdir(tmp_path / "samples" / f"class_{cls}")) == 3
  as_0 = sample.sample_images(str(tmp_path / "run"), None, 2, seed=0, label=0)
  as_1 = sample.sample_images(str(tmp_path / "run"), None, 2, seed=0, label=1)
  assert not np.array_equal(as_0, as_1)
