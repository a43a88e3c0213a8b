"""StyleGAN2: layers against naive definitions, losses against closed forms, presets, resume."""

from __future__ import annotations

import json
import os
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_config
from prepnet_jax.data import diffaugment
from prepnet_jax.losses import stylegan2 as losses
from prepnet_jax.models import stylegan2 as sg2
from prepnet_jax.runtime import checkpointing
from prepnet_jax.runtime.state import TrainState
from prepnet_jax.models import stylegan2_hparams as hparams_lib
from prepnet_jax.tasks.stylegan2 import steps as steps_lib, train as train_lib

TINY = dict(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=8)


# --- layers ----------------------------------------------------------------------------------------

def _reference_upfirdn(x, up=1, down=1, pad=(0, 0), gain=1.0):
  """Literal definition: zero insertion, zero padding, 2-D [1,3,3,1] correlation, decimation."""
  n, h, w, c = x.shape
  u = np.zeros((n, h * up, w * up, c))
  u[:, ::up, ::up] = x
  u = np.pad(u, ((0, 0), pad, pad, (0, 0)))
  f = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0 * gain
  out_h, out_w = u.shape[1] - 3, u.shape[2] - 3
  out = sum(f[i, j] * u[:, i:i + out_h, j:j + out_w] for i in range(4) for j in range(4))
  return out[:, ::down, ::down]


def _reference_conv_valid(x, w):
  k = w.shape[0]
  out_h, out_w = x.shape[1] - k + 1, x.shape[2] - k + 1
  return sum(np.einsum("nhwc,co->nhwo", x[:, i:i + out_h, j:j + out_w], w[i, j])
             for i in range(k) for j in range(k))


def _naive_modulated_conv(x, weight, styles, up, demodulate):
  """Each sample convolved with its own weight w·s (/‖w·s‖), the up path by its definition."""
  k = weight.shape[0]
  p = k // 2
  outs = []
  for b in range(x.shape[0]):
    w = weight * styles[b][None, None, :, None]
    if demodulate:
      w = w / np.sqrt((w ** 2).sum(axis=(0, 1, 2), keepdims=True) + 1e-8)
    xb = x[b:b + 1]
    if up == 2:
      xb = _reference_upfirdn(xb, up=2, pad=(p + 2, p + 1), gain=4.0)
    else:
      xb = np.pad(xb, ((0, 0), (p, p), (p, p), (0, 0)))
    outs.append(_reference_conv_valid(xb, w))
  return np.concatenate(outs)


@pytest.mark.parametrize("up,demodulate,k", [(1, True, 3), (2, True, 3), (1, False, 1)])
def test_modulated_conv_equals_naive_per_sample_conv(up, demodulate, k):
  rng = np.random.default_rng(0)
  x, weight = rng.normal(size=(3, 6, 6, 4)), rng.normal(size=(k, k, 4, 5))
  styles = rng.normal(size=(3, 4)) + 1.0
  got = sg2.modulated_conv2d(*(jnp.asarray(a, jnp.float32) for a in (x, weight, styles)), up=up,
                             demodulate=demodulate)
  np.testing.assert_allclose(got, _naive_modulated_conv(x, weight, styles, up, demodulate), rtol=1e-4, atol=1e-4)


def test_resampling_matches_upfirdn_definition():
  x = np.random.default_rng(1).normal(size=(2, 8, 8, 3))
  for kwargs in (dict(up=2, pad=(2, 1), gain=4.0), dict(pad=(2, 2)), dict(down=2, pad=(1, 1))):
    np.testing.assert_allclose(sg2.upfirdn2d(jnp.asarray(x, jnp.float32), **kwargs),
                               _reference_upfirdn(x, **kwargs), atol=1e-5)
  w = np.random.default_rng(2).normal(size=(3, 3, 3, 2))
  down = sg2.conv2d_resample(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), down=2)
  np.testing.assert_allclose(down, _reference_conv_valid(_reference_upfirdn(x, pad=(2, 2)), w)[:, ::2, ::2],
                             atol=1e-4)


def test_demodulation_gives_unit_output_std():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(8, 16, 16, 64)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(3, 3, 64, 32)), jnp.float32)
  styles = jnp.asarray(rng.uniform(0.2, 3.0, size=(8, 64)), jnp.float32)
  out = np.asarray(sg2.modulated_conv2d(x, weight, styles))[:, 1:-1, 1:-1]  # interior: no padding
  assert abs(out.std() - 1.0) < 0.03
  assert abs(np.asarray(sg2.modulated_conv2d(x, weight, styles, demodulate=False)).std() - 1.0) > 1.0


