"""The built-in chest phantom: API, determinism, composition, and that it does its job -
sites are separable by style, COVID is learnable within a site, and models do not transfer.

Run `pytest -s tests/test_phantom.py` to see the measured numbers.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from prepnet_jax.data import phantom, splits

TINY = {"num_patients": 4, "slices_per_patient": 2, "image_size": 32}
KEYS = {"image", "label", "label3", "severity", "lesion_fraction", "patient", "domain", "slice_index", "view",
        "source"}


@pytest.fixture(scope="module")
def ct_sites():
  """The default CT sites, generated once (the sizes every job uses)."""
  return {site: phantom.generate_site("ct", site) for site in phantom.CT_SITES}


def _held_out(arrays) -> np.ndarray:
  return splits.patient_split(arrays["patient"]) != "train"


def _grayscale(images: np.ndarray, size: int) -> np.ndarray:
  """Common size and one channel, so a classifier must use style, not shape or channels."""
  return np.stack([np.asarray(Image.fromarray(im.mean(-1).astype(np.float32), mode="F")
                              .resize((size, size), Image.BILINEAR)) / 255.0 for im in images])


def _style_features(images: np.ndarray) -> np.ndarray:
  gray = _grayscale(images, 16)
  hist = np.stack([np.histogram(g, 16, (0, 1))[0] / g.size for g in gray])
  return np.concatenate([gray.reshape(len(gray), -1), hist], axis=1)


def _intensity_histogram(images: np.ndarray) -> np.ndarray:
  gray = images.mean(-1)
  return np.stack([np.histogram(g, 16, (0, 256))[0] / g.size for g in gray])


def _logistic(c: float):
  return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced"))


@pytest.mark.parametrize("modality", ["ct", "cxr"])
def test_arrays_shapes_and_dtypes(modality):
  sites = phantom.CT_SITES if modality == "ct" else phantom.CXR_SITES
  for domain, site in enumerate(sites):
    data = phantom.generate_site(modality, site, **TINY)
    assert set(data) == KEYS
    n = 4 * 2
    assert {k: len(v) for k, v in data.items()} == {k: n for k in KEYS}
    assert data["image"].dtype == np.uint8
    assert data["image"].shape == (n, 32, 32, phantom.SITE_PROFILES[site].channels)
    for key in ("label", "label3", "severity", "domain", "slice_index"):
      assert data[key].dtype == np.int32, key
    assert data["lesion_fraction"].dtype == np.float32
    assert data["patient"].dtype == object and data["view"].dtype == object
    assert np.all(data["domain"] == domain)
    assert np.array_equal(data["label"], (data["label3"] == 2).astype(np.int32))
    assert set(data["slice_index"].tolist()) == {0, 1}
    assert all(p.startswith(f"{site}-p") for p in data["patient"])
    views = set(data["view"].tolist())
    assert views == {"axial"} if modality == "ct" else views <= {"PA", "AP"}
    assert np.all((data["lesion_fraction"] >= 0) & (data["lesion_fraction"] <= 1))


def test_same_seed_same_data_other_seed_other_data():
  for modality, site in (("ct", "ucsd"), ("cxr", "covidx")):
    a = phantom.generate_site(modality, site, seed=3, **TINY)
    b = phantom.generate_site(modality, site, seed=3, **TINY)
    c = phantom.generate_site(modality, site, seed=4, **TINY)
    for key in a:
      assert np.array_equal(a[key], b[key]), (site, key)
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["lesion_fraction"], c["lesion_fraction"])


def test_more_patients_keep_the_first_ones():
  """A patient's anatomy depends on its id and the seed, not on how many are generated."""
  small = phantom.generate_volumes("mosmed", num_patients=2, volume_size=32)
  large = phantom.generate_volumes("mosmed", num_patients=3, volume_size=32)
  assert [v["patient"] for v in small] == [v["patient"] for v in large][:2]
  assert small[0]["volume_hu"].shape == large[0]["volume_hu"].shape


def test_unknown_names_and_bad_overrides_raise():
  with pytest.raises(ValueError, match="sars.*ucsd.*mosmed"):
    phantom.generate_site("ct", "covidx")
  with pytest.raises(ValueError, match="'ct', 'cxr'"):
    phantom.generate_site("mri", "sars")
  with pytest.raises(ValueError, match="CT_SITES|sars"):
    phantom.generate_volumes("ulm")
  with pytest.raises(ValueError, match="num_patients"):
    phantom.generate_site("ct", "sars", num_patients=0)
  with pytest.raises(ValueError, match="unknown phantom override"):
    phantom.generate_site("ct", "sars", resolution=64)
  with pytest.raises(ValueError, match="seed"):
    phantom.generate_site("ct", "sars", seed=-1)


def test_patient_ids_unique_across_sites():
  seen = {}
  for modality, sites in (("ct", phantom.CT_SITES), ("cxr", phantom.CXR_SITES)):
    for site in sites:
      for patient in set(phantom.generate_site(modality, site, **TINY)["patient"]):
        assert patient not in seen, f"{patient} in {site} and {seen.get(patient)}"
        seen[patient] = site
  assert len(seen) == 6 * 4


