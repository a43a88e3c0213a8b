"""`config.half_precision`: bfloat16 compute, float32 state, losses that track float32.

For each model family (a classifier, PrepNet's U-Net AE with E_cov on its output, a DCGAN, a
VAE, StyleGAN2) the same initial state is trained for a few steps on the same data with
`half_precision` off and on, through the tasks' own jitted steps, and the test checks that
(a) parameters, optimizer state and BatchNorm statistics stay float32, (b) the convolutions and
matrix products of the step (forward and backward, read off its jaxpr) run in bfloat16, and
(c) every loss stays within a bound derived from bfloat16's precision. (d) StyleGAN2's
demodulation stays finite and matches float32 for styles of magnitude 1e4.

The bound of (c): bfloat16 keeps 8 significant bits, so one rounding changes a value by at most
u = 2^-9 relative. A layer rounds twice (its convolution / matrix-product output, then its
normalisation or bias output), and to first order the relative errors of a chain of L layers add
up, so the loss (a mean of well-conditioned per-example terms) differs by at most 2·L·u
relative. A penalty on an input gradient passes the chain twice (forward, then backward), and
R1 and the path-length penalty square that gradient's norm, which doubles its relative error:
2·2·2·L·u. L counts the weight layers on the longest path the loss is computed through. A few
steps of Adam add only a second-order change (each update's direction differs by O(u)).
The models are the smallest of each family: the file takes about a minute of CPU time, most of it
compiling (the other architectures are traced, not compiled).
"""

from __future__ import annotations

import math

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_config, tiny_classifier_config
from prepnet_jax.data import diffaugment
from prepnet_jax.models import classifier_factory, prepnet_networks, stylegan2 as sg2, stylegan2_hparams
from prepnet_jax.runtime import precision, sharding
from prepnet_jax.tasks.classifier import train as classifier_train
from prepnet_jax.tasks.generative import gan as gan_train, vae as vae_train, vaegan as vaegan_train
from prepnet_jax.tasks.prepnet import steps as prepnet_steps
from prepnet_jax.tasks.stylegan2 import steps as sg2_steps

BF16_UNIT_ROUNDOFF = 2.0 ** -9
STEPS = 3
MODES = (False, True)  # half_precision


def loss_bound(layers: int, passes: int = 1, power: int = 1) -> float:
  """2·L·u per pass through L layers, times the power the result is raised to (module docstring)."""
  return 2 * layers * passes * power * BF16_UNIT_ROUNDOFF


# --- inspection helpers ----------------------------------------------------------------------------

def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax_core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax_core.Jaxpr):
        yield item


def compute_ops(jaxpr) -> tuple[list[tuple[str, bool, int]], set]:
  """[(primitive, both operands bfloat16, FLOPs)] of every convolution and matrix product in a
  jaxpr, nested calls included, and the set of every dtype any of its operations produces."""
  ops, dtypes = [], set()

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      dtypes.update(v.aval.dtype for v in eqn.outvars if hasattr(v.aval, "dtype"))
      name = eqn.primitive.name
      if name in ("conv_general_dilated", "dot_general"):
        lhs, rhs = (v.aval for v in eqn.invars[:2])
        out_size = math.prod(eqn.outvars[0].aval.shape)
        if name == "dot_general":
          contracted = math.prod(lhs.shape[i] for i in eqn.params["dimension_numbers"][0][0])
        else:  # each output element is a dot product over the kernel's non-output-feature dims
          contracted = math.prod(rhs.shape) // rhs.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
        ops.append((name, lhs.dtype == rhs.dtype == jnp.bfloat16, 2 * out_size * contracted))
      for sub in _sub_jaxprs(eqn):
        walk(sub)

  walk(jaxpr)
  return ops, dtypes


