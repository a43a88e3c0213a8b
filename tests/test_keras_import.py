"""Keras ImageNet-layout weights load into the flax nets and reproduce Keras' outputs.

The Keras models are built without weights (nothing is downloaded), given random biases and
BatchNorm statistics so every mapped array matters, saved to temporary files, imported, and
compared on the same random input. Keras runs on its numpy backend (fastest to build on CPU)
unless another test imported Keras first.
"""

from __future__ import annotations

import hashlib
import os
import sys

if "keras" not in sys.modules:
  os.environ.setdefault("KERAS_BACKEND", "numpy")


import h5py
import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

from helpers import assert_close, zero_variables
from prepnet_jax import models
from prepnet_jax.models.keras_import import CAFFE_MEAN_BGR, IMAGENET_MEAN_RGB, IMAGENET_STD_RGB


def randomize(keras_model, seed):
  """Random biases and BatchNorm statistics (Keras initialises them to constants)."""
  rng = np.random.default_rng(seed)
  for layer in keras_model.layers:
    weights = layer.get_weights()
    if isinstance(layer, keras.layers.BatchNormalization):
      gamma, beta, mean, var = weights
      layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                         rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)])
    elif len(weights) == 2:
      layer.set_weights([weights[0], rng.normal(0, 0.05, weights[1].shape)])
  return keras_model


def keras_output(keras_model, x, layer=None):
  if layer is not None:
    keras_model = keras.Model(keras_model.input, keras_model.get_layer(layer).output)
  return keras.ops.convert_to_numpy(keras_model(x, training=False))


def random_images(shape, seed):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """{key: (keras model, path of its Keras 3 .weights.h5)} for the reference nets."""
  directory = tmp_path_factory.mktemp("keras")
  builders = {
      "vgg16": lambda: keras.applications.VGG16(weights=None, include_top=False,
                                                input_shape=(64, 64, 3)),
      "vgg19": lambda: keras.applications.VGG19(weights=None, include_top=False,
                                                input_shape=(64, 64, 3)),
      "vgg16_top": lambda: keras.applications.VGG16(weights=None, include_top=True,
                                                    input_shape=(32, 32, 3), classes=10,
                                                    classifier_activation=None),
      "resnet50_top": lambda: keras.applications.ResNet50(weights=None, include_top=True,
                                                          input_shape=(64, 64, 3), classes=10,
                                                          classifier_activation=None),
  }
  result = {}
  for seed, (key, build) in enumerate(builders.items()):
    keras_model = randomize(build(), seed)
    path = str(directory / f"{key}.weights.h5")
    keras_model.save_weights(path)
    result[key] = (keras_model, path)
  return result


@pytest.mark.parametrize("name,last_conv", [("vgg16", "block5_conv3"), ("vgg19", "block5_conv4")])
def test_vgg_backbone_matches_keras_without_top(saved, name, last_conv):
  keras_model, path = saved[name]
  x = random_images((2, 64, 64, 3), seed=1)
  model = models.get_classifier(name, 2, head_type="gap")
  variables = zero_variables(model, x)
  loaded = models.load_pretrained(name, variables, path, input_convention="caffe")
  feats = model.apply(loaded, x, train=False, method=model.features)
  assert_close(feats, keras_output(keras_model, x, last_conv))
  # The file has no top: the new 2-class head keeps its initial values.
  jax.tree.map(np.testing.assert_array_equal, loaded["params"]["head"], variables["params"]["head"])


def test_vgg16_with_top_matches_keras_logits(saved):
  keras_model, path = saved["vgg16_top"]
  x = random_images((2, 32, 32, 3), seed=2)
  model = models.get_classifier("vgg16", 10, head_pool_size=1)  # Keras flattens 1x1x512 at 32px
  loaded = models.load_pretrained("vgg16", zero_variables(model, x), path, input_convention="caffe")
  assert_close(model.apply(loaded, x, train=False), keras_output(keras_model, x))


def test_resnet50_with_top_matches_keras_logits(saved):
  keras_model, path = saved["resnet50_top"]
  x = random_images((2, 64, 64, 3), seed=3)
  model = models.get_classifier("resnet50", 10, layout="keras")
  loaded = models.load_pretrained("resnet50", zero_variables(model, x), path,
                                  input_convention="caffe")
  assert_close(model.apply(loaded, x, train=False), keras_output(keras_model, x))


def _write_keras2_h5(keras_model, path):
  """The layout of the files keras.applications downloads (Keras 2 `save_weights`)."""
  with h5py.File(path, "w") as f:
    f.attrs["layer_names"] = np.array([layer.name.encode() for layer in keras_model.layers])
    for layer in keras_model.layers:
      group = f.create_group(layer.name)
      names = [f"{layer.name}/{w.name}:0" for w in layer.weights]
      group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
      for name, array in zip(names, layer.get_weights()):
        group.create_dataset(name, data=array)


def _flat_weights(keras_model):
  return {f"{layer.name}/{w.name}": np.asarray(array) for layer in keras_model.layers
          for w, array in zip(layer.weights, layer.get_weights())}