def test_default_ct_sites_composition(ct_sites):
  sars, ucsd, mosmed = (ct_sites[s] for s in phantom.CT_SITES)
  assert 450 <= len(sars["image"]) <= 550 and sars["image"].shape[1:] == (128, 128, 1)
  assert 120 <= len(ucsd["image"]) <= 180 and ucsd["image"].shape[-1] == 3
  assert ucsd["image"].shape[1] < sars["image"].shape[1]
  assert 250 <= len(mosmed["image"]) <= 350
  assert sars["label"].mean() == pytest.approx(0.74, abs=0.02)
  assert set(mosmed["severity"].tolist()) == {0, 1, 2, 3, 4}
  for name, data in ct_sites.items():
    covid = data["label3"] == 2
    assert np.all(data["severity"][~covid] == 0) and np.all(data["severity"][covid] >= 1)
    assert np.all(data["lesion_fraction"][data["label3"] == 0] == 0), name
  for name in ("sars", "mosmed"):
    data = ct_sites[name]
    visible = (data["lesion_fraction"][data["label3"] == 2] > 0).mean()
    print(f"\n{name}: COVID slices showing a lesion: {visible:.1%}")
    assert 0.75 <= visible < 0.99, name  # most, not all: labels are per patient
  # Lesions grow with the grade.
  means = [sars["lesion_fraction"][sars["severity"] == g].mean() for g in (1, 2, 3, 4)]
  assert means == sorted(means)