def assert_compute_dtype(jaxpr, half: bool, min_bf16_share: float = 0.9):
  """(b): in bfloat16 mode every convolution and ≥ `min_bf16_share` of the matmul/conv FLOPs are
  bfloat16 (the rest: float32 by design, e.g. StyleGAN2's mapping network); in float32 mode no
  operation produces bfloat16 at all."""
  ops, dtypes = compute_ops(jaxpr)
  assert ops, "no convolution or matrix product found"
  if not half:
    assert jnp.dtype(jnp.bfloat16) not in dtypes
    return
  assert all(bf16 for name, bf16, _ in ops if name == "conv_general_dilated")
  share = sum(f for _, bf16, f in ops if bf16) / sum(f for _, _, f in ops)
  assert share >= min_bf16_share, f"only {share:.1%} of the FLOPs run in bfloat16"


# XLA:CPU spends much of these one-off steps' compile time in LLVM's optimisations, which change
# values in the last bits at most (in both precisions alike): level 0 cuts it by about 40 %.
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def checked_step(jitted, *args, half: bool):
  """A task's jitted step traced on `args`, checked by `assert_compute_dtype` (forward and
  backward are both in its jaxpr) and compiled; call it without its static arguments."""
  traced = jitted.trace(*args)
  assert_compute_dtype(traced.jaxpr.jaxpr, half)
  return traced.lower().compile(FAST_COMPILE)


def assert_float32_state(*trees):
  """(a): every floating leaf (params, optimizer moments, BatchNorm statistics, EMA) is float32."""
  for tree in trees:
    for leaf in jax.tree_util.tree_leaves(tree):
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        assert leaf.dtype == jnp.float32, leaf.dtype


def host_copy(tree):
  """numpy copies (the steps donate their input states)."""
  return jax.tree_util.tree_map(np.array, jax.device_get(tree))


def assert_same_params(a, b):
  """Both precisions start from the same state: the compute dtype changes no parameter."""
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def assert_losses_track(histories: dict, bounds: dict):
  """(c): each loss of every step within its bound of the float32 run's, relative."""
  for name, bound in bounds.items():
    f32 = np.asarray([h[name] for h in histories[False]], np.float64)
    bf16 = np.asarray([h[name] for h in histories[True]], np.float64)
    assert np.all(np.isfinite(bf16)), name
    rel = np.abs(bf16 - f32) / np.abs(f32)
    assert np.all(rel <= bound), f"{name}: relative differences {rel} exceed {bound:.4f}"
    assert np.any(bf16 != f32), f"{name}: identical in both precisions, so bfloat16 did not run"


def _floats(scalars: dict) -> dict:
  return {k: float(v) for k, v in jax.device_get(scalars).items()}


# --- families --------------------------------------------------------------------------------------

def test_compute_dtype_follows_the_switch_and_every_training_config_has_it():
  for name in ("classifier", "gan", "dcgan", "vae", "vaegan", "prepnet", "stylegan2", "augment_experiment",
               "study_kth"):
    config = load_config(name)
    assert config.half_precision is False, name
    assert precision.compute_dtype(config) == jnp.float32
    config.half_precision = True
    assert precision.compute_dtype(config) == jnp.bfloat16
  # One switch for everything an experiment trains: its arms' classifiers and its generators.
  experiment = load_config("augment_experiment")
  experiment.half_precision = True
  assert experiment.generator.train.half_precision is True
  study = load_config("study_kth")
  study.half_precision = True
  assert all(stage.half_precision for stage in study.stages.values() if "half_precision" in stage)


def test_classifier():
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(8, 16, 16, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 2, 8), jnp.int32)}
  states, histories = {}, {}
  for half in MODES:
    config = tiny_classifier_config(**{"half_precision": half, "preprocess.image_size": 16})
    config.model.kwargs = {"widths": (8, 16)}
    model = classifier_factory.build_classifier(config)
    state = classifier_factory.create_classifier_state(config, model, jax.random.key(0), 10, 10)
    states[half] = host_copy(state.params)
    train_step = checked_step(classifier_train.train_step, state, batch, None, half=half)
    histories[half] = []
    for _ in range(STEPS):
      state, scalars = train_step(state, batch, None)
      histories[half].append(_floats(scalars))
    assert_float32_state(state.params, state.opt_state, state.batch_stats)
  assert_same_params(states[False], states[True])
  # Two blocks of two conv-BN layers, then the head: 5 layers; BCE of the logit.
  assert_losses_track(histories, {"loss": loss_bound(5)})


