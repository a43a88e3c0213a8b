"""Inception-v3 import: a Keras InceptionV3 `.h5` and a pytorch-fid-style `.npz` give Keras' numbers.

The Keras model is built without weights (nothing is downloaded), given random He-normal kernels
and random BatchNorm statistics (so a wrong conv/BN pairing or transpose shows), saved, imported
and compared at 75×75, the smallest input Keras' InceptionV3 accepts.
"""

from __future__ import annotations

import hashlib
import os

# Keras 3 builds this 22M-parameter model in ~2 s with TensorFlow and ~25 s with JAX on CPU.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from prepnet_jax.eval import feature_extractors as fe, gen_metrics as gm  # noqa: E402
from prepnet_jax.models import inception_v3 as inc, pretrained  # noqa: E402

SIZE = 75


@pytest.fixture(scope="module")
def keras_reference(tmp_path_factory):
  """(h5 path, inputs in [0, 255], Keras pool features and logits, per-unit (kernel, beta, mean,
  var) in layer-creation order, Dense (kernel, bias))."""
  model = keras.applications.InceptionV3(include_top=True, weights=None, input_shape=(SIZE, SIZE, 3),
                                         classifier_activation=None)
  rng = np.random.default_rng(0)
  for layer in model.layers:
    if isinstance(layer, keras.layers.Conv2D):
      shape = layer.get_weights()[0].shape
      layer.set_weights([rng.normal(0, np.sqrt(2.0 / np.prod(shape[:3])), shape).astype(np.float32)])
    elif isinstance(layer, keras.layers.BatchNormalization):
      n = layer.get_weights()[0].shape[0]  # scale=False: beta, moving mean, moving variance
      layer.set_weights([rng.normal(0, 0.1, n).astype(np.float32), rng.normal(0, 0.1, n).astype(np.float32),
                         rng.uniform(0.5, 1.5, n).astype(np.float32)])
    elif isinstance(layer, keras.layers.Dense):
      kernel, bias = layer.get_weights()
      layer.set_weights([rng.normal(0, 0.05, kernel.shape).astype(np.float32),
                         rng.normal(0, 0.5, bias.shape).astype(np.float32)])
  path = str(tmp_path_factory.mktemp("keras") / "inception_v3.h5")
  model.save(path)
  pixels = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
  scaled = pixels / 127.5 - 1.0  # keras.applications.inception_v3.preprocess_input
  pool = keras.Model(model.input, model.get_layer("avg_pool").output)

  def order(cls):
    return sorted((l for l in model.layers if isinstance(l, cls)), key=lambda l: inc._creation_index(l.name))

  units = [(conv.get_weights()[0], *bn.get_weights())
           for conv, bn in zip(order(keras.layers.Conv2D), order(keras.layers.BatchNormalization))]
  dense = model.get_layer("predictions").get_weights()
  return (path, pixels, keras.ops.convert_to_numpy(pool(scaled)), keras.ops.convert_to_numpy(model(scaled)),
          units, dense)


@pytest.fixture(scope="module")
def apply_fn():
  return jax.jit(lambda model, v, x: model.apply(v, x), static_argnums=0)


