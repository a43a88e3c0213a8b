"""Checkpoints you can trust: a truncated, changed or missing file of a checkpoint is never trained
on or served. Every training task resumes from the previous intact step with a message, or stops
with an error naming each bad checkpoint; a kill during a save leaves the previous step usable; a
checkpoint written before checksums existed is restored with a warning.

The classifier gets the whole matrix (in-process reruns of its training loop, and `main.py` for
the stop); PrepNet, a GAN and StyleGAN2 restore their own states through the checkpointing calls
their jobs make.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from helpers import REPO, load_config, tiny_classifier_config, tiny_prepnet_config
from prepnet_jax.data import diffaugment
from prepnet_jax.eval import classify, prepnet_layout, trained
from prepnet_jax.models import prepnet_networks, stylegan2_hparams
from prepnet_jax.runtime import checkpointing, rundir, sharding
from prepnet_jax.tasks.classifier import train as classifier
from prepnet_jax.tasks.generative import common as gen_common, gan as gan_train
from prepnet_jax.tasks.prepnet import phase_progress
from prepnet_jax.tasks.stylegan2 import steps as sg2_steps, train as sg2_train

CORRUPTIONS = ("truncate", "flip", "delete")


def corrupt(step_dir: str, how: str) -> str:
  """Damages the largest file of a step (an array chunk); returns its path."""
  files = [os.path.join(root, n) for root, _, names in os.walk(step_dir) for n in names
           if n != checkpointing.MANIFEST]
  target = max(files, key=os.path.getsize)
  if how == "truncate":
    os.truncate(target, os.path.getsize(target) // 2)
  elif how == "flip":
    data = bytearray(open(target, "rb").read())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    with open(target, "wb") as f:
      f.write(data)
  else:
    os.remove(target)
  return target


def _leaves(tree):
  """Every leaf as a numpy array (RNG keys as their key data)."""
  def plain(x):
    keys = hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
    return np.asarray(jax.random.key_data(x) if keys else x)
  return [plain(x) for x in jax.tree_util.tree_leaves(tree)]


def _assert_same(a, b):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


# --- classifier: the whole matrix ------------------------------------------------------------------

def _fit(config, workdir):
  sources = [classify.load_split(config, config.data.train, split) for split in ("train", "val")]
  return classifier.fit(config, str(workdir), *sources)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
  """tests/tiny_classifier_config.py trained: checkpoints at epochs 2 and 3 (steps 40, 60), best/."""
  config = tiny_classifier_config(num_epochs=3)
  config.task = "classifier"
  workdir = tmp_path_factory.mktemp("classifier") / "run"
  _fit(config, workdir)
  rundir.write_config(config, str(workdir))
  ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"))
  assert ckpt.all_steps() == [40, 60] and all(ckpt.verify(s) == "" for s in (40, 60))
  return config, workdir


def _copy(run, tmp_path):
  shutil.copytree(run, tmp_path / "run")
  return tmp_path / "run"


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_classifier_resumes_from_the_previous_intact_checkpoint(classifier_run, tmp_path, capsys, how):
  config, run = classifier_run
  workdir = _copy(run, tmp_path)
  bad = corrupt(str(workdir / "checkpoints" / "60"), how)
  capsys.readouterr()
  _fit(config, workdir)
  out = capsys.readouterr().out
  rel = os.path.relpath(bad, workdir / "checkpoints" / "60")
  assert f"{workdir / 'checkpoints' / '60'} is corrupt: {rel}" in out, out
  assert "using step 40, the newest intact checkpoint" in out
  assert "resuming from checkpoint step 40" in out
  assert (workdir / "checkpoints" / "60.corrupt").is_dir()  # kept for inspection, out of the way
  ckpt = checkpointing.Checkpointer(str(workdir / "checkpoints"))
  assert ckpt.all_steps() == [40, 60] and ckpt.verify(60) == ""  # epoch 3 retrained and saved
  _assert_same(ckpt.restore_tree(60)[0], checkpointing.Checkpointer(str(run / "checkpoints")).restore_tree(60)[0])


def test_classifier_job_with_no_intact_checkpoint_stops_naming_each(classifier_run, tmp_path):
  _, run = classifier_run
  workdir = _copy(run, tmp_path)
  corrupt(str(workdir / "checkpoints" / "60"), "flip")
  corrupt(str(workdir / "checkpoints" / "40"), "truncate")
  cmd = [sys.executable, os.path.join(REPO, "main.py"),
         "--config=" + os.path.join(REPO, "tests", "tiny_classifier_config.py"), f"--workdir={workdir}"]
  done = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode != 0
  message = done.stderr.strip().splitlines()[-1]
  assert message.startswith(f"[checkpoint] no intact checkpoint in {workdir / 'checkpoints'}: "), done.stderr
  assert f"{workdir / 'checkpoints' / '60'} is corrupt: " in message and "SHA-256" in message
  assert f"{workdir / 'checkpoints' / '40'} is corrupt: " in message and "(truncated)" in message
  assert "Traceback" not in done.stderr and "epoch" not in done.stdout  # nothing trained
  assert sorted(os.listdir(workdir / "checkpoints")) == ["40", "60"]  # nothing moved


def test_classifier_checkpoint_without_manifest_restores_with_a_warning(classifier_run, tmp_path, capsys):
  config, run = classifier_run
  workdir = _copy(run, tmp_path)
  os.remove(workdir / "checkpoints" / "60" / checkpointing.MANIFEST)  # as written before checksums
  capsys.readouterr()
  _fit(config, workdir)
  out = capsys.readouterr().out
  assert f"WARNING: {workdir / 'checkpoints' / '60'} has no {checkpointing.MANIFEST}" in out
  assert "resuming from checkpoint step 60" in out and "epoch 3/3" not in out


def test_loading_a_trained_classifier_verifies_and_names_the_checkpoint(classifier_run, tmp_path):
  _, run = classifier_run
  workdir = _copy(run, tmp_path)
  assert trained.load_classifier(str(workdir)).checkpoint == "best"
  best = workdir / "best" / os.listdir(workdir / "best")[0]
  corrupt(str(best), "flip")
  with pytest.raises(checkpointing.CheckpointCorruptError, match=f"{best} is corrupt: .*SHA-256"):
    trained.load_trained_model(str(workdir))
  corrupt(str(workdir / "checkpoints" / "40"), "delete")
  with pytest.raises(checkpointing.CheckpointCorruptError, match=f"{workdir / 'checkpoints' / '40'} is corrupt: .* is missing"):
    trained.load_classifier(str(workdir), step=40)


def test_a_template_that_does_not_fit_an_intact_checkpoint_is_no_corruption(tmp_path):
  ckpt = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
  ckpt.save(1, {"w": np.ones(3, np.float32)}, {})
  with pytest.raises(ValueError) as raised:
    ckpt.restore({"w": np.ones(3, np.float32), "extra": np.ones(2, np.float32)})
  assert not isinstance(raised.value, checkpointing.CheckpointCorruptError)
  assert ckpt.all_steps() == [1] and ckpt.verify(1) == ""


# --- a kill during a save --------------------------------------------------------------------------

_KILLED_SAVE = """
import os, signal, sys
import numpy as np
from prepnet_jax.runtime import checkpointing
directory, where = sys.argv[1], sys.argv[2]
ckpt = checkpointing.Checkpointer(directory, 2)
ckpt.save(1, {"w": np.full((256, 256), 1.0, np.float32)}, {"n": 1})
real_rename, real_replace = os.rename, os.replace
def kill(*args):
  os.kill(os.getpid(), signal.SIGKILL)