def test_prepnet_autoencoder_and_e_cov():
  rng = np.random.default_rng(1)
  batch = {"image": jnp.asarray(rng.normal(size=(4, 16, 16, 3)), jnp.float32),
           "label": jnp.asarray([0, 1, 1, 0], jnp.int32)}
  histories = {}
  params = {}
  for half in MODES:
    config = load_config("prepnet")
    config.half_precision = half
    config.preprocess.image_size = 16
    config.ae.depth, config.ae.width_multiplier = 2, 0.0625
    config.e_cov.name, config.e_cov.width_multiplier, config.e_cov.kwargs = "small_cnn", 1.0, {"widths": (8, 16)}
    ae = prepnet_networks.make_ae_state(config, jax.random.key(0), 1)
    cov = prepnet_networks.make_classifier_state(config, config.e_cov, 1, jax.random.key(1), 1, config.optim.cov)
    params[half] = host_copy((ae.params, cov.params))
    ae_rec_step = checked_step(prepnet_steps.ae_rec_step, ae, batch, half=half)
    cov_step = checked_step(prepnet_steps.cov_step, cov, ae, batch, half=half)
    histories[half] = []
    for _ in range(STEPS):
      ae, out = ae_rec_step(ae, batch)
      cov, out_cov = cov_step(cov, ae, batch)
      histories[half].append(_floats({**out, **out_cov}))
    assert_float32_state(ae.params, ae.opt_state, ae.batch_stats, cov.params, cov.opt_state, cov.batch_stats)
  assert_same_params(params[False], params[True])
  # U-Net depth 2: encoder 2+2 convs, centre 2, dec2 2, dec1, final = 10 layers; E_cov (5
  # layers) sees the AE's output: 15.
  assert_losses_track(histories, {"l_rec": loss_bound(10), "l_cov": loss_bound(15)})


def _generative_config(name: str, half: bool):
  c = load_config(name)
  c.half_precision = half
  c.preprocess.image_size = 16
  c.model.width_multiplier = 0.0625
  c.model.latent_dim = 8
  if "conv_filters" in c.model:
    c.model.conv_filters = (8, 16)
  return c


def _train_family(make_family, name: str, batch: dict, loss_names, params_of) -> tuple[dict, dict]:
  """Loss histories and (initial params, final state) per precision of a generative family."""
  mesh = sharding.make_mesh()
  histories, states = {}, {}
  for half in MODES:
    family = make_family(_generative_config(name, half), mesh)
    state = family.init_state(jax.random.key(0))
    start = host_copy(params_of(state))
    train_step = checked_step(family.train_step, state, batch, half=half)
    histories[half] = []
    for _ in range(STEPS):
      state, scalars = train_step(state, batch)
      histories[half].append(_floats({k: scalars[k] for k in loss_names}))
    states[half] = (start, state)
  return histories, states


def _image_batch(seed: int, n: int = 4, size: int = 16):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.uniform(-1, 1, (n, 1, size, size, 1)), jnp.float32),
          "label": jnp.zeros((n, 1), jnp.int32)}


def test_dcgan():
  histories, states = _train_family(gan_train.make_family, "dcgan", _image_batch(2), ("d_loss", "g_loss"),
                                    lambda s: (s.generator.params, s.critic.params))
  (f32_start, _), (bf16_start, bf16_end) = states[False], states[True]
  assert_same_params(f32_start, bf16_start)
  for net in (bf16_end.generator, bf16_end.critic):
    assert_float32_state(net.params, net.opt_state, net.batch_stats)
  # 16²: G is 3 transposed convs (2 with BatchNorm), D 3 convs; both losses go through G then D.
  assert_losses_track(histories, {"d_loss": loss_bound(6), "g_loss": loss_bound(6)})