def test_minibatch_stddev_groups_samples_modulo():
  x = jnp.asarray(np.random.default_rng(4).normal(size=(8, 2, 2, 4)), jnp.float32)
  out = np.asarray(sg2.minibatch_stddev(x, group_size=4))
  xs = np.asarray(x)
  for sample in range(8):
    group = xs[sample % 2::2]  # group size 4 → sample i is in group i mod 2
    expected = np.sqrt(group.var(axis=0) + 1e-8).mean()
    np.testing.assert_allclose(out[sample, :, :, 4], expected, rtol=1e-5)


# --- networks --------------------------------------------------------------------------------------

def _generator(resolution=32, channels=1, c_dim=0):
  return sg2.Generator(resolution, channels, c_dim=c_dim, **TINY)


def _discriminator(resolution=32, channels=1, c_dim=0):
  return sg2.Discriminator(resolution, channels, c_dim=c_dim, channel_base=128, channel_max=8,
                           mbstd_group_size=2, mapping_layers=2)


def test_truncation_psi_zero_maps_every_z_to_w_avg():
  mapping = sg2.MappingNetwork(z_dim=16, c_dim=0, w_dim=16, num_ws=8, num_layers=2)
  key = jax.random.PRNGKey(0)
  variables = jax.jit(mapping.init)(key, jnp.zeros((2, 16)))
  z = jax.random.normal(key, (5, 16))
  update = jax.jit(lambda v: mapping.apply(v, z, update_w_avg=True, mutable=["buffers"])[1])
  for _ in range(3):  # move w_avg away from its zero initialisation
    variables = {**variables, **update(variables)}
  w_avg = np.asarray(variables["buffers"]["w_avg"])
  assert np.abs(w_avg).max() > 0.01
  truncate = jax.jit(lambda v, z, psi: mapping.apply(v, z, truncation_psi=psi), static_argnums=2)
  other_z = jax.random.normal(jax.random.PRNGKey(1), (6, 16))
  ws = truncate(variables, other_z, 0.0)
  assert ws.shape == (6, 8, 16)
  np.testing.assert_allclose(ws, np.broadcast_to(w_avg, ws.shape), atol=1e-6)
  half = truncate(variables, other_z, 0.5)  # ψ = 0.5 halves the distance to w_avg
  np.testing.assert_allclose(half - w_avg, 0.5 * (truncate(variables, other_z, 1.0) - w_avg), atol=1e-5)


@pytest.mark.parametrize("channels,c_dim", [(1, 0), (3, 0), (1, 3)])
def test_shapes_at_32(channels, c_dim):
  """Abstract evaluation (no compilation): parameter and output shapes of G and D at 32²."""
  generator, discriminator = _generator(32, channels, c_dim), _discriminator(32, channels, c_dim)
  key = jax.random.PRNGKey(0)
  z = jax.ShapeDtypeStruct((4, 16), jnp.float32)
  c = jax.ShapeDtypeStruct((4, c_dim), jnp.float32) if c_dim else None
  g_vars = jax.eval_shape(lambda z, c: generator.init({"params": key, "noise": key}, z, c), z, c)
  images = jax.eval_shape(lambda v, z, c: generator.apply(v, z, c, rngs={"noise": key}), g_vars, z, c)
  assert generator.num_ws == 8 and images.shape == (4, 32, 32, channels)
  assert g_vars["params"]["synthesis"]["b32"]["torgb"]["kernel"].shape == (1, 1, 4, channels)
  assert g_vars["buffers"]["synthesis"]["b32"]["conv1"]["noise_const"].shape == (32, 32, 1)
  d_vars = jax.eval_shape(lambda x, c: discriminator.init(key, x, c), images, c)
  assert d_vars["params"]["b32"]["fromrgb"]["kernel"].shape == (1, 1, channels, 4)
  logits = jax.eval_shape(discriminator.apply, d_vars, images, c)
  assert logits.shape == (4,)
  assert ("embed" in g_vars["params"]["mapping"]) == bool(c_dim)
  assert ("mapping" in d_vars["params"]) == bool(c_dim)