def test_volumes_follow_mosmed_grades_and_orientation():
  volumes = phantom.generate_volumes("mosmed", num_patients=12, volume_size=48)
  assert {v["severity"] for v in volumes} == {0, 1, 2, 3, 4}
  bands = {0: (0.0, 0.0), 1: (0.0, 0.25), 2: (0.2, 0.55), 3: (0.45, 0.8), 4: (0.7, 1.0)}
  for v in volumes:
    hu = v["volume_hu"]
    assert hu.dtype == np.int16 and hu.ndim == 3 and 30 <= hu.shape[0] <= 50
    assert 7.0 <= v["spacing"][0] <= 9.0 and v["spacing"][1] == v["spacing"][2]
    lo, hi = bands[v["severity"]]
    assert lo <= v["involvement"] <= hi, (v["patient"], v["severity"], v["involvement"])
    assert hu.min() <= -1000 and hu.max() > 300  # air and bone
    lung_area = ((hu > -950) & (hu < -700)).sum((1, 2))
    z = len(hu)
    assert lung_area[: z // 8].mean() < lung_area[z // 3: z // 2].mean()  # index 0 is the apex end
  # The site's slices are slices n//4, n//2, 3n//4 of these volumes.
  site = phantom.generate_site("ct", "mosmed", num_patients=12, volume_size=48)
  for v in volumes:
    z = len(v["volume_hu"])
    rows = site["patient"] == v["patient"]
    assert np.array_equal(site["lesion_fraction"][rows], v["lesion_fraction"][[z // 4, z // 2, 3 * z // 4]])


def test_cxr_lesions_and_views():
  data = phantom.generate_site("cxr", "ulm", num_patients=12, image_size=48)
  assert np.all(data["lesion_fraction"][data["label3"] == 0] == 0)
  assert np.all(data["lesion_fraction"][data["label3"] == 2] > 0)
  assert set(data["view"].tolist()) == {"PA", "AP"}


def test_ap_view_magnifies_the_heart():
  """The heart lies anterior: far from the detector in an AP film, next to it in a PA film."""
  from prepnet_jax.data.phantom import anatomy, render_cxr
  anat = anatomy.sample_anatomy(np.random.default_rng(0))
  heart_y = anat.heart_center[1]
  relative = {view: float(render_cxr.magnification(view, heart_y, anat.half_depth)
                          / render_cxr.magnification(view, 0.0, anat.half_depth)) for view in ("PA", "AP")}
  print(f"\nheart magnification relative to the mid-chest plane: {relative}")
  assert relative["PA"] < 1.0 < relative["AP"]
  assert relative["AP"] / relative["PA"] > 1.03


def test_site_classifier_separates_ct_sites(ct_sites):
  features = {s: _style_features(d["image"]) for s, d in ct_sites.items()}
  held = {s: _held_out(d) for s, d in ct_sites.items()}
  x_train = np.concatenate([features[s][~held[s]] for s in ct_sites])
  y_train = np.concatenate([ct_sites[s]["domain"][~held[s]] for s in ct_sites])
  x_test = np.concatenate([features[s][held[s]] for s in ct_sites])
  y_test = np.concatenate([ct_sites[s]["domain"][held[s]] for s in ct_sites])
  accuracy = (_logistic(0.1).fit(x_train, y_train).predict(x_test) == y_test).mean()
  print(f"\nCT site classifier accuracy (held-out patients, n={len(y_test)}): {accuracy:.3f}")
  assert accuracy >= 0.9


def test_site_classifier_separates_cxr_sites():
  data = {s: phantom.generate_site("cxr", s, num_patients=40, image_size=64) for s in phantom.CXR_SITES}
  held = {s: _held_out(d) for s, d in data.items()}
  features = {s: _style_features(d["image"]) for s, d in data.items()}
  x_train = np.concatenate([features[s][~held[s]] for s in data])
  y_train = np.concatenate([data[s]["domain"][~held[s]] for s in data])
  x_test = np.concatenate([features[s][held[s]] for s in data])
  y_test = np.concatenate([data[s]["domain"][held[s]] for s in data])
  accuracy = (_logistic(0.1).fit(x_train, y_train).predict(x_test) == y_test).mean()
  print(f"\nCXR site classifier accuracy (held-out patients, n={len(y_test)}): {accuracy:.3f}")
  assert accuracy >= 0.9


def test_covid_learnable_within_site_but_not_across(ct_sites):
  """An intensity-histogram logistic regression: good on held-out sars patients, and it
  falls apart on another site (different window, kernel, noise, export)."""
  features = {s: _intensity_histogram(d["image"]) for s, d in ct_sites.items()}
  held = {s: _held_out(d) for s, d in ct_sites.items()}
  models = {s: _logistic(1.0).fit(features[s][~held[s]], ct_sites[s]["label"][~held[s]]) for s in ct_sites}

  def ba(train_site, test_site):
    rows = held[test_site]
    predicted = models[train_site].predict(features[test_site][rows])
    return balanced_accuracy_score(ct_sites[test_site]["label"][rows], predicted)

  within = {s: ba(s, s) for s in ct_sites}
  print("\nCOVID balanced accuracy on held-out patients (train site -> test site):")
  drops = {}
  for a in ct_sites:
    for b in ct_sites:
      score = ba(a, b)
      if a != b:
        drops[(a, b)] = within[a] - score
      print(f"  {a:>6} -> {b:<6} BA {score:.3f}" + (f"  drop {within[a] - score:+.3f}" if a != b else ""))
  assert within["sars"] >= 0.8
  assert max(drops[("sars", b)] for b in ("ucsd", "mosmed")) >= 0.10


def test_generation_is_fast():
  """All sites of both modalities at a reduced size; the full default run is timed by
  benchmarks/bench_phantom.py (<= 60 s on 2 cores)."""
  start = time.perf_counter()
  count = 0
  for modality, sites in (("ct", phantom.CT_SITES), ("cxr", phantom.CXR_SITES)):
    for site in sites:
      count += len(phantom.generate_site(modality, site, num_patients=6)["image"])
  seconds = time.perf_counter() - start
  print(f"\n{count} default-size images of 6 sites in {seconds:.1f} s")
  assert seconds < 30


def test_tfds_dataset_round_trip(tmp_path):
  import tensorflow_datasets as tfds
  overrides = {"num_patients": 5, "slices_per_patient": 2, "image_size": 24}
  phantom.prepare_tfds(str(tmp_path), configs=("ct",), overrides=overrides)
  phantom.prepare_tfds(str(tmp_path), configs=("ct",), overrides=overrides)  # already there: no-op
  with pytest.raises(ValueError, match="overrides"):
    phantom.prepare_tfds(str(tmp_path), configs=("ct",), overrides={"num_patients": 6})
  expected = {s: phantom.generate_site("ct", s, **overrides) for s in phantom.CT_SITES}
  builder = tfds.builder("chest_phantom/ct", data_dir=str(tmp_path))
  stored = 0
  for site, arrays in expected.items():
    by_key = {(p, int(i)): k for k, (p, i) in enumerate(zip(arrays["patient"], arrays["slice_index"]))}
    assignment = splits.patient_split(arrays["patient"])
    for split in splits.SPLITS:
      name = f"{site}_{split}"
      if name not in builder.info.splits:
        assert not np.any(assignment == split)
        continue
      source = tfds.data_source("chest_phantom/ct", split=name, data_dir=str(tmp_path))
      assert len(source) == int(np.sum(assignment == split))
      for example in source:
        k = by_key[(example["patient"].decode(), int(example["slice_index"]))]
        assert np.array_equal(example["image"], arrays["image"][k])
        assert example["image"].shape[-1] == phantom.SITE_PROFILES[site].channels
        assert int(example["label"]) == arrays["label"][k] and int(example["domain"]) == arrays["domain"][k]
        assert splits.assign_split(example["patient"].decode()) == split
        stored += 1
  assert stored == sum(len(a["image"]) for a in expected.values())


def test_contact_sheet(tmp_path):
  path = tmp_path / "ct.png"
  sheet = phantom.contact_sheet("ct", str(path), per_class=2, tile=40, **TINY)
  assert sheet.shape == (3 * 40, 3 * 2 * 40, 3)
  assert Image.open(path).size == (3 * 2 * 40, 3 * 40)
