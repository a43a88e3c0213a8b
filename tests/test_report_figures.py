"""Report figures and reports/index.html: what the classifier, PrepNet and generative jobs draw,
and a page that shows all of it without running anything a file name or report smuggles in."""

from __future__ import annotations

import html.parser
import json
import os
import subprocess
import sys
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from helpers import REPO
from prepnet_jax.eval import figures
from prepnet_jax.runtime import rundir
from prepnet_jax.tasks.prepnet import report as prepnet_report


class _References(html.parser.HTMLParser):
  """Every href/src of a page (decoded) and every tag name it opens."""

  def __init__(self):
    super().__init__()
    self.links, self.tags = set(), []

  def handle_starttag(self, tag, attrs):
    self.tags.append(tag)
    for key, value in attrs:
      if key in ("href", "src"):
        self.links.add(urllib.parse.unquote(value))


def _page(workdir) -> _References:
  parser = _References()
  with open(os.path.join(workdir, "reports", "index.html"), encoding="utf-8") as f:
    parser.feed(f.read())
  return parser


def _report_files(workdir) -> set[str]:
  reports = os.path.join(workdir, "reports")
  return {os.path.relpath(os.path.join(folder, name), reports).replace(os.sep, "/")
          for folder, _, names in os.walk(reports) for name in names if name != "index.html"}


# --- the classifier job, end to end through the command line ---------------------------------------

def test_classifier_job_writes_figures_per_test_set_and_an_index(tmp_path):
  workdir = tmp_path / "classifier"
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  done = subprocess.run([sys.executable, os.path.join(REPO, "main.py"),
                         "--config=" + os.path.join(REPO, "tests", "tiny_classifier_config.py"),
                         f"--workdir={workdir}", "--config.num_epochs=1"],
                        env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  reports = workdir / "reports"
  for site in ("sars", "ucsd"):  # the tiny config evaluates both phantom sites
    for kind in ("roc", "confusion", "reliability", "gradcam"):
      with Image.open(reports / f"{kind}_phantom_ct_{site}_test.png") as image:
        image.load()
        assert image.width >= 300 and image.height >= 300, (kind, image.size)
  assert not list(reports.glob("*_train.png")), "figures are drawn for held-out sets only"
  page = _page(workdir)
  files = _report_files(workdir)
  assert {"metrics.md", "metrics.json", "calibration.md"} <= files
  assert files <= page.links, f"not referenced: {files - page.links}"
  pngs = {f for f in files if f.endswith(".png")}
  assert pngs and {f for f in page.links if f.endswith(".png")} == pngs
  assert "table" in page.tags and "img" in page.tags  # metrics.md rendered as a table, figures shown


# --- figure functions ----------------------------------------------------------------------------

def _legend_texts(figure) -> list[str]:
  return [t.get_text() for t in figure.axes[0].get_legend().get_texts()]


def test_roc_auc_in_the_legend_for_perfect_and_random_scores(tmp_path):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, 4000)
  perfect = figures.roc_curves(str(tmp_path / "perfect.png"), labels * 0.8 + 0.1, labels, ["non-COVID", "COVID"])
  assert _legend_texts(perfect)[0] == "COVID: AUC 1.000"
  chance = figures.roc_curves(str(tmp_path / "random.png"), rng.uniform(size=4000), labels, ["non-COVID", "COVID"])
  auc = float(_legend_texts(chance)[0].rsplit(" ", 1)[1])
  assert abs(auc - 0.5) < 0.05
  # K classes: one curve per class; a class without examples has no curve and says so.
  probs = rng.dirichlet(np.ones(3), 60)
  three = figures.roc_curves(str(tmp_path / "three.png"), probs, probs.argmax(-1) % 2, ["a", "b", "c"])
  texts = _legend_texts(three)
  assert texts[0].startswith("a: AUC 0.") and texts[1].startswith("b: AUC 0.")
  assert texts[2] == "c: AUC undefined (one class only)" and texts[3] == "chance"
  with Image.open(tmp_path / "three.png") as image:
    assert image.width > 300 and image.height > 300


def test_cross_site_heatmap_annotates_the_input_values(tmp_path):
  values = np.array([[0.812, 0.4567, np.nan], [0.5, 1.0, 0.0]])
  stds = np.full(values.shape, 0.02)
  figure = figures.cross_site_heatmap(str(tmp_path / "heat.png"), values, ["sars", "ucsd"],
                                      ["sars", "ucsd", "covid_ctset"], "PrepNet: test balanced accuracy", stds)
  ax = figure.axes[0]
  cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
  for (row, col), value in np.ndenumerate(values):
    expected = "–" if np.isnan(value) else f"{value:.3f}\n± 0.020"
    assert cells[(row, col)] == expected
  assert ax.get_title() == "PrepNet: test balanced accuracy"
  assert [t.get_text() for t in ax.get_yticklabels()] == ["sars", "ucsd"]
  assert (tmp_path / "heat.png").stat().st_size > 1000
  with pytest.raises(ValueError, match="values of shape"):
    figures.cross_site_heatmap(str(tmp_path / "bad.png"), values, ["sars"], ["a", "b", "c"], "x")


