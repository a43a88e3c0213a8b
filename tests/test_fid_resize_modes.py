"""Inception resize modes ('clean', 'legacy_pytorch', 'legacy_tensorflow') pinned to the tools they
reproduce, folder-vs-folder evaluation, and the feature-extraction progress line.

For each mode, two fixed sets of structured images of many sizes are resized by the library and
by the reference implementation (PIL bicubic on mode 'F' per channel; torch `F.interpolate`
bilinear; TensorFlow's `tf.compat.v1.image.resize_bilinear`), both resized sets go through the
same Inception-v3 network (the FID graph's architecture with fixed random weights: the real file
cannot be downloaded here), and the library's Fréchet distance must equal one computed here from
the reference pixels.

Neither side pays for a 2048² sqrtm (~40 s of CPU each on the test machine): the independent FD
takes scipy's sqrtm of the small n×n matrix C·Cᵀ, with C = A_real·A_genᵀ and A the centred
features / sqrt(n − 1), whose nonzero eigenvalues are those of Σ_real·Σ_gen; the library's
`frechet_distance` gets its features in orthonormal coordinates of the subspace that holds every
centred feature and the mean difference. FD is invariant under that isometry, so both are the
2048-d value (a 2048² sqrtm of these rank-deficient products adds ~1e-4 of noise besides).
"""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from prepnet_jax.eval import feature_extractors as fe, gen_metrics as gm
from prepnet_jax.models import inception_v3 as inc
from prepnet_jax.tasks import gen_metrics as gen_metrics_job
from tests.helpers import load_config

SIZES = ((48, 64), (299, 299), (420, 300), (120, 333), (75, 75), (512, 384), (200, 180), (333, 97))


def _structured(rng: np.random.Generator, h: int, w: int, channels: int, stripes: bool) -> np.ndarray:
  """Smooth shading, a sharp-edged disk and (for the 'generated' set) fine stripes that alias
  differently under each resize rule, plus mild noise; uint8 HxWxC."""
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
  planes = []
  for _ in range(channels):
    phase = 2 * np.pi * (rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y) + rng.uniform(0, 6)
    plane = 110 + 60 * np.sin(phase)
    plane = plane + 70 * (((y - cy) ** 2 + (x - cx) ** 2) < r * r)
    if stripes:
      period = rng.uniform(2.5, 6.0)
      plane = plane + 50 * np.sign(np.sin(2 * np.pi * np.arange(w) / period))[None, :]
    planes.append(plane + rng.normal(0, 6, (h, w)))
  return np.clip(np.rint(np.stack(planes, -1)), 0, 255).astype(np.uint8)


def _image_set(seed: int, stripes: bool) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [_structured(rng, h, w, 1 if i % 3 == 0 else 3, stripes) for i, (h, w) in enumerate(SIZES)]


REAL, GENERATED = _image_set(0, stripes=False), _image_set(1, stripes=True)


def _reference_resize(image: np.ndarray, mode: str) -> np.ndarray:
  """float32 299×299×3 by the implementation each mode names (clean-fid `resize.py` semantics)."""
  rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
  if mode == "clean":
    planes = [np.asarray(Image.fromarray(rgb[..., c].astype(np.float32), mode="F")
                         .resize((299, 299), Image.Resampling.BICUBIC)) for c in range(3)]
    return np.clip(np.stack(planes, -1), 0, 255)
  if mode == "legacy_pytorch":
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rgb.astype(np.float32).transpose(2, 0, 1))[None]
    out = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return out[0].numpy().transpose(1, 2, 0)
  tf = pytest.importorskip("tensorflow")
  out = tf.compat.v1.image.resize_bilinear(rgb[None].astype(np.float32), (299, 299),
                                           align_corners=False, half_pixel_centers=False)
  return out[0].numpy()


