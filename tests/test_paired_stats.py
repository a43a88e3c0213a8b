"""Paired-seed statistics, the verdict rule, gap closed and patient-level aggregation against
hand-computed numbers; the forest plot and heatmap grid write readable PNGs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from prepnet_jax.eval import figures, paired_stats

# Student-t quantiles from printed tables (independent of scipy): t_{4, 0.975} and t_{1, 0.975}.
T_4_975 = 2.7764451051977987
T_1_975 = 12.706204736174705

A = [0.70, 0.72, 0.75, 0.71, 0.74]
B = [0.68, 0.70, 0.70, 0.70, 0.71]


def test_scipy_agrees_with_the_table_quantiles():
  assert stats.t.ppf(0.975, 4) == pytest.approx(T_4_975, rel=1e-13)
  assert stats.t.ppf(0.975, 1) == pytest.approx(T_1_975, rel=1e-13)


def test_paired_difference_by_hand():
  # d = a − b = [0.02, 0.02, 0.05, 0.01, 0.03]; mean = 0.13 / 5 = 0.026.
  # deviations from the mean: −0.006, −0.006, 0.024, −0.016, 0.004
  # squares: 0.000036 + 0.000036 + 0.000576 + 0.000256 + 0.000016 = 0.00092
  # sd (ddof=1) = sqrt(0.00092 / 4) = sqrt(0.00023) = 0.015165750888103102
  # se = sd / sqrt(5) = sqrt(0.000046) = 0.006782329983125268
  # half width = 2.7764451051977987 · 0.006782329983125268 = 0.01883076688348442
  # CI = 0.026 ± 0.01883076688348442 = [0.007169233116515579, 0.04483076688348442]
  diff = paired_stats.paired_difference(A, B)
  assert diff["n"] == 5
  np.testing.assert_allclose(diff["values"], [0.02, 0.02, 0.05, 0.01, 0.03], atol=1e-15)
  assert diff["mean"] == pytest.approx(0.026, abs=1e-15)
  assert diff["sd"] == pytest.approx(0.015165750888103102, abs=1e-14)
  assert diff["t_crit"] == pytest.approx(T_4_975, rel=1e-13)
  assert diff["ci_low"] == pytest.approx(0.007169233116515579, abs=1e-12)
  assert diff["ci_high"] == pytest.approx(0.04483076688348442, abs=1e-12)
  assert diff["ci_low"] == pytest.approx(0.026 - T_4_975 * math.sqrt(0.000046), abs=1e-12)


def test_a_lower_confidence_gives_a_narrower_interval():
  wide, narrow = paired_stats.paired_difference(A, B, 0.99), paired_stats.paired_difference(A, B, 0.80)
  assert narrow["ci_low"] > paired_stats.paired_difference(A, B)["ci_low"] > wide["ci_low"]
  assert narrow["t_crit"] == pytest.approx(stats.t.ppf(0.90, 4))


def test_verdicts_for_positive_negative_and_straddling_intervals():
  positive = paired_stats.paired_difference(A, B)
  negative = paired_stats.paired_difference(B, A)  # the same CI mirrored: [−0.0448, −0.0072]
  straddling = paired_stats.paired_difference([0.72, 0.69, 0.73, 0.68], [0.70, 0.70, 0.70, 0.70])
  # d = [0.02, −0.01, 0.03, −0.02], mean 0.005: the interval must contain 0.
  assert straddling["ci_low"] < 0 < straddling["ci_high"]
  assert paired_stats.verdict(positive) == "improves"
  assert paired_stats.verdict(negative) == "hurts"
  assert paired_stats.verdict(straddling) == "no evidence"
  # For a lower-is-better metric (ECE) the same numbers mean the opposite.
  assert paired_stats.verdict(positive, what_is_better="lower") == "hurts"
  assert paired_stats.verdict(negative, what_is_better="lower") == "improves"
  assert paired_stats.verdict(straddling, what_is_better="lower") == "no evidence"
  with pytest.raises(ValueError, match="what_is_better"):
    paired_stats.verdict(positive, what_is_better="bigger")


def test_one_seed_has_no_interval_and_no_evidence():
  diff = paired_stats.paired_difference([0.8], [0.6])
  assert diff["n"] == 1 and diff["mean"] == pytest.approx(0.2)
  assert all(math.isnan(diff[k]) for k in ("sd", "ci_low", "ci_high", "t_crit"))
  assert paired_stats.verdict(diff) == "no evidence"


def test_non_finite_pairs_are_dropped_pairwise():
  # Kept: seeds 0 and 3 → d = [0.02, 0.01], mean 0.015, sd = sqrt(2 · 0.005² / 1) = sqrt(5e-5);
  # CI = 0.015 ± 12.706204736174705 · sqrt(5e-5) / sqrt(2) = 0.015 ± 0.06353102368087352.
  diff = paired_stats.paired_difference([0.70, np.nan, 0.75, 0.71, np.inf], [0.68, 0.70, np.nan, 0.70, 0.7])
  assert diff["n"] == 2
  np.testing.assert_allclose(diff["values"], [0.02, 0.01], atol=1e-15)
  assert diff["mean"] == pytest.approx(0.015, abs=1e-15)
  assert diff["sd"] == pytest.approx(math.sqrt(5e-5), abs=1e-14)
  assert diff["ci_low"] == pytest.approx(-0.04853102368087352, abs=1e-12)
  assert diff["ci_high"] == pytest.approx(0.07853102368087352, abs=1e-12)
  assert paired_stats.verdict(diff) == "no evidence"
  only_one = paired_stats.paired_difference([0.7, np.nan], [0.6, 0.5])
  assert only_one["n"] == 1 and paired_stats.verdict(only_one) == "no evidence"


def test_unequal_lengths_are_refused():
  with pytest.raises(ValueError, match="5 values against 4"):
    paired_stats.paired_difference(A, B[:4])


def test_gap_closed_by_hand():
  # Original: 0.90 within site, 0.60 across sites → gap 0.30; a row at 0.75 across closes 0.15/0.30.
  assert paired_stats.gap_closed(0.75, 0.60, 0.90) == pytest.approx(0.5)
  assert paired_stats.gap_closed(0.60, 0.60, 0.90) == 0.0
  assert paired_stats.gap_closed(0.54, 0.60, 0.90) == pytest.approx(-0.2)  # worse than untreated
  assert math.isnan(paired_stats.gap_closed(0.75, 0.80, 0.80))  # no gap
  assert math.isnan(paired_stats.gap_closed(0.75, 0.85, 0.80))  # negative gap
  assert math.isnan(paired_stats.gap_closed(0.75, np.nan, 0.80))


# Slices of three patients, out of order: p2 has slices 0 and 4, p1 slices 1 and 2, p3 slice 3.
PATIENTS = ["p2", "p1", "p1", "p3", "p2"]
PROBS = [0.9, 0.2, 0.4, 0.7, 0.5]
LABELS = [1, 0, 0, 1, 1]


def test_patient_level_mean_and_max_by_hand():
  probs, labels, ids = paired_stats.patient_level(PROBS, LABELS, PATIENTS, how="mean")
  # p1: (0.2 + 0.4) / 2 = 0.3; p2: (0.9 + 0.5) / 2 = 0.7; p3: 0.7
  np.testing.assert_allclose(probs, [0.3, 0.7, 0.7], atol=1e-15)
  np.testing.assert_array_equal(labels, [0, 1, 1])
  np.testing.assert_array_equal(ids, ["p1", "p2", "p3"])
  probs, labels, ids = paired_stats.patient_level(PROBS, LABELS, PATIENTS, how="max")
  np.testing.assert_array_equal(probs, [0.4, 0.9, 0.7])
  np.testing.assert_array_equal(labels, [0, 1, 1])
  np.testing.assert_array_equal(ids, ["p1", "p2", "p3"])
  column, _, _ = paired_stats.patient_level(np.asarray(PROBS)[:, None], LABELS, PATIENTS)
  np.testing.assert_allclose(column, [0.3, 0.7, 0.7], atol=1e-15)


def test_patient_level_refuses_bad_input():
  with pytest.raises(ValueError, match="'p1'.*different labels"):
    paired_stats.patient_level(PROBS, [1, 0, 1, 1, 1], PATIENTS)
  with pytest.raises(ValueError, match=r"how='median'.*\('mean', 'max'\)"):
    paired_stats.patient_level(PROBS, LABELS, PATIENTS, how="median")
  with pytest.raises(ValueError, match="no slices"):
    paired_stats.patient_level([], [], [])
  with pytest.raises(ValueError, match="5 probabilities, 4 labels"):
    paired_stats.patient_level(PROBS, LABELS[:4], PATIENTS)
  with pytest.raises(ValueError, match="shape"):
    paired_stats.patient_level(np.zeros((5, 2)), LABELS, PATIENTS)


def _png_size(path) -> tuple[int, int]:
  with Image.open(path) as image:
    assert image.format == "PNG"
    return image.size


ROWS = ["PrepNet", "histogram matching", "per-site z-score"]
PANELS = {
    "Δ Cross": [(2.6, 0.7, 4.5), (-3.0, -5.0, -1.0), (0.5, -1.5, 2.5)],
    "Δ Within": [(0.1, -0.4, 0.6), (1.0, np.nan, np.nan), (np.nan, np.nan, np.nan)],
}


def test_forest_plot_writes_a_png_that_grows_with_the_rows(tmp_path):
  path = figures.forest_plot(str(tmp_path / "forest.png"), ROWS, PANELS, "PrepNet vs baselines (5 seeds)")
  width, height = _png_size(path)
  assert 500 <= width <= 1500 and 150 <= height <= 600
  many = figures.forest_plot(str(tmp_path / "forest12.png"), ROWS * 4,
                             {k: v * 4 for k, v in PANELS.items()}, "twelve rows")
  assert _png_size(many)[1] > height + 200


def test_forest_plot_refuses_a_panel_of_the_wrong_length(tmp_path):
  with pytest.raises(ValueError, match="'Δ Cross' has 2 entries for 3 rows"):
    figures.forest_plot(str(tmp_path / "bad.png"), ROWS, {"Δ Cross": PANELS["Δ Cross"][:2]}, "bad")


def test_cross_site_heatmap_grid_writes_a_png(tmp_path):
  rng = np.random.default_rng(0)
  sites = ["site A", "site B", "site C"]
  matrices = {name: rng.uniform(0.5, 1.0, (3, 3)) for name in ["Original", "PrepNet", "hist", "z", "CLAHE"]}
  matrices["CLAHE"][0, 1] = np.nan
  path = figures.cross_site_heatmap_grid(str(tmp_path / "grid.png"), matrices, sites, sites, "Cross-site")
  width, height = _png_size(path)
  assert 800 <= width <= 2500 and 300 <= height <= 1500  # 4 columns × 2 lines
  with pytest.raises(ValueError, match="'PrepNet' of shape \\(2, 3\\)"):
    figures.cross_site_heatmap_grid(str(tmp_path / "bad.png"), {"PrepNet": np.zeros((2, 3))}, sites, sites, "x")