def test_keras2_h5_npz_and_safetensors_load_the_same_arrays(saved, tmp_path):
  keras_model, path = saved["resnet50_top"]
  x = np.zeros((1, 64, 64, 3), np.float32)
  model = models.get_classifier("resnet50", 10, layout="keras")
  variables = zero_variables(model, x)
  reference = models.load_pretrained("resnet50", variables, path, input_convention="caffe")
  _write_keras2_h5(keras_model, tmp_path / "legacy.h5")
  np.savez(tmp_path / "flat.npz", **_flat_weights(keras_model))
  save_file(_flat_weights(keras_model), str(tmp_path / "flat.safetensors"))
  for filename in ("legacy.h5", "flat.npz", "flat.safetensors"):
    loaded = models.load_pretrained("resnet50", variables, str(tmp_path / filename),
                                    input_convention="caffe")
    jax.tree.map(np.testing.assert_array_equal, loaded, reference)
  assert float(jnp.abs(reference["batch_stats"]["backbone"]["conv1_bn"]["var"] - 1).max()) > 0.01


def test_one_channel_model_equals_keras_on_the_grey_image_replicated(saved):
  keras_model, path = saved["vgg16"]
  grey = random_images((2, 64, 64, 1), seed=4)
  model = models.get_classifier("vgg16", 2, head_type="gap")
  loaded = models.load_pretrained("vgg16", zero_variables(model, grey), path,
                                  input_convention="caffe")
  assert loaded["params"]["backbone"]["block1_conv1"]["kernel"].shape == (3, 3, 1, 64)
  feats = model.apply(loaded, grey, train=False, method=model.features)
  assert_close(feats, keras_output(keras_model, np.repeat(grey, 3, axis=-1), "block5_conv3"))


def test_torch_convention_takes_imagenet_normalised_rgb_instead_of_caffe_bgr(saved):
  keras_model, path = saved["vgg16"]
  images01 = np.random.default_rng(5).uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
  caffe_input = images01[..., ::-1] * 255.0 - CAFFE_MEAN_BGR.astype(np.float32)
  torch_input = ((images01 - IMAGENET_MEAN_RGB) / IMAGENET_STD_RGB).astype(np.float32)
  model = models.get_classifier("vgg16", 2, head_type="gap", feature_layer="block1")
  loaded = models.load_pretrained("vgg16", zero_variables(model, torch_input), path)
  feats = np.asarray(model.apply(loaded, torch_input, train=False, method=model.features))
  reference = keras_output(keras_model, caffe_input, "block1_conv2")
  # Exact away from the border; the zero padding differs by <= 0.5 grey levels at the border.
  assert_close(feats[:, 2:-2, 2:-2], reference[:, 2:-2, 2:-2])
  assert np.abs(feats - reference).max() < 1e-2 * np.abs(reference).max()


def test_unet_encoder_takes_the_vgg16_blocks_it_has(saved):
  keras_model, path = saved["vgg16"]
  unet = models.UNetVGG16AE(depth=3)
  x = np.zeros((1, 32, 32, 3), np.float32)
  variables = zero_variables(unet, x)
  loaded = models.load_pretrained("unet_vgg16", variables, path, input_convention="caffe")
  encoder = loaded["params"]["encoder"]
  assert sorted(encoder)[-1] == "block3_conv3"
  kernel, bias = keras_model.get_layer("block3_conv2").get_weights()
  np.testing.assert_array_equal(encoder["block3_conv2"]["kernel"], kernel)
  np.testing.assert_array_equal(encoder["block3_conv2"]["bias"], bias)
  jax.tree.map(np.testing.assert_array_equal, loaded["params"]["dec2"], variables["params"]["dec2"])


def test_sha256_is_checked(saved):
  _, path = saved["vgg16"]
  with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  model = models.get_classifier("vgg16", 2, head_type="gap")
  variables = zero_variables(model, np.zeros((1, 32, 32, 3), np.float32))
  models.load_pretrained("vgg16", variables, path, sha256=digest.upper())
  with pytest.raises(ValueError, match=f"SHA-256 mismatch.*got {digest}"):
    models.load_pretrained("vgg16", variables, path, sha256="0" * 64)


def test_missing_file_says_how_to_get_it(tmp_path):
  model = models.get_classifier("vgg19", 2, head_type="gap")
  variables = zero_variables(model, np.zeros((1, 32, 32, 3), np.float32))
  with pytest.raises(FileNotFoundError, match=r"keras\.applications\.VGG19\(weights='imagenet'\)"):
    models.load_pretrained("vgg19", variables, str(tmp_path / "vgg19.weights.h5"))


@pytest.mark.parametrize("name,kwargs,message", [
    ("resnet50", {}, "layout='keras'"),  # torchvision layout: convs without bias
    ("vgg16", {"width_multiplier": 0.5, "head_type": "gap"}, "width_multiplier=1"),
    ("vgg16_bn", {"head_type": "gap"}, "no BatchNorm VGG"),
])
def test_mismatched_backbones_are_refused(saved, name, kwargs, message):
  path = saved["resnet50_top" if name == "resnet50" else "vgg16"][1]
  model = models.get_classifier(name, 2, **kwargs)
  variables = zero_variables(model, np.zeros((1, 64, 64, 3), np.float32))
  with pytest.raises(ValueError, match=message):
    models.load_pretrained(name.removesuffix("_bn"), variables, path, input_convention="caffe")