def _torch_state_dict(units, dense=None) -> dict[str, np.ndarray]:
  """The arrays under pytorch-fid's state-dict names and layouts (what a converted .pth holds)."""
  arrays = {}
  for name, (kernel, beta, mean, var) in zip(inc.CONV_LAYERS, units):
    prefix = name.replace("/", ".")
    # (kh, kw, I, O) -> (O, I, kh, kw); contiguous like a torch tensor (safetensors writes raw buffers)
    arrays[f"{prefix}.conv.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
    arrays[f"{prefix}.bn.weight"] = np.ones_like(beta)
    arrays[f"{prefix}.bn.bias"] = beta
    arrays[f"{prefix}.bn.running_mean"] = mean
    arrays[f"{prefix}.bn.running_var"] = var
    arrays[f"{prefix}.bn.num_batches_tracked"] = np.zeros((), np.int64)
  if dense is not None:
    arrays["fc.weight"], arrays["fc.bias"] = np.ascontiguousarray(dense[0].T), dense[1]
  return arrays


def test_keras_h5_import_matches_keras_features_and_logits(keras_reference, apply_fn):
  path, pixels, pool, logits, _, _ = keras_reference
  model, variables, info = inc.load_inception(path)
  with open(path, "rb") as f:
    assert info == dict(variant="keras", num_classes=1000, format="keras_h5",
                        sha256=hashlib.sha256(f.read()).hexdigest())
  out = apply_fn(model, variables, pixels)
  assert np.abs(pool).max() > 0.5 and np.abs(logits).max() > 0.5  # non-trivial outputs
  np.testing.assert_allclose(np.asarray(out["pool"]), pool, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(out["logits"]), logits, atol=1e-4, rtol=0)


def test_torch_layout_npz_import_gives_the_same_network(keras_reference, apply_fn, tmp_path):
  path, pixels, pool, logits, units, dense = keras_reference
  npz = str(tmp_path / "inception.npz")
  np.savez(npz, **_torch_state_dict(units, dense))
  model, variables, info = inc.load_inception(npz)
  assert info["variant"] == "keras" and info["format"] == "torch_state_dict_npz"
  out = apply_fn(model, variables, pixels)  # same shapes: reuses the compiled function
  np.testing.assert_allclose(np.asarray(out["pool"]), pool, atol=1e-4, rtol=0)
  np.testing.assert_allclose(np.asarray(out["logits"]), logits, atol=1e-4, rtol=0)
  from safetensors.numpy import save_file
  tensors = str(tmp_path / "inception.safetensors")
  save_file(_torch_state_dict(units, dense), tensors)
  _, from_safetensors, info = inc.load_inception(tensors)
  assert info["format"] == "torch_state_dict_safetensors"
  jax.tree.map(np.testing.assert_array_equal, from_safetensors, variables)
  headless = str(tmp_path / "notop.npz")
  np.savez(headless, **_torch_state_dict(units))
  extractor = fe.get_extractor(f"inception:{headless}")
  assert (extractor.name, extractor.num_classes, extractor.standard_fid) == ("inception_keras", 0, False)
  assert gm.metric_name("fd", extractor) == "fd_inception_keras"
  assert extractor.resize.startswith("pil_bicubic_float32_299")


def test_a_1008_class_head_selects_the_fid_graph_variant(keras_reference, tmp_path):
  _, pixels, _, _, units, _ = keras_reference
  rng = np.random.default_rng(1)
  fc = (rng.normal(0, 0.05, (2048, 1008)).astype(np.float32), rng.normal(0, 1.0, 1008).astype(np.float32))
  path = str(tmp_path / "pt_inception-2015-12-05.npz")
  np.savez(path, **_torch_state_dict(units, fc))
  extractor = fe.get_extractor("inception", weights_path=path, sha256=pretrained.sha256_of(path))
  assert (extractor.name, extractor.num_classes, extractor.standard_fid) == ("inception_fid", 1008, True)
  assert [gm.metric_name(m, extractor) for m in ("fd", "kid", "is")] == ["fid", "kid", "is"]
  model, variables, _ = inc.load_inception(path)
  out = jax.jit(model.apply)(variables, pixels[:1])
  # IS logits of the FID graph have no bias (original IS code, torch-fidelity 'logits_unbiased')
  np.testing.assert_allclose(np.asarray(out["logits"]), np.asarray(out["pool"]) @ fc[0], rtol=1e-5, atol=1e-5)


def test_import_errors_name_the_file_and_what_is_expected(keras_reference, tmp_path):
  path, _, _, _, units, dense = keras_reference
  with pytest.raises(inc.MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
    inc.load_inception(str(tmp_path / "absent.npz"))
  with pytest.raises(ValueError, match="SHA-256"):
    inc.load_inception(path, expected_sha256="0" * 64)
  arrays = _torch_state_dict(units, dense)
  del arrays["Mixed_6b.branch7x7_2.conv.weight"]
  np.savez(tmp_path / "incomplete.npz", **arrays)
  with pytest.raises(ValueError, match="Mixed_6b.branch7x7_2.conv.weight"):
    inc.load_inception(str(tmp_path / "incomplete.npz"))
  arrays = _torch_state_dict(units, dense)
  arrays["Mixed_5b.branch1x1.conv.weight"] = np.zeros((64, 192, 3, 3), np.float32)
  np.savez(tmp_path / "wrong_shape.npz", **arrays)
  with pytest.raises(ValueError, match="Mixed_5b.*branch1x1.*shape"):
    inc.load_inception(str(tmp_path / "wrong_shape.npz"))