def rename(src, dst, *args, **kwargs):  # orbax: item directories, then the step directory
  if where == "writing_items" or (where == "finalising" and os.path.basename(str(dst)) == "2"):
    kill()
  return real_rename(src, dst, *args, **kwargs)
def replace(src, dst, *args, **kwargs):  # the manifest, once orbax has finalised the step
  if where == "writing_manifest":
    kill()
  return real_replace(src, dst, *args, **kwargs)
os.rename, os.replace = rename, replace
ckpt.save(2, {"w": np.full((256, 256), 2.0, np.float32)}, {"n": 2})
"""


@pytest.mark.parametrize("where", ["writing_items", "finalising", "writing_manifest"])
def test_sigkill_during_a_save_leaves_the_previous_checkpoint_usable(tmp_path, capsys, where):
  directory = str(tmp_path / "checkpoints")
  done = subprocess.run([sys.executable, "-c", _KILLED_SAVE, directory, where], timeout=300,
                        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True)
  assert done.returncode == -signal.SIGKILL, done.stderr
  ckpt = checkpointing.Checkpointer(directory, 2)
  template = {"w": np.zeros((256, 256), np.float32)}
  assert ckpt.verify(1) == ""
  np.testing.assert_array_equal(ckpt.restore(template, 1)[0]["w"], 1.0)
  state, meta, how = checkpointing.resume(ckpt, template, str(tmp_path))
  if where == "writing_manifest":  # orbax had finalised step 2: complete, but unverified
    assert ckpt.verify(2) is None and meta == {"n": 2} and "step 2" in how
    assert f"has no {checkpointing.MANIFEST}" in capsys.readouterr().out
  else:  # the half-written step is orbax's temporary directory, never a step
    assert ckpt.all_steps() == [1] and meta == {"n": 1} and "step 1" in how
    assert any(".orbax-checkpoint-tmp" in name for name in os.listdir(directory))
    ckpt.save(2, {"w": np.full((256, 256), 3.0, np.float32)}, {"n": 3})  # the rerun saves over it
    assert ckpt.verify(2) == "" and ckpt.restore(template)[1] == {"n": 3}


# --- PrepNet, a GAN, StyleGAN2: their own states through their jobs' checkpoint calls --------------

def test_prepnet_row_and_epoch_checkpoints_stop_naming_the_checkpoint(tmp_path):
  config = tiny_prepnet_config([dict(name="PrepNet", overrides={})])
  key = jax.random.key(0)
  ae = jax.device_get(prepnet_networks.make_ae_state(config, key, 1))
  img = jax.device_get(prepnet_networks.make_classifier_state(config, config.e_img, 2, key, 1, config.optim.img))
  row = str(tmp_path / "rows" / "prepnet" / "seed_0")
  ckpt = checkpointing.Checkpointer(prepnet_layout.row_checkpoints(row), 1)  # as RowRun keeps it
  ckpt.save(1, {"ae": ae, "img": img, "cov": {}}, {"done": ["ae_warmup"], "curves": {}})
  ckpt.save(2, {"ae": ae, "img": img, "cov": {}}, {"done": ["ae_warmup", "img_warmup"], "curves": {}})
  corrupt(ckpt.step_directory(2), "flip")
  again = checkpointing.Checkpointer(prepnet_layout.row_checkpoints(row), 1)
  name = f"{again.step_directory(2)} is corrupt: "
  with pytest.raises(checkpointing.CheckpointCorruptError, match=name):
    checkpointing.resume(again, {"ae": ae, "img": img, "cov": {}}, row)
  assert again.all_steps() == [2]  # nothing moved when there is nothing to fall back to

  progress = phase_progress.PhaseProgress(row, "adversarial", 1)
  progress.save(1, 3, {"ae": ae, "img": img}, [], {"done": [], "curves": {}})
  corrupt(os.path.join(phase_progress.directory(row, "adversarial"), "1"), "truncate")
  with pytest.raises(checkpointing.CheckpointCorruptError, match="checkpoints_adversarial/1 is corrupt: .*truncated"):
    phase_progress.PhaseProgress(row, "adversarial", 1).restore({"ae": ae, "img": img}, [])


def test_gan_resumes_from_the_previous_intact_checkpoint_and_branches_read_only(tmp_path, capsys):
  config = load_config("gan")
  config.preprocess.image_size = 32
  config.model.width_multiplier, config.model.latent_dim = 0.0625, 8
  config.model.mlp_g_hidden, config.model.mlp_d_hidden = (16, 16), (16, 16)
  family = gen_common.build_family(gan_train.make_family, config, sharding.make_mesh())
  state = jax.device_get(family.init_state(jax.random.key(0)))
  workdir = str(tmp_path / "gan")
  ckpt = gen_common.open_checkpointer(workdir, config)
  for step in (0, 2, 4):
    ckpt.save(step, state.replace(step=step), {"iterator": None, "fd_history": [], "at": step})
  corrupt(ckpt.step_directory(4), "truncate")
  branch = gen_common.open_checkpointer(str(tmp_path / "branch"), config)
  restored, meta, how = checkpointing.resume(branch, state, str(tmp_path / "branch"), resume_workdir=workdir)
  assert meta["at"] == 2 and "restarted from step 2" in how
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["0", "2", "4"]  # another run: untouched
  restored, meta, how = checkpointing.resume(gen_common.open_checkpointer(workdir, config), state, workdir,
                                             resume_workdir=config.resume_workdir, resume_step=int(config.resume_step))
  assert meta["at"] == 2 and int(restored.step) == 2 and how.startswith("resumed from step 2")
  assert "using step 2, the newest intact checkpoint" in capsys.readouterr().out
  _assert_same(restored.generator, state.generator)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["0", "2", "4.corrupt"]
  with pytest.raises(FileNotFoundError, match="resume_step=4"):  # a named step is never swapped
    checkpointing.resume(gen_common.open_checkpointer(workdir, config), state, workdir, resume_step=4)


def test_stylegan2_resumes_from_the_previous_intact_checkpoint(tmp_path, capsys):
  config = load_config("stylegan2")
  config.preprocess.image_size = 8
  config.model.z_dim, config.model.w_dim, config.model.mapping_layers = 8, 8, 1
  config.model.channel_base, config.model.channel_max = 64, 8
  config.batch_size = 4
  hp = stylegan2_hparams.resolve_hparams(config)
  setup = sg2_steps.make_setup(hp, diffaugment.DiffAugment())
  state = jax.device_get(sg2_steps.create_state(setup, 0))
  workdir = str(tmp_path / "sg2")
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), int(config.keep_checkpoints))
  for step in (2, 4):
    ckpt.save(step, state.replace(step=step), {"hparams": dataclasses.asdict(hp), "at": step})
  corrupt(ckpt.step_directory(4), "delete")
  again = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), int(config.keep_checkpoints))
  restored, meta, how = sg2_train.restore_or_init(config, workdir, again, setup)
  assert meta["at"] == 2 and int(restored.step) == 2 and how.startswith("resumed from step 2")
  out = capsys.readouterr().out
  assert f"{again.step_directory(4)} is corrupt: " in out and "is missing" in out
  _assert_same(restored, state.replace(step=2))