def test_vae():
  histories, states = _train_family(vae_train.make_family, "vae", _image_batch(3), ("loss", "reconstruction", "kl"),
                                    lambda s: s.vae.params)
  (f32_start, _), (bf16_start, bf16_end) = states[False], states[True]
  assert_same_params(f32_start, bf16_start)
  assert_float32_state(bf16_end.vae.params, bf16_end.vae.opt_state, bf16_end.vae.batch_stats)
  # Encoder 2 convs + the μ/log σ² head (KL: 3 layers); decoder dense + 2 transposed convs (6 in all).
  assert_losses_track(histories, {"loss": loss_bound(6), "reconstruction": loss_bound(6), "kl": loss_bound(3)})


# --- the other architectures: traced in bfloat16 (not compiled or run) ------------------------------

def assert_bfloat16_step(jitted, *args):
  """(b) on the step's jaxpr, and (a) on its outputs: new state and scalars are all float32."""
  traced = jitted.trace(*args)
  assert_compute_dtype(traced.jaxpr.jaxpr, True)
  assert_float32_state(traced.jaxpr.out_avals)


@pytest.mark.parametrize("name", ["vgg11_bn", "resnet18", "covidnet"])
def test_other_classifiers_compute_in_bfloat16(name):
  config = tiny_classifier_config(**{"half_precision": True, "model.name": name, "model.width_multiplier": 0.0625})
  model = classifier_factory.build_classifier(config)
  state = jax.eval_shape(lambda: classifier_factory.create_classifier_state(config, model, jax.random.key(0), 1, 1))
  batch = {"image": jax.ShapeDtypeStruct((4, 32, 32, 3), jnp.float32), "label": jax.ShapeDtypeStruct((4,), jnp.int32)}
  assert_bfloat16_step(classifier_train.train_step, state, batch, None)


@pytest.mark.parametrize("config_name,kind", [("gan", "gan"), ("cgan", "cgan"), ("dcgan", "dcgan_upsample"),
                                              ("wgan_gp", "wgan_gp"), ("vaegan", "vaegan")])
def test_other_generative_models_compute_in_bfloat16(config_name, kind):
  """The MLP GAN and CGAN, the thesis's up-sampling DCGAN, WGAN-GP (its gradient penalty taken on
  float32 interpolates) and the VAE-GAN."""
  config = _generative_config(config_name, True)
  config.model.kind = kind
  if "mlp_g_hidden" in config.model:
    config.model.mlp_g_hidden, config.model.mlp_d_hidden = (16, 16), (16, 16)
  make_family = vaegan_train.make_family if kind == "vaegan" else gan_train.make_family
  family = make_family(config, sharding.make_mesh())
  state = jax.eval_shape(family.init_state, jax.random.key(0))
  k = family.batches_per_step
  batch = {"image": jax.ShapeDtypeStruct((4, k, 16, 16, 1), jnp.float32),
           "label": jax.ShapeDtypeStruct((4, k), jnp.int32)}
  assert_bfloat16_step(family.train_step, state, batch)


# --- StyleGAN2 -------------------------------------------------------------------------------------

def _stylegan2_config(half: bool):
  config = load_config("stylegan2")
  config.half_precision = half
  config.preprocess.image_size = 8
  config.model.z_dim, config.model.w_dim, config.model.mapping_layers = 16, 16, 1
  config.model.channel_base, config.model.channel_max = 64, 8
  config.batch_size = 4
  # Regularisers every step inside the main phases: one compiled G and one D step, R1 and path length included.
  config.g_reg_interval, config.d_reg_interval = 0, 0
  return config


