"""The PrepNet evidence experiment: its baselines, AdaBN's statistics, the like-with-like
diagnostics and the generated report (configs/prepnet_evidence.py, quick variant)."""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import load_config, tiny_prepnet_config
from prepnet_jax.eval import prepnet_layout
from prepnet_jax.models import domain_adversarial, prepnet_networks
from prepnet_jax.runtime.state import create_train_state
from prepnet_jax.tasks.prepnet import baselines, diagnostics, evidence, job as prepnet, steps, training_data
from prepnet_jax.eval.prepnet_autoencoder import grayscale3


def test_gradient_reversal_flips_and_scales_the_gradient_only():
  w = jnp.asarray([1.0, -2.0, 3.0])
  x = jnp.asarray([0.5, 0.25, -1.0])
  value, grad = jax.value_and_grad(lambda x: jnp.sum(domain_adversarial.gradient_reversal(x, 0.3) * w))(x)
  assert float(value) == pytest.approx(float(jnp.sum(x * w)))  # identity forward
  np.testing.assert_allclose(np.asarray(grad), -0.3 * np.asarray(w), rtol=1e-6)
  # Ganin's ramp: 0 at the start, 2/(1+e^-10)-1 = 0.9999092 at the end, 2/(1+e^-5)-1 at half-way.
  assert float(domain_adversarial.ganin_lambda(0.0)) == 0.0
  assert float(domain_adversarial.ganin_lambda(0.5)) == pytest.approx(2 / (1 + np.exp(-5)) - 1, rel=1e-6)
  assert float(domain_adversarial.ganin_lambda(1.0)) == pytest.approx(0.9999092, rel=1e-6)


def _dann_state(config, num_domains=2):
  return prepnet_networks.make_classifier_state(config, config.e_cov, 1, jax.random.key(0), 1, config.optim.cov,
                                                origin_domains=num_domains)


def test_dann_step_trains_the_origin_head_and_leaves_the_covid_output_a_plain_classifier():
  config = tiny_prepnet_config([dict(name="DANN", overrides={"schedule": "none", "baselines.dann_weight": 1.0})])
  state = _dann_state(config)
  assert {"classifier", "origin_hidden", "origin_out"} <= set(state.params)
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32), "label": rng.integers(0, 2, 8),
           "domain": np.zeros(8, np.int32)}
  batch_all = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32), "domain": np.repeat([0, 1], 4)}
  before = jax.device_get(state.params)
  logits_before = np.asarray(steps.cov_logits(state, None, batch["image"]))
  new, out = steps.dann_cov_step(state, batch, batch_all, np.float32(0.5))
  assert logits_before.shape == (8, 1)  # evaluation sees the one-logit COVID classifier
  for key in ("l_cov", "l_origin", "origin_acc"):
    assert np.isfinite(float(out[key]))
  assert float(out["l_origin"]) == pytest.approx(np.log(2), abs=0.3)  # a fresh 2-way head is near chance
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), before, jax.device_get(new.params))
  assert all(jax.tree.leaves(changed["origin_out"])) and any(jax.tree.leaves(changed["classifier"]))


def test_the_reversed_origin_gradient_reaches_the_features_with_the_opposite_sign():
  """With reversal r, E_cov's feature parameters get (COVID gradient) − r × (origin gradient)."""
  config = tiny_prepnet_config([dict(name="DANN", overrides={"schedule": "none"})])
  state = _dann_state(config)
  x = np.random.default_rng(1).normal(size=(6, 32, 32, 3)).astype(np.float32)
  domains = jnp.asarray([0, 1, 0, 1, 0, 1])

  def origin_loss(params, r):
    (_, origin), _ = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, x, True, r,
                                    method="both", rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(origin, domains).mean()
  g_plus = jax.grad(origin_loss)(state.params, -1.0)   # r = −1: the plain (un-reversed) gradient
  g_rev = jax.grad(origin_loss)(state.params, 0.5)
  feat_plus, feat_rev = jax.tree.leaves(g_plus["classifier"]), jax.tree.leaves(g_rev["classifier"])
  nonzero = [(a, b) for a, b in zip(feat_plus, feat_rev) if np.any(np.asarray(a) != 0)]
  assert nonzero
  for a, b in nonzero:
    np.testing.assert_allclose(np.asarray(b), -0.5 * np.asarray(a), rtol=2e-4, atol=1e-7)
  np.testing.assert_allclose(np.asarray(g_rev["origin_out"]["kernel"]), np.asarray(g_plus["origin_out"]["kernel"]),
                             rtol=1e-5)  # the head itself learns normally