def test_conditioning_reaches_both_networks():
  generator, discriminator = _generator(8, 1, 3), _discriminator(8, 1, 3)
  key = jax.random.PRNGKey(0)
  z = jnp.repeat(jax.random.normal(key, (1, 16)), 4, axis=0)
  c = jax.nn.one_hot(jnp.asarray([0, 1, 2, 0]), 3)
  g_vars = jax.jit(generator.init)({"params": key, "noise": key}, z, c)
  images = np.asarray(jax.jit(lambda v: generator.apply(v, z, c, noise_mode="const"))(g_vars))
  np.testing.assert_allclose(images[0], images[3], atol=1e-6)  # same z, same label
  assert not np.allclose(images[0], images[1], atol=1e-4)  # same z, another label
  d_vars = jax.jit(discriminator.init)(key, images, c)
  d_apply = jax.jit(discriminator.apply)
  assert not np.allclose(d_apply(d_vars, images, c), d_apply(d_vars, images, c[::-1]))
  with pytest.raises(ValueError, match="conditional"):
    generator.apply(g_vars, z, rngs={"noise": key})


# --- losses and schedules --------------------------------------------------------------------------

def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
  rng = np.random.default_rng(5)
  a = jnp.asarray(rng.normal(size=(1, 4, 4, 2)), jnp.float32)
  reals = jnp.asarray(rng.normal(size=(3, 4, 4, 2)), jnp.float32)
  penalty, logits = losses.r1_penalty(lambda x: jnp.sum(x * a, axis=(1, 2, 3)) + 0.5, reals)
  np.testing.assert_allclose(penalty, np.full(3, float(jnp.sum(a ** 2))), rtol=1e-6)
  np.testing.assert_allclose(logits, np.asarray(jnp.sum(reals * a, axis=(1, 2, 3)) + 0.5), rtol=1e-6)
  gamma = 10.0  # the loss the D-reg phase minimises: γ/2 · ‖a‖²
  assert float(jnp.mean(penalty) * gamma / 2) == pytest.approx(5.0 * float(jnp.sum(a ** 2)), rel=1e-6)


def test_path_length_of_a_linear_synthesis():
  """img = w·M: J_wᵀ y = yᵀM per ws entry; lengths and the running mean follow the definition."""
  rng = np.random.default_rng(6)
  matrix = jnp.asarray(rng.normal(size=(4, 2 * 2 * 1)), jnp.float32)
  synth = lambda ws: (ws.sum(axis=1) @ matrix).reshape(-1, 2, 2, 1)  # noqa: E731
  ws = jnp.asarray(rng.normal(size=(3, 2, 4)), jnp.float32)
  key = jax.random.PRNGKey(0)
  penalty, new_mean, lengths = losses.path_length_penalty(synth, ws, key, jnp.float32(1.0), 0.01)
  noise = np.asarray(jax.random.normal(key, (3, 2, 2, 1))) / 2.0
  grad_per_w = noise.reshape(3, 4) @ np.asarray(matrix).T  # same for both ws entries
  expected = np.sqrt((grad_per_w ** 2).sum(-1))
  np.testing.assert_allclose(lengths, expected, rtol=1e-5)
  assert float(new_mean) == pytest.approx(1.0 + (expected.mean() - 1.0) * 0.01, rel=1e-6)
  np.testing.assert_allclose(penalty, (expected - float(new_mean)) ** 2, rtol=1e-5)


def test_ema_coefficient_and_update():
  assert float(losses.ema_beta(32, 10_000, 10.0)) == pytest.approx(0.5 ** (32 / 10_000))
  assert float(losses.ema_beta(32, 1_000, 10.0, 0.05)) == pytest.approx(0.5 ** (32 / 50))  # ramp-up
  assert float(losses.ema_beta(32, 10**6, 10.0, 0.05)) == pytest.approx(0.5 ** (32 / 10_000))
  hp = types.SimpleNamespace(batch_size=16, ema_kimg=2.0, ema_rampup=None)
  net = lambda params, ema: TrainState(step=jnp.int32(0), params=params, batch_stats={}, opt_state=(),
                                       rng=jax.random.PRNGKey(0), apply_fn=None, tx=None, ema_params=ema)
  state = steps_lib.StyleGAN2State(
      step=jnp.int32(5), g=net({"w": jnp.ones(3)}, {"w": jnp.zeros(3)}), d=net({}, None),
      pl_mean=jnp.float32(0), rng=jax.random.PRNGKey(0))
  state = steps_lib.ema_step(types.SimpleNamespace(hp=hp), state)
  beta = 0.5 ** (16 / 2000)
  np.testing.assert_allclose(state.g.ema_params["w"], np.full(3, 1 - beta), rtol=0, atol=2e-7)  # float32 ulp
  assert int(state.step) == 6


def test_lazy_regularisation_adam_settings():
  lr, b1, b2 = losses.lazy_regularization_adam(0.002, 0.0, 0.99, 16)
  assert (lr, b1, b2) == pytest.approx((0.002 * 16 / 17, 0.0, 0.99 ** (16 / 17)))
  assert losses.lazy_regularization_adam(0.002, 0.0, 0.99, None) == (0.002, 0.0, 0.99)


