"""Each PrepNet step updates exactly the networks the thesis says it does (reference §1.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from prepnet_jax import models
from prepnet_jax.models.unet import UNetVGG16AE
from prepnet_jax.runtime.state import create_train_state
from prepnet_jax.tasks.prepnet import steps

SIZE = 32


@pytest.fixture(scope="module")
def nets():
  x = jnp.zeros((1, SIZE, SIZE, 3))
  ae = create_train_state(UNetVGG16AE(width_multiplier=0.0625, depth=3), optax.adam(1e-2), jax.random.key(0), x)
  img = create_train_state(models.get_classifier("small_cnn", 3, width_multiplier=0.5), optax.adam(1e-2),
                           jax.random.key(1), x)
  cov = create_train_state(models.get_classifier("small_cnn", 1, width_multiplier=0.5), optax.adam(1e-2),
                           jax.random.key(2), x)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.normal(size=(4, SIZE, SIZE, 3)), jnp.float32),
           "label": jnp.asarray([0, 1, 1, 0]), "domain": jnp.asarray([0, 1, 2, 0])}
  return ae, img, cov, batch


# Host-side (numpy) copies and comparisons: eager jnp ops would compile one tiny XLA program per
# distinct parameter shape, which on CPU costs more than the steps under test.
def _copy(state):
  """A fresh copy (the steps donate their input states)."""
  def copy(a):
    if not isinstance(a, jax.Array):
      return a
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):  # typed PRNG keys have no numpy form
      return jnp.array(a, copy=True)
    return jnp.asarray(np.array(a))
  return jax.tree_util.tree_map(copy, state)


def _changed(before, after) -> bool:
  diffs = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                                 before.params, after.params)
  return any(jax.tree_util.tree_leaves(diffs))


def test_grayscale3_is_luma_replicated():
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 4, 4, 3)), jnp.float32)
  g = steps.grayscale3(x)
  expected = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
  np.testing.assert_allclose(g[..., 0], expected, rtol=1e-6)
  np.testing.assert_array_equal(g[..., 0], g[..., 2])


def test_which_step_updates_which_network(nets):
  ae, img, cov, batch = nets
  ae0, img0, cov0 = _copy(ae), _copy(img), _copy(cov)

  new_ae, out = steps.ae_rec_step(_copy(ae), batch)
  assert _changed(ae0, new_ae) and np.isfinite(out["l_rec"])

  new_img, out = steps.img_step(_copy(img), ae, batch)
  assert _changed(img0, new_img) and 0.0 <= float(out["img_acc"]) <= 1.0

  new_ae, out = steps.forget_step(_copy(ae), img, batch)
  assert _changed(ae0, new_ae) and not _changed(img0, img)
  assert float(out["l_auto"]) == pytest.approx(float(out["l_rec"]) + float(out["l_pseu"]), rel=1e-5)

  new_cov, out = steps.cov_step(_copy(cov), ae, batch, gray=True)
  assert _changed(cov0, new_cov) and not _changed(ae0, ae)

  new_ae, new_cov, out = steps.joint_cov_step(_copy(ae), _copy(cov), batch, eta_rec=1.0, eta_cov=2.0)
  assert _changed(ae0, new_ae) and _changed(cov0, new_cov)
  assert float(out["l_total"]) == pytest.approx(float(out["l_rec"]) + 2.0 * float(out["l_cov"]), rel=1e-5)

  new_ae, new_cov, out = steps.e2e_step(_copy(ae), _copy(cov), img, batch, batch)
  assert _changed(ae0, new_ae) and _changed(cov0, new_cov) and not _changed(img0, img)
  total = float(out["l_rec"]) + float(out["l_pseu"]) + float(out["l_cov"])
  assert float(out["l_total"]) == pytest.approx(total, rel=1e-5)

  new_ae, out = steps.adv_step(_copy(ae), img, batch)
  assert float(out["l_adv"]) == pytest.approx(float(out["l_rec"]) - float(out["l_img"]), rel=1e-5)
  assert _changed(ae0, new_ae)


def test_forget_step_pushes_img_logits_towards_zero(nets):
  ae, img, _, batch = nets
  ae = _copy(ae)
  first = None
  for _ in range(15):
    ae, out = steps.forget_step(ae, img, batch, eta_rec=0.0, eta_pseu=1.0)
    first = first if first is not None else float(out["l_pseu"])
  assert float(out["l_pseu"]) < first


def test_networks_that_differ_only_in_an_ignored_step_count_share_their_compiled_steps():
  """Up-sampled rows have more steps per epoch; with a constant learning rate their AE and E_img
  must be the very same (hashed-static) module and optimizer, so no step compiles twice."""
  from configs import prepnet as prepnet_config
  from prepnet_jax.models import prepnet_networks
  config = prepnet_config.get_config()
  key = jax.random.key(0)
  a = prepnet_networks.make_ae_state(config, key, 39)
  b = prepnet_networks.make_ae_state(config, key, 74)
  assert a.tx is b.tx and a.apply_fn == b.apply_fn
  img_a = prepnet_networks.make_classifier_state(config, config.e_img, 3, key, 39, config.optim.img)
  img_b = prepnet_networks.make_classifier_state(config, config.e_img, 3, key, 74, config.optim.img)
  assert img_a.tx is img_b.tx
  config.optim.img.schedule = "exponential"  # a schedule that counts epochs: must differ
  img_c = prepnet_networks.make_classifier_state(config, config.e_img, 3, key, 39, config.optim.img)
  img_d = prepnet_networks.make_classifier_state(config, config.e_img, 3, key, 74, config.optim.img)
  assert img_c.tx is not img_d.tx
