"""PrepNet losses against hand-computed values (reference §3)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prepnet_jax.losses import classification as losses


def test_reconstruction_l1_and_l2():
  x = jnp.asarray([[0.0, 1.0], [2.0, -1.0]])
  y = jnp.asarray([[0.5, 1.0], [0.0, 1.0]])
  assert float(losses.reconstruction_loss(x, y, "l1")) == pytest.approx((0.5 + 0 + 2 + 2) / 4)
  assert float(losses.reconstruction_loss(x, y, "l2")) == pytest.approx((0.25 + 0 + 4 + 4) / 4)
  with pytest.raises(ValueError, match="'l1' or 'l2'"):
    losses.reconstruction_loss(x, y, "l3")


def test_imaging_cross_entropy():
  logits = jnp.asarray([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
  domains = jnp.asarray([0, 2])
  p0 = np.exp(2) / (np.exp(2) + 1 + np.exp(-1))
  expected = (-np.log(p0) - np.log(1 / 3)) / 2
  assert float(losses.imaging_loss(logits, domains)) == pytest.approx(expected, rel=1e-6)


def test_pseudo_label_loss_logits_and_probs():
  logits = jnp.asarray([[1.0, -2.0], [0.5, 0.0]])
  rng = jax.random.key(3)
  noise = 0.005 * np.asarray(jax.random.normal(rng, logits.shape))
  assert float(losses.pseudo_label_loss(logits, rng, 0.005, "logits")) == pytest.approx(
      np.abs(np.asarray(logits) - noise).mean(), rel=1e-6)
  probs = np.asarray(jax.nn.softmax(logits, -1))
  assert float(losses.pseudo_label_loss(logits, rng, 0.005, "probs")) == pytest.approx(
      np.abs(probs - (0.5 + noise)).mean(), rel=1e-5)
  # Zero logits are the optimum of the logits form: loss ≈ E|noise| = σ·sqrt(2/π).
  big = jnp.zeros((4096, 3))
  assert float(losses.pseudo_label_loss(big, rng, 0.005)) == pytest.approx(0.005 * np.sqrt(2 / np.pi), rel=0.05)


def test_covid_bce_and_weighted_ce():
  logits = jnp.asarray([[0.0], [2.0], [-1.0]])
  labels = jnp.asarray([1, 0, 0])
  sig = lambda z: 1 / (1 + np.exp(-z))
  expected = (-np.log(sig(0.0)) - np.log(1 - sig(2.0)) - np.log(1 - sig(-1.0))) / 3
  assert float(losses.covid_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)
  # Class weights 1/1/6 (seed 002): weighted mean normalised by the summed weights.
  logits3 = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
  labels3 = jnp.asarray([0, 2])
  ce = -np.log(np.exp([1.0, 3.0]) / np.asarray([np.exp(1) + 2, 2 + np.exp(3)]))
  weighted = (1 * ce[0] + 6 * ce[1]) / 7
  assert float(losses.classification_loss(logits3, labels3, jnp.asarray([1.0, 1.0, 6.0]))) == pytest.approx(weighted, rel=1e-6)