def test_presets_and_overrides():
  config = load_config("stylegan2")
  low_shot = hparams_lib.preset_values("low_shot", None, 1)
  assert (low_shot["total_kimg"], low_shot["batch_size"], low_shot["r1_gamma"], low_shot["mapping_layers"],
          low_shot["channel_base"], low_shot["lr"], low_shot["ema_kimg"]) == (300.0, 8, 10.0, 2, 32768, 0.002, 10.0)
  auto = hparams_lib.preset_values("auto", 256, 1)  # mb = max(min(1·min(4096//256, 32), 64), 1) = 16
  assert (auto["batch_size"], auto["mbstd_group_size"], auto["channel_base"], auto["lr"]) == (16, 4, 16384, 0.0025)
  assert auto["r1_gamma"] == pytest.approx(0.0002 * 256 ** 2 / 16) and auto["ema_kimg"] == pytest.approx(5.0)
  assert hparams_lib.preset_values("auto", 1024, 8)["batch_size"] == 32
  config.preset = "paper256"
  config.lr = 0.001
  hp = hparams_lib.resolve_hparams(config, num_devices=1)
  assert (hp.resolution, hp.batch_size, hp.r1_gamma, hp.mapping_layers, hp.lr, hp.ema_rampup) == (
      256, 64, 1.0, 8, 0.001, None)
  config.preset = "huge"
  with pytest.raises(ValueError, match="unknown config.preset 'huge'"):
    hparams_lib.resolve_hparams(config)


# --- end to end: a tiny run, interrupted and resumed ------------------------------------------------

def _tiny_config(total_kimg: float):
  config = load_config("stylegan2")
  config.preprocess.image_size = 8
  config.data.phantom_overrides = {"num_patients": 24, "image_size": 16}
  config.model.z_dim, config.model.w_dim, config.model.mapping_layers = 8, 8, 1
  config.model.channel_base, config.model.channel_max = 64, 8
  config.batch_size = 4
  config.total_kimg = total_kimg
  config.snapshot_kimg = 0.016
  config.checkpoint_kimg = 0.008
  config.log_every_steps = 1
  config.g_reg_interval, config.d_reg_interval = 2, 3
  config.eval.num_generated = 0
  config.eval.grid_size = 4
  return config


class SimulatedKill(Exception):
  pass


def test_interrupted_run_resumes_to_the_same_state(tmp_path, monkeypatch):
  steps = 5  # 0.02 kimg at batch 4; checkpoints every 2 steps, snapshots every 4
  train_lib.train_and_evaluate(_tiny_config(0.02), str(tmp_path / "straight"))

  real_train_step = train_lib.train_step
  def crash_at_step_3(setup, state, batch, step):
    if step == 3:
      raise SimulatedKill("killed after the step-2 checkpoint")
    return real_train_step(setup, state, batch, step)

  monkeypatch.setattr(train_lib, "train_step", crash_at_step_3)
  with pytest.raises(SimulatedKill):
    train_lib.train_and_evaluate(_tiny_config(0.02), str(tmp_path / "resumed"))
  monkeypatch.setattr(train_lib, "train_step", real_train_step)
  train_lib.train_and_evaluate(_tiny_config(0.02), str(tmp_path / "resumed"))

  final = {}
  for name in ("straight", "resumed"):
    hp = hparams_lib.resolve_hparams(_tiny_config(0.02))
    setup = steps_lib.make_setup(hp, diffaugment.DiffAugment())
    ckpt = checkpointing.Checkpointer(str(tmp_path / name / "checkpoints"))
    assert ckpt.latest_step() == steps
    final[name] = ckpt.restore(steps_lib.create_state(setup, 0))
  (a, meta_a), (b, meta_b) = final["straight"], final["resumed"]
  assert meta_a["kimg"] == meta_b["kimg"] == pytest.approx(0.02)
  assert meta_a["data_iterator"] == meta_b["data_iterator"]
  for leaf_a, leaf_b in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(leaf_a, leaf_b)  # EMA, pl_mean, optimizer, RNG: bit-identical
  assert float(a.pl_mean) > 0
  with open(tmp_path / "resumed" / "reports" / "metrics_history.json") as f:
    assert [r["kimg"] for r in json.load(f)] == [0.0, 0.016, 0.02]
  assert os.path.exists(tmp_path / "resumed" / "reports" / "fakes_000000.016.png")