class _DenseBN(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.Dense(4)(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.8)(y)


def test_adabn_statistics_equal_the_site_mean_and_variance_over_chunks(monkeypatch):
  """Re-estimated BatchNorm statistics = numpy mean/var of the layer's input over all the site's images,
  whatever the momentum, pooled exactly over chunks (21 images in chunks of 8, 8, 5)."""
  model = _DenseBN()
  images = np.random.default_rng(2).normal(loc=3.0, scale=2.0, size=(21, 5)).astype(np.float32)
  state = create_train_state(model, optax.sgd(0.1), jax.random.key(0), jnp.zeros((1, 5)))
  monkeypatch.setattr(baselines, "ADABN_CHUNK", 8)
  adapted = baselines.site_adapted(state, images, jnp.asarray)
  y = images.astype(np.float64) @ np.asarray(state.params["Dense_0"]["kernel"], np.float64) \
      + np.asarray(state.params["Dense_0"]["bias"], np.float64)
  stats = adapted.batch_stats["BatchNorm_0"]
  np.testing.assert_allclose(stats["mean"], y.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats["var"], y.var(0), rtol=1e-4, atol=1e-5)


def test_diagnostics_compare_like_with_like_for_grayscaled_rows(tmp_path, monkeypatch):
  """A 'harmoniser' that only grayscales must reconstruct a grayscaled row's input perfectly: both
  sides of PSNR/SSIM are grayscaled (before, raw colour was compared with grayscaled output)."""
  config = tiny_prepnet_config([dict(name="Gray", overrides={"grayscale_cov": True})])
  config = prepnet_layout.row_config(config, config.rows[0], 0)
  data = training_data.Data(config)
  monkeypatch.setattr(diagnostics, "_reconstruct_all",
                      lambda run, src: np.asarray(grayscale3(jnp.asarray(src.column("image")))))

  class _Run:
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))

  class _Writer:
    def write_images(self, *args):
      pass
  result = diagnostics.run_all(config, data, _Run(), str(tmp_path), "gray/diagnostics", _Writer())
  assert result["comparison"] == "grayscaled raw vs grayscaled AE output"
  for site in ("sars", "ucsd"):
    assert result["reconstruction"][site]["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert result["reconstruction"][site]["psnr"] > 60.0


def test_standardisation_rows_standardise_every_e_cov_batch_and_need_no_ae():
  config = tiny_prepnet_config([dict(name="Nyul", overrides={"schedule": "none", "baselines.standardise": "nyul"})])
  rc = prepnet_layout.row_config(config, config.rows[0], 0)
  data = training_data.Data(rc)
  fitted = baselines.standardiser(rc, data)
  ref = data.splits[(0, "train")].column("image")
  other = data.splits[(1, "train")]
  mapped = fitted(other.column("image"), other.column("domain"))
  # the other site's percentiles land on the reference site's (per channel)
  for c in range(3):
    np.testing.assert_allclose(np.percentile(mapped[..., c], [10, 50, 90]),
                               np.percentile(ref[..., c], [10, 50, 90]), atol=0.05)
  with pytest.raises(ValueError, match="schedule='none'"):
    bad = prepnet_layout.row_config(config, dict(name="x", overrides={"baselines.standardise": "nyul"}), 0)
    baselines.standardiser(bad, data)


def _quick_evidence_config(tmp_path, rows: tuple[str, ...], seeds=(0, 1)):
  """configs/prepnet_evidence.py's named rows on the tiny phantom (3 sites, 32 px, small CNNs, one
  epoch per phase), E_cov trained on one site (+ the leave-one-site-out pairs where a row asks)."""
  c = load_config("prepnet_evidence")
  tiny = tiny_prepnet_config(c.rows)
  for key in ("data", "preprocess", "ae", "e_img", "e_cov", "num_epochs", "batch_size", "diagnostics"):
    c[key] = tiny[key]
  c.data.train = ("phantom_ct/sars", "phantom_ct/ucsd", "phantom_ct/mosmed")
  c.data.phantom_overrides = {"num_patients": 18, "image_size": 32}
  c.cov_train_sets = (("phantom_ct/sars",),)
  c.preprocess.augment = load_config("prepnet").preprocess.augment
  c.rows = tuple(r for r in c.rows if r["name"] in rows)
  c.comparisons = tuple(p for p in c.comparisons if set(p) <= set(rows))
  c.seeds = seeds
  c.evidence_page = str(tmp_path / "docs" / "prepnet_evidence.md")
  return c


def test_every_baseline_row_runs(tmp_path):
  """One seed of each baseline row: standardisation (Nyúl, z-scoring), BigAug, DANN."""
  names = ("Nyúl standardisation", "Per-site z-scoring", "BigAug augmentation", "DANN")
  config = _quick_evidence_config(tmp_path, names, seeds=(0,))
  config.evidence_page = ""
  config.baseline_row = names[0]
  tables = prepnet.train_and_evaluate(config, str(tmp_path / "w"))
  for name in names:
    assert np.isfinite(tables[name]["Cross"]["mean"]) and np.isfinite(tables[name]["Cross_patient"]["mean"])
    r = json.load(open(tmp_path / "w" / "rows" / prepnet_layout.row_slug(name) / "seed_0" / "results.json"))
    assert r["sars"]["protocol"] == "train_sets" and [k for k in r if not k.startswith("_")] == ["sars"]
    assert r["_wall_seconds"] > 0
  d = json.load(open(tmp_path / "w" / "rows" / "dann" / "seed_0" / "results.json"))
  assert np.isfinite(d["_curves"]["cov_sars"][0]["l_origin"])
  # Without a second seed nothing is established, and the report says so.
  text = (tmp_path / "w" / "reports" / "prepnet_evidence.md").read_text()
  assert "One seed: no interval can be formed" in text


def test_quick_evidence_experiment_writes_the_table_cis_figures_and_page(tmp_path):
  rows = ("Original", "Original + up-sampling + grayscaling", "PrepNet + up-sampling + grayscaling", "AdaBN")
  config = _quick_evidence_config(tmp_path, rows)
  workdir = tmp_path / "w"
  prepnet.train_and_evaluate(config, str(workdir))
  report = json.load(open(workdir / "reports" / "prepnet_evidence.json"))
  compared = {(c["row"], c["reference"]): c for c in report["comparisons"]}
  assert set(compared) == {(r, "Original") for r in rows[1:]} | {
      ("PrepNet + up-sampling + grayscaling", "Original + up-sampling + grayscaling")}
  for c in compared.values():
    for metric in ("Cross", "Within", "Cross_patient", "Within_patient"):
      m = c["metrics"][metric]
      assert m["n"] == 2 and m["verdict"] in ("improves", "hurts", "no evidence")
      assert m["ci_low"] <= m["mean"] <= m["ci_high"]
  # The CI is the paired t-interval of the per-seed differences of the table's values.
  tables = json.load(open(workdir / "reports" / "prepnet_table.json"))
  a = np.asarray(tables["AdaBN"]["Cross"]["values"]) * 100
  b = np.asarray(tables["Original"]["Cross"]["values"]) * 100
  m = compared[("AdaBN", "Original")]["metrics"]["Cross"]
  half = 12.706204736174705 * np.std(a - b, ddof=1) / np.sqrt(2)
  assert m["mean"] == pytest.approx(np.mean(a - b)) and m["ci_high"] == pytest.approx(np.mean(a - b) + half)
  # Leave-one-site-out only where the row asks: both sides of the comparison have it.
  assert "LOSO" in compared[("PrepNet + up-sampling + grayscaling", "Original")]["metrics"]
  assert "LOSO" not in compared[("AdaBN", "Original")]["metrics"]
  # Every seed's diagnostics are summarised for the AE row.
  assert report["diagnostics"]["PrepNet + up-sampling + grayscaling"]["origin_raw"]["n"] == 2
  r = json.load(open(workdir / "rows" / "original" / "seed_0" / "results.json"))
  assert r["sars"]["protocol"] == "train_sets"
  assert {k for k in r if not k.startswith("_") and r[k]["protocol"] == "leave_one_site_out"} == {
      "sars+ucsd", "sars+mosmed", "ucsd+mosmed"}
  patient = r["sars"]["eval"]["ucsd"]["test"]["patient"]
  assert patient["n_patients"] < r["sars"]["eval"]["ucsd"]["test"]["n"] and patient["aggregation"] == "mean"
  # AdaBN trains exactly as Original (same seed, same curves) and differs only at evaluation.
  ada = json.load(open(workdir / "rows" / "adabn" / "seed_0" / "results.json"))
  assert ada["_curves"]["cov_sars"] == r["_curves"]["cov_sars"]
  assert ada["sars"]["test_time_bn"] and not r["sars"]["test_time_bn"]
  assert any(ada["sars"]["eval"][s]["test"]["auc"] != r["sars"]["eval"][s]["test"]["auc"] for s in ("ucsd", "mosmed"))
  # Figures and the generated page.
  for name in (evidence.FOREST, evidence.HEATMAPS):
    assert (workdir / "reports" / name).stat().st_size > 5000
  page = (tmp_path / "docs" / "prepnet_evidence.md").read_text()
  assert "(generated)" in page and "prepnet_evidence/evidence_forest_plot.png" in page
  assert (tmp_path / "docs" / "prepnet_evidence" / evidence.FOREST).exists()
  for name in rows:
    assert f"| {name} |" in page
  assert "Li et al." in page and "## Reading" in page