def _in_span(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Both feature sets in orthonormal coordinates of a subspace holding all they differ by."""
  real, gen = real.astype(np.float64), gen.astype(np.float64)
  mu_real, mu_gen = real.mean(0), gen.mean(0)
  basis, _ = np.linalg.qr(np.concatenate([real - mu_real, gen - mu_gen, (mu_real - mu_gen)[None]]).T)
  return real @ basis, gen @ basis


def _reference_fd(real: np.ndarray, gen: np.ndarray) -> float:
  real, gen = real.astype(np.float64), gen.astype(np.float64)
  a_real = (real - real.mean(0)) / np.sqrt(len(real) - 1)
  a_gen = (gen - gen.mean(0)) / np.sqrt(len(gen) - 1)
  cross = a_real @ a_gen.T
  trace_root = np.trace(scipy.linalg.sqrtm(cross @ cross.T)).real
  diff = real.mean(0) - gen.mean(0)
  return float(diff @ diff + (a_real ** 2).sum() + (a_gen ** 2).sum() - 2 * trace_root)


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory) -> str:
  """An .npz in pytorch-fid's state-dict layout with a 1008-class head, so the library sees the
  FID graph variant ('inception_fid', records named 'fid'); He-normal kernels, random BatchNorm."""
  shapes = inc.abstract_variables("fid", inc.FID_NUM_CLASSES)
  rng = np.random.default_rng(0)
  arrays = {}
  for unit in inc.CONV_LAYERS:
    node = shapes["params"]
    for part in unit.split("/"):
      node = node[part]
    kh, kw, cin, cout = node["conv"]["kernel"].shape
    prefix = unit.replace("/", ".")
    arrays[f"{prefix}.conv.weight"] = rng.normal(0, np.sqrt(2.0 / (kh * kw * cin)),
                                                 (cout, cin, kh, kw)).astype(np.float32)
    arrays[f"{prefix}.bn.weight"] = np.ones(cout, np.float32)
    arrays[f"{prefix}.bn.bias"] = rng.normal(0, 0.1, cout).astype(np.float32)
    arrays[f"{prefix}.bn.running_mean"] = rng.normal(0, 0.1, cout).astype(np.float32)
    arrays[f"{prefix}.bn.running_var"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
  arrays["fc.weight"] = rng.normal(0, 0.02, (inc.FID_NUM_CLASSES, inc.FEATURE_DIM)).astype(np.float32)
  arrays["fc.bias"] = np.zeros(inc.FID_NUM_CLASSES, np.float32)
  path = str(tmp_path_factory.mktemp("inception") / "pt_inception-random.npz")
  np.savez(path, **arrays)
  return path


@pytest.fixture(scope="module")
def reference_network(fid_weights):
  model, variables, info = inc.load_inception(fid_weights)
  assert info["variant"] == "fid"
  apply = jax.jit(model.apply)
  return lambda pixels: np.asarray(apply(variables, np.stack(pixels))["pool"])


def _library_and_reference_fd(mode: str, fid_weights: str, reference_network) -> tuple[float, float]:
  extractor = fe.get_extractor("inception", weights_path=fid_weights, resize_mode=mode,
                               batch_size=len(REAL))
  assert extractor.describe()["resize_mode"] == mode and extractor.standard_fid
  assert gm.metric_name("fd", extractor) == ("fid" if mode == "clean" else f"fid_{mode}")
  assert gm.metric_name("kid", extractor) == ("kid" if mode == "clean" else f"kid_{mode}")

  reference = {name: [_reference_resize(img, mode) for img in images]
               for name, images in (("real", REAL), ("generated", GENERATED))}
  for name, images in (("real", REAL), ("generated", GENERATED)):
    for img, expected in zip(images, reference[name]):
      np.testing.assert_allclose(fe.resize_by_mode(img, 299, mode), expected, rtol=0, atol=1e-3,
                                 err_msg=f"{mode} resize of a {img.shape} image")

  if mode == "legacy_pytorch":
    # pytorch-fid feeds the network 2x/255 - 1; the FID graph computes (p - 128)/128 of its input p.
    reference = {k: [(2 * x / 255 - 1) * 128 + 128 for x in v] for k, v in reference.items()}
  ref_real, ref_gen = reference_network(reference["real"]), reference_network(reference["generated"])
  lib_real, lib_gen = extractor.features(REAL), extractor.features(GENERATED)
  np.testing.assert_allclose(lib_real, ref_real, rtol=1e-4, atol=1e-4 * np.abs(ref_real).max())
  np.testing.assert_allclose(lib_gen, ref_gen, rtol=1e-4, atol=1e-4 * np.abs(ref_gen).max())
  span_real, span_gen = _in_span(lib_real, lib_gen)
  value = gm.frechet_distance(*gm.feature_stats(span_real), *gm.feature_stats(span_gen))
  return value, _reference_fd(ref_real, ref_gen)


def test_fd_of_each_resize_mode_equals_the_reference_implementation(fid_weights, reference_network):
  values = {}
  for mode in fe.RESIZE_MODES:  # one test: the comparison across modes below needs all three
    value, expected = _library_and_reference_fd(mode, fid_weights, reference_network)
    print(f"FD[{mode}] = {value:.10g}, reference {expected:.10g}")
    assert value == pytest.approx(expected, rel=1e-6), mode
    values[mode] = value
  # The modes differ by far more than that tolerance: a mode that was ignored shows.
  ordered = sorted(values.values())
  assert min(b - a for a, b in zip(ordered, ordered[1:])) > 1e-3 * ordered[-1], values


def test_metric_names_carry_a_legacy_mode_whatever_the_extractor():
  def name(base, extractor_name, standard_fid, mode):
    extractor = types.SimpleNamespace(name=extractor_name, standard_fid=standard_fid, resize_mode=mode)
    return gm.metric_name(base, extractor)

  assert name("fd", "inception_keras", False, "legacy_tensorflow") == "fd_inception_keras_legacy_tensorflow"
  assert name("is", "inception_fid", True, "legacy_pytorch") == "is_legacy_pytorch"
  assert name("fd", "inception_keras", False, "clean") == "fd_inception_keras"
  assert name("fd", "classifier", False, None) == "fd_classifier"


def test_an_unknown_resize_mode_is_refused_with_the_field_and_the_choices(tmp_path):
  with pytest.raises(ValueError, match="resize_mode='bilinear' is not a resize mode; expected one of "
                                       "'clean', 'legacy_pytorch', 'legacy_tensorflow'"):
    fe.get_extractor("inception", weights_path=str(tmp_path / "absent.npz"), resize_mode="bilinear")
  config = load_config("gen_metrics")
  config.inception.resize_mode = "pytorch"
  # refused before any image or weights file is read, so a fallback cannot hide it
  with pytest.raises(ValueError, match=r"^config\.inception\.resize_mode='pytorch' is not a resize mode"):
    gen_metrics_job.run(config, str(tmp_path))


# --- folder vs folder ----------------------------------------------------------------------------

def _folder_config(tmp_path, **fields):
  config = load_config("gen_metrics")
  config.extractors = "randinit"
  config.randinit.image_size = 16
  config.randinit.widths = (8, 16, 32)
  config.metrics.names = "fd,kid"
  config.metrics.kid_subsets = 5
  for key, value in fields.items():
    section, name = key.split(".")
    config[section][name] = value
  return config


def _write_folder(folder, images):
  folder.mkdir(parents=True)
  for i, img in enumerate(images):
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(folder / f"{i:03d}.png")


def test_job_compares_two_folders(tmp_path):
  real_dir, gen_dir = tmp_path / "real", tmp_path / "gen"
  _write_folder(real_dir / "nested", REAL + REAL[:4])  # searched recursively
  _write_folder(gen_dir, GENERATED)
  config = _folder_config(tmp_path, **{"real.folder": str(real_dir), "generated.folder": str(gen_dir),
                                       "real.match_generated": False, "real.max_images": 0,
                                       "generated.num_images": 0})
  result = gen_metrics_job.run(config, str(tmp_path / "work"))
  assert result["real"]["source"] == "folder" and result["real"]["num_images"] == 12
  assert result["real"]["preprocessing"] == "as stored"
  fd = result["records"][0]
  assert fd["metric"] == "fd_randinit" and (fd["n_real"], fd["n_gen"]) == (12, 8)
  assert fd["dataset"] == f"real.folder={real_dir}" and fd["resize_mode"] == "clean"
  extractor = fe.get_extractor("randinit", image_size=16, widths=(8, 16, 32))
  expected = gm.frechet_distance(*gm.feature_stats(extractor.features(REAL + REAL[:4])),
                                 *gm.feature_stats(extractor.features(GENERATED)))
  assert fd["value"] == pytest.approx(expected, rel=1e-9)


def test_folder_errors_name_the_field(tmp_path):
  gen_dir = tmp_path / "gen"
  _write_folder(gen_dir, GENERATED[:3])
  (tmp_path / "empty" / "sub").mkdir(parents=True)
  (tmp_path / "empty" / "notes.txt").write_text("no images here")
  cases = [({"real.folder": str(tmp_path / "absent")}, FileNotFoundError,
            r"config\.real\.folder='.*absent' is not a directory"),
           ({"real.folder": str(tmp_path / "empty")}, FileNotFoundError,
            r"config\.real\.folder='.*empty' holds no image files"),
           ({"real.folder": str(gen_dir), "real.labels": (1,)}, ValueError,
            r"config\.real\.labels=\[1\] filters a dataset by class"),
           ({"generated.folder": str(tmp_path / "empty")}, FileNotFoundError,
            r"config\.generated\.folder='.*empty' holds no image files")]
  for fields, error, message in cases:
    config = _folder_config(tmp_path, **{"generated.folder": str(gen_dir), **fields})
    with pytest.raises(error, match=message):
      gen_metrics_job.run(config, str(tmp_path / "work"))


# --- progress ------------------------------------------------------------------------------------

def test_a_long_extraction_prints_progress_lines_and_a_short_one_none(monkeypatch, capsys):
  extractor = fe.get_extractor("randinit", image_size=16, widths=(8, 16, 32), batch_size=4)
  images = [img[:40, :40] for img in REAL + GENERATED]  # 16 images, 4 batches
  extractor.features(images, label="real")
  assert "[features" not in capsys.readouterr().out  # well under PROGRESS_EVERY_SECONDS
  monkeypatch.setattr(fe, "PROGRESS_EVERY_SECONDS", 1e-9)  # every batch is "long" now
  extractor.features(images, label="real")
  lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[features")]
  # none after the first batch, which also compiled: its rate would mislead
  assert [line.split(" | ")[0] for line in lines] == [
      f"[features randinit real] image {n}/16" for n in (8, 12, 16)]
  assert all(" images/s" in line or " s/image" in line for line in lines)
  assert all("elapsed " in line and "ETA " in line for line in lines)