def test_prepnet_tables_give_one_heatmap_per_row(tmp_path):
  def result(ba):
    by_split = {s: {"balanced_accuracy": ba, "sensitivity": 0.5, "specificity": 0.5, "auc": 0.5}
                for s in ("train", "val", "test")}
    return {"sars": {"members": ["sars"], "eval": {"sars": by_split, "ucsd": by_split}},
            "ucsd": {"members": ["ucsd"], "eval": {"sars": by_split, "ucsd": by_split}}}

  all_results = {"Original": {0: result(0.6), 1: result(0.8)}, "PrepNet": {0: result(0.7), 1: result(0.7)}}
  config = type("Config", (), {"baseline_row": "Original"})()
  tables = prepnet_report.build_tables(all_results, config)
  paths = prepnet_report.heatmaps(str(tmp_path), tables, all_results)
  assert [os.path.relpath(p, tmp_path) for p in paths] == [
      os.path.join("reports", row, prepnet_report.HEATMAP) for row in ("original", "prepnet")]
  for path in paths:
    with Image.open(path) as image:
      assert image.width > 300 and image.height > 200


def test_before_after_grid_names_site_and_row(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (2, 5, 48, 48, 1)).astype(np.uint8)
  title = "PrepNet reproduction — site sars (test slices, seed 0)"
  figure = figures.before_after_grid(str(tmp_path / "ba.png"), images[0], images[1], title, ("raw", "AE output"))
  assert figure.get_suptitle() == title
  assert [ax.get_ylabel() for ax in figure.axes] == ["raw", "AE output"]
  with Image.open(tmp_path / "ba.png") as image:
    assert image.height >= 2 * 128 and image.width > image.height
  with pytest.raises(ValueError, match="two uint8 batches"):
    figures.before_after_grid(str(tmp_path / "bad.png"), images[0], images[1, :4], title)


def test_history_curves_one_png_per_metric(tmp_path):
  def entry(step, fd, kid):
    return {"step": step, "records": [
        {"metric": "fd_randinit", "label": None, "value": fd, "std": None, "noise_floor": 2.0},
        {"metric": "kid_randinit", "label": None, "value": kid, "std": 0.01, "noise_floor": 0.001}]}

  paths = figures.history_curves(str(tmp_path), [entry(0, 90.0, 0.5)], title="dcgan")
  assert sorted(os.path.basename(p) for p in paths) == ["curve_fd_randinit.png", "curve_kid_randinit.png"]
  paths = figures.history_curves(str(tmp_path), [entry(0, 90.0, 0.5), entry(100, 40.0, 0.2)], title="dcgan")
  with Image.open(paths[0]) as image:
    assert image.width > 300 and image.height > 200
  assert figures.history_curves(str(tmp_path / "none"), [{"kimg": 0.0, "step": 0}], "kimg") == []


# --- a generative job: reals beside the fakes, metric curves --------------------------------------

def test_gan_run_writes_reals_at_the_fakes_layout_and_curves(tmp_path):
  from test_gan_training import tiny_config

  from prepnet_jax.tasks.generative import gan
  config = tiny_config("gan", **{"fd.enabled": True, "num_steps": 2, "num_grid_images": 9})
  gan.train_and_evaluate(config, str(tmp_path))
  reports = tmp_path / "reports"
  with Image.open(reports / "reals.png") as reals, Image.open(reports / "samples_000002.png") as fakes:
    assert reals.size == fakes.size and reals.mode == fakes.mode
    assert np.asarray(reals).std() > 5  # images, not an empty grid
  for metric in ("fd_randinit", "kid_randinit"):
    assert (reports / f"curve_{metric}.png").stat().st_size > 1000
  rundir.write_index(str(tmp_path))
  assert _report_files(tmp_path) <= _page(tmp_path).links


# --- index.html ----------------------------------------------------------------------------------

def test_index_escapes_hostile_names_and_reports(tmp_path):
  reports = tmp_path / "reports"
  (reports / "row <b>").mkdir(parents=True)
  hostile = ['<img src=x onerror=alert(1)>.png', 'a"b&c d.png', "row <b>/x'y.png", "javascript:alert(1).png"]
  pixel = np.zeros((4, 4), np.uint8)
  for name in hostile:
    Image.fromarray(pixel).save(reports / name)
  (reports / "table.md").write_text("# T <script>alert(1)</script>\n\n| a | b |\n|---|---|\n| <i>1</i> | 2 |\n")
  (reports / "x.json").write_text(json.dumps({"note": "</pre><script>alert(2)</script>"}))
  path = rundir.write_index(str(tmp_path))
  text = open(path, encoding="utf-8").read()
  assert "<script" not in text and "<img src=x" not in text and "<i>" not in text and "<b>" not in text
  page = _page(tmp_path)
  assert set(hostile) | {"table.md", "x.json"} <= page.links
  assert page.tags.count("img") == len(hostile) and "table" in page.tags
  assert 'href="javascript:' not in text  # the ':' is percent-encoded: a relative path, never a scheme
  assert rundir.write_index(str(tmp_path / "no_reports")) is None