def test_stylegan2_training():
  rng = np.random.default_rng(4)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 1)), jnp.float32), "label": jnp.zeros(4, jnp.int32)}
  histories, starts = {}, {}
  for half in MODES:
    config = _stylegan2_config(half)
    hp = stylegan2_hparams.resolve_hparams(config, num_devices=1)
    # As the task builds it, without DiffAugment ops (they move float32 pixels, and lengthen the compile).
    setup = sg2_steps.make_setup(hp, diffaugment.DiffAugment(""), dtype=precision.compute_dtype(config))
    state = sg2_steps.create_state(setup, 0)
    starts[half] = host_copy((state.g.params, state.d.params))
    # `train_step` with both regularisers every step: G phase 'both', D phase 'both', then the EMA.
    g_step = checked_step(sg2_steps.g_step_jit, setup, state, batch, "both", half=half)
    d_step = checked_step(sg2_steps.d_step_jit, setup, state, batch, "both", half=half)
    ema_step = sg2_steps.ema_step_jit.lower(setup, state).compile(FAST_COMPILE)
    histories[half] = []
    for _ in range(STEPS):
      state, g_scalars = g_step(state, batch)
      state, d_scalars = d_step(state, batch)
      state = ema_step(state)
      histories[half].append(_floats({**g_scalars, **d_scalars}))
    assert_float32_state(state.g.params, state.g.opt_state, state.g.batch_stats, state.g.ema_params,
                         state.d.params, state.d.opt_state, state.pl_mean)
  assert_same_params(starts[False], starts[True])
  # 8²: G has 3 modulated convs + ToRGB on the longest path (4), D fromrgb and 2 convs, then the
  # 4×4 conv, fc and out (6): the logistic losses pass 10 layers; R1 squares the norm of D's input
  # gradient (6 layers, two passes), the path-length penalty that of G's w gradient (4, two passes).
  assert_losses_track(histories, {"g_loss": loss_bound(10), "d_loss": loss_bound(10),
                                  "r1_penalty": loss_bound(6, passes=2, power=2),
                                  "pl_penalty": loss_bound(4, passes=2, power=2)})


@pytest.mark.parametrize("magnitude", [1.0, 1e4])
def test_stylegan2_demodulation_is_safe_at_large_styles(magnitude):
  """(d): styles of magnitude 1e4 (in float16 (1e4)² would already overflow 65504) leave the
  demodulation coefficients and the modulated convolution finite and equal to float32's within
  the rounding bound: each of the k roundings on a path from an input to an output (x·s, w, the
  convolution output, the 2 × 4 filter-tap sums when up-sampling, the demodulation) errs by at
  most u relative to the magnitude there, so |bf16 − f32| ≤ k·u · (the same op on |x|, |w|, |s|)."""
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.normal(size=(2, 8, 8, 16)), jnp.float32)
  weight = jnp.asarray(rng.normal(size=(3, 3, 16, 8)), jnp.float32)
  styles = jnp.asarray(rng.uniform(0.5, 2.0, (2, 16)) * magnitude, jnp.float32)
  dcoefs = sg2.demodulation_coefficients(weight, styles)
  assert dcoefs.dtype == jnp.float32 and np.all(np.isfinite(dcoefs)) and np.all(dcoefs > 0)
  # The demodulated per-sample weights w·s·d have unit norm per output map, also once in bfloat16.
  demodulated = weight[None] * styles[:, None, None, :, None] * dcoefs[:, None, None, None, :]
  norms = jnp.sqrt(jnp.sum(jnp.square(demodulated.astype(jnp.bfloat16).astype(jnp.float32)), axis=(1, 2, 3)))
  np.testing.assert_allclose(norms, 1.0, rtol=2 * BF16_UNIT_ROUNDOFF)
  for up, roundings in ((1, 4), (2, 12)):
    reference = sg2.modulated_conv2d(x, weight, styles, up=up)
    half = sg2.modulated_conv2d(x.astype(jnp.bfloat16), weight, styles, up=up)
    assert half.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(half, np.float32)))
    magnitudes = sg2.modulated_conv2d(jnp.abs(x), jnp.abs(weight), jnp.abs(styles), up=up)
    error = np.abs(np.asarray(half, np.float32) - np.asarray(reference))
    assert np.all(error <= roundings * BF16_UNIT_ROUNDOFF * np.asarray(magnitudes)), up
