"""Temperature scaling and ECE on synthetic predictors whose calibration is known by construction."""

from __future__ import annotations

import numpy as np
import optax
import pytest
from scipy import optimize, special

from prepnet_jax.eval import calibration


def _calibrated_logits(rng: np.random.Generator, n: int, k: int, scale: float = 1.5):
  """Logits plus labels drawn from softmax(logits): a perfectly calibrated predictor."""
  logits = rng.normal(0.0, scale, size=(n, k))
  probs = special.softmax(logits, axis=-1)
  labels = (probs.cumsum(-1) < rng.random((n, 1))).sum(-1)
  return logits, labels


def test_overconfident_model_gets_t_near_its_scale_and_lower_nll_with_same_predictions():
  rng = np.random.default_rng(0)
  val_logits, val_labels = _calibrated_logits(rng, 20000, 3)
  test_logits, test_labels = _calibrated_logits(rng, 20000, 3)
  report = calibration.calibration_report(5.0 * val_logits, val_labels, 5.0 * test_logits, test_labels)
  assert report["temperature"] == pytest.approx(5.0, rel=0.05)
  scaled = calibration.probabilities(5.0 * test_logits, report["temperature"])
  np.testing.assert_array_equal(scaled.argmax(-1), test_logits.argmax(-1))
  test = report["test"]
  assert test["nll_after"] < 0.6 * test["nll_before"]
  assert test["ece_before"] > 0.15 and test["ece_after"] < 0.02
  assert test["nll_after"] == pytest.approx(calibration.nll(test_logits, test_labels), abs=0.01)


def test_temperature_of_already_calibrated_logits_is_one():
  logits, labels = _calibrated_logits(np.random.default_rng(1), 20000, 4)
  assert calibration.fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.04)


def test_ece_is_near_zero_when_calibrated_and_large_when_overconfident():
  rng = np.random.default_rng(2)
  logits, labels = _calibrated_logits(rng, 50000, 3)
  calibrated = calibration.ece(special.softmax(logits, -1), labels)
  overconfident = calibration.ece(special.softmax(4.0 * logits, -1), labels)
  assert calibrated < 0.02
  assert overconfident > 0.15


def test_binary_single_logit_uses_sigmoid_and_recovers_temperature():
  rng = np.random.default_rng(3)
  z = rng.normal(0.0, 2.0, size=20000)
  labels = (rng.random(z.size) < special.expit(z)).astype(int)
  np.testing.assert_allclose(calibration.probabilities(3.0 * z, 3.0), special.expit(z), rtol=1e-12)
  t_flat = calibration.fit_temperature(3.0 * z, labels)
  t_column = calibration.fit_temperature(3.0 * z[:, None], labels)
  assert t_flat == pytest.approx(3.0, rel=0.05)
  assert t_column == pytest.approx(t_flat, rel=1e-9)
  expected_nll = -np.mean(labels * np.log(special.expit(z)) + (1 - labels) * np.log(special.expit(-z)))
  assert calibration.nll(3.0 * z, labels, 3.0) == pytest.approx(expected_nll, rel=1e-10)


def test_nll_matches_optax_cross_entropy_and_its_log_t_gradient_is_exact():
  logits, labels = _calibrated_logits(np.random.default_rng(4), 500, 5)
  reference = optax.softmax_cross_entropy_with_integer_labels(logits / 2.0, labels).mean()
  assert calibration.nll(logits, labels, 2.0) == pytest.approx(float(reference), rel=1e-5)
  value = lambda s: calibration._nll_and_grad_in_log_t(s, logits, labels)[0]
  grad = lambda s: calibration._nll_and_grad_in_log_t(s, logits, labels)[1]
  assert optimize.check_grad(value, grad, np.array([0.3])) < 1e-6


def test_ece_hand_computed_with_gpleiss_bin_edges():
  # Binary P(class 1); top-label confidences 0.9, 0.9, 0.6, 0.6 with 5 bins:
  # bin (0.8,1.0]: conf 0.9, acc 1/2 → 0.5·0.4; 0.6 sits on an upper edge so it is in bin (0.4,0.6]:
  # conf 0.6, acc 1 → 0.5·0.4. ECE = 0.4.
  probs = np.array([0.9, 0.1, 0.6, 0.4])
  labels = np.array([1, 1, 1, 0])
  assert calibration.ece(probs, labels, n_bins=5) == pytest.approx(0.4)
  bins = calibration.classwise_reliability(probs, labels, class_index=1, n_bins=5)
  np.testing.assert_array_equal(bins["count"], [1, 1, 1, 0, 1])
  np.testing.assert_allclose(bins["confidence"][[0, 1, 2, 4]], [0.1, 0.4, 0.6, 0.9])
  np.testing.assert_allclose(bins["accuracy"][[0, 1, 2, 4]], [1.0, 0.0, 1.0, 1.0])
  assert np.isnan(bins["accuracy"][3])
  assert bins["ece"] == pytest.approx((0.9 + 0.4 + 0.4 + 0.1) / 4)


def test_bad_labels_are_named_in_the_error():
  with pytest.raises(ValueError, match=r"labels: expected integers in \[0, 3\)"):
    calibration.nll(np.zeros((2, 3)), np.array([0, 3]))
  with pytest.raises(ValueError, match="expected 2 labels"):
    calibration.ece(np.full((2, 3), 1 / 3), np.array([0]))


def test_model_calibration_file_is_what_predict_reads(tmp_path):
  """The one writer every job calls: JSON report (+ figures) that `read_temperature` reads back."""
  rng = np.random.default_rng(5)
  val, test, external = (_calibrated_logits(rng, 400, 3) for _ in range(3))
  report = calibration.write_model_calibration(str(tmp_path), (4.0 * val[0], val[1]), ["a", "b", "c"],
                                               test=(4.0 * test[0], test[1]),
                                               other_sets={"external": (4.0 * external[0], external[1])})
  assert report["temperature"] == calibration.fit_temperature(4.0 * val[0], val[1])
  assert report["fitted_on"] == "val" and set(report) >= {"val", "test", "external", "n_bins"}
  assert report["test"]["n"] == 400 and report["test"]["nll_after"] < report["test"]["nll_before"]
  assert calibration.read_temperature(str(tmp_path)) == pytest.approx(report["temperature"])
  for name in ("val", "test", "external"):
    assert (tmp_path / "reports" / f"reliability_{name}.png").stat().st_size > 10_000
  assert "T = " in (tmp_path / "reports" / "calibration.md").read_text()
  assert calibration.read_temperature(str(tmp_path / "none")) is None
  no_test = calibration.calibration_report(val[0], val[1])
  assert "test" not in no_test and set(no_test["val"]) == set(report["val"])
  (tmp_path / "reports" / "calibration.json").write_text('{"temperature": -1}')
  with pytest.raises(ValueError, match="'temperature' must be a positive number"):
    calibration.read_temperature(str(tmp_path))


def test_a_fit_that_stops_at_the_bound_says_so():
  """Logits unrelated to the labels: the NLL keeps falling towards uniform probabilities, so the
  fit stops at T = 100 and the report names it; informative logits get no note."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 400)
  noise = rng.choice([-8.0, 8.0], size=400)
  report = calibration.calibration_report(noise, labels)
  assert report["temperature"] == pytest.approx(100.0, rel=1e-3) and "upper bound" in report["at_bound"]
  informative = np.where(labels == 1, 2.0, -2.0) + rng.normal(0, 1.0, 400)
  assert calibration.calibration_report(informative, labels)["at_bound"] is None
