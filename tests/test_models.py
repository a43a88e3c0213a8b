"""Shapes, parameter counts, the features/head split and masks of the networks.

Variables are filled from numpy (`filled_variables`) instead of `model.init`: XLA compiles one
random-number program per parameter shape, which costs far more CPU than these checks.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prepnet_jax import models
from prepnet_jax.models.vgg import adaptive_avg_pool, max_pool2

TINY = {"covidnet": 1 / 32}  # width multiplier per name; others use 1/16


def abstract_variables(model, x):
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)


def filled_variables(model, x, seed=0):
  """He-scaled normal kernels, random biases/BN affine, unit running variance."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "var":
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(0, np.sqrt(2.0 / fan_in), leaf.shape), leaf.dtype)
    offset = 1.0 if name == "scale" else 0.0
    return jnp.asarray(offset + rng.normal(0, 0.1, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract_variables(model, x))


def abstract_output(model, x, **apply_kwargs):
  """Output of init + apply, traced without running."""
  return abstract_variables_and_output(model, x, **apply_kwargs)[1]


def abstract_variables_and_output(model, x, **apply_kwargs):
  def run():
    variables = model.init(jax.random.key(0), x, train=False)
    return variables, model.apply(variables, x, train=False, **apply_kwargs)
  return jax.eval_shape(run)


def count_params(variables):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name", models.CLASSIFIER_NAMES)
@pytest.mark.parametrize("size,channels,num_classes", [(32, 1, 1), (64, 3, 3)])
def test_every_classifier_gives_logits_of_shape_batch_by_classes(name, size, channels,
                                                                 num_classes):
  model = models.get_classifier(name, num_classes, width_multiplier=TINY.get(name, 1 / 16))
  x = jnp.zeros((2, size, size, channels))
  variables, logits = abstract_variables_and_output(model, x)
  assert logits.shape == (2, num_classes)
  assert set(variables["params"]) == {"backbone", "head"}


def test_unknown_classifier_name_lists_the_known_ones():
  with pytest.raises(ValueError, match="vgg16_bn.*resnet50.*covidnet"):
    models.get_classifier("densenet121", 2)


@pytest.mark.parametrize("name,kwargs", [
    ("vgg11_bn", {}), ("vgg11", {"feature_layer": "block3", "head_type": "gap"}),
    ("resnet50", {"feature_layer": "conv3", "layout": "keras"}),
    ("small_cnn", {"feature_layer": "block2"}), ("covidnet", {}),
])
def test_head_of_features_equals_call(name, kwargs):
  model = models.get_classifier(name, 3, width_multiplier=TINY.get(name, 1 / 16), **kwargs)
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 64, 64, 3)), jnp.float32)
  variables = filled_variables(model, x)

  @jax.jit  # one compilation instead of one per op and shape
  def split_and_whole(variables, x):
    feats = model.apply(variables, x, train=False, method=model.features)
    return feats, model.apply(variables, feats, train=False, method=model.head), model.apply(
        variables, x, train=False)

  feats, logits, whole = split_and_whole(variables, x)
  np.testing.assert_allclose(logits, whole, rtol=1e-5, atol=1e-6)
  assert feats.ndim == 4 and feats.shape[0] == 2
  assert float(jnp.std(logits)) > 0


def test_feature_layer_picks_the_stage_resolution():
  x = jnp.zeros((1, 64, 64, 3))
  sides = {}
  for layer in ("block1", "block3", "block5"):
    model = models.get_classifier("vgg16", 2, width_multiplier=1 / 16, feature_layer=layer)
    sides[layer] = abstract_output(model, x, method=model.features).shape
  assert sides == {"block1": (1, 64, 64, 4), "block3": (1, 16, 16, 16), "block5": (1, 4, 4, 32)}
  resnet = models.get_classifier("resnet50", 2, width_multiplier=1 / 16)
  assert resnet.stage_names == ("conv1", "conv2", "conv3", "conv4", "conv5")
  # conv5: 2048/16 channels at 1/32 of the input side.
  assert abstract_output(resnet, x, method=resnet.features).shape == (1, 2, 2, 128)
  with pytest.raises(ValueError, match="feature_layer must be one of"):
    bad = models.get_classifier("resnet18", 2, feature_layer="layer4")
    abstract_variables(bad, x)


def test_train_mode_updates_batch_stats_and_applies_dropout():
  model = models.get_classifier("small_cnn", 2, width_multiplier=1 / 8, dropout_rate=0.5)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 32, 32, 3)), jnp.float32)
  variables = filled_variables(model, x)
  train_apply = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key},
                                                      mutable=["batch_stats"]))
  outs = []
  for seed in (0, 1):
    logits, updates = train_apply(variables, x, jax.random.key(seed))
    outs.append(logits)
  assert logits.shape == (4, 2)
  assert not np.allclose(outs[0], outs[1])
  old = variables["batch_stats"]["backbone"]["block1_conv1_bn"]["mean"]
  new = updates["batch_stats"]["backbone"]["block1_conv1_bn"]["mean"]
  assert not np.allclose(old, new)


def test_trainable_mask_marks_only_the_head_when_frozen():
  model = models.get_classifier("resnet18", 2, width_multiplier=1 / 16)
  params = abstract_variables(model, jnp.zeros((1, 32, 32, 3)))["params"]
  frozen = models.trainable_mask(params, freeze_backbone=True)
  assert jax.tree.structure(frozen) == jax.tree.structure(params)
  assert all(jax.tree.leaves(frozen["head"])) and not any(jax.tree.leaves(frozen["backbone"]))
  assert all(jax.tree.leaves(models.trainable_mask(params, freeze_backbone=False)))
  unet_params = abstract_variables(models.UNetVGG16AE(), jnp.zeros((1, 32, 32, 3)))["params"]
  with pytest.raises(ValueError, match="'backbone' and 'head'"):
    models.trainable_mask(unet_params, freeze_backbone=True)


@pytest.mark.parametrize("name,kwargs,expected", [
    ("vgg16", {}, 138_357_544),
    ("vgg16_bn", {}, 138_365_992),
    ("vgg19", {}, 143_667_240),
    ("resnet18", {}, 11_689_512),
    ("resnet50", {}, 25_557_032),
    ("resnet50", {"layout": "keras"}, 25_583_592),
])
def test_full_size_parameter_counts_match_torchvision_and_keras(name, kwargs, expected):
  model = models.get_classifier(name, 1000, **kwargs)
  assert count_params(abstract_variables(model, jnp.zeros((1, 224, 224, 3)))) == expected


@functools.partial(jax.jit, static_argnums=(0, 3))
def _pepx4_1_input_and_its_expected_sum(model, variables, x, stage3_blocks):
  """Records every submodule call, then rebuilds pexp4_1's input from the stage-3 outputs."""
  outputs, inputs = {}, {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__":
      inputs[context.module.name], outputs[context.module.name] = args[0], out
    return out

  with nn.intercept_methods(record):
    logits = model.apply(variables, x, train=False)
  c3 = max_pool2(outputs["conv3_1x1"])
  expected = sum(max_pool2(outputs[f"pexp3_{i}"]) for i in stage3_blocks) + max_pool2(c3)
  return inputs["pexp4_1"], expected, logits


def test_covidnet_matches_the_kth_parameter_count_and_its_quirk_flag_changes_the_wiring():
  full = models.get_classifier("covidnet", 3)
  assert count_params(abstract_variables(full, jnp.zeros((1, 224, 224, 3)))) == 134_513_939
  x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 64, 64, 3)), jnp.float32)
  faithful = models.get_classifier("covidnet", 3, width_multiplier=1 / 32, faithful_bug=True)
  fixed = models.get_classifier("covidnet", 3, width_multiplier=1 / 32, faithful_bug=False)
  variables = filled_variables(faithful, x)
  # KTH code: pexp4_1(mp(p31) + mp(p32) + mp(p32) + mp(p34) + mp(p35) + mp(p36) + mp(c3)).
  got, expected, out_faithful = _pepx4_1_input_and_its_expected_sum(faithful, variables, x,
                                                                    (1, 2, 2, 4, 5, 6))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  got, expected, out_fixed = _pepx4_1_input_and_its_expected_sum(fixed, variables, x,
                                                                 (1, 2, 3, 4, 5, 6))
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(out_faithful - out_fixed)).max() > 1e-3 * np.abs(out_fixed).max()


@pytest.mark.parametrize("upsample", ["bilinear", "nearest", "transpose"])
@pytest.mark.parametrize("depth", [1, 3, 5])
def test_unet_returns_an_image_of_the_input_shape(upsample, depth):
  model = models.UNetVGG16AE(out_channels=1, depth=depth, upsample=upsample,
                             width_multiplier=1 / 16)
  x = jnp.zeros((2, 64, 32, 1))
  assert abstract_output(model, x).shape == (2, 64, 32, 1)


def test_unet_trains_batch_stats_and_bounds_its_output():
  model = models.UNetVGG16AE(depth=3, out_activation="sigmoid", width_multiplier=1 / 16)
  x = jnp.asarray(np.random.default_rng(4).normal(size=(2, 32, 32, 3)), jnp.float32)
  variables = filled_variables(model, x)
  out, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
  assert set(variables["params"]) == {"encoder", "center", "dec3", "dec2", "dec1", "final"}
  assert "block3_conv3" in variables["params"]["encoder"]
  assert set(updates["batch_stats"]) == {"center", "dec3", "dec2", "dec1"}
  with pytest.raises(ValueError, match="divisible by 8"):
    model.apply(variables, jnp.zeros((1, 36, 36, 3)), train=False)


def test_vgg_refuses_inputs_below_32_pixels():
  model = models.get_classifier("vgg11", 2, width_multiplier=1 / 16)
  with pytest.raises(ValueError, match="at least 32x32"):
    abstract_variables(model, jnp.zeros((1, 16, 16, 3)))


def test_adaptive_avg_pool_uses_torch_bins():
  x = jnp.asarray(np.random.default_rng(5).normal(size=(1, 10, 3, 2)), jnp.float32)
  out = adaptive_avg_pool(x, 7)
  # torch bins for 10 -> 7: [0,2) [1,3) [2,5) [4,6) [5,8) [7,9) [8,10); for 3 -> 7 cell j
  # covers [floor(3j/7), ceil(3(j+1)/7)).
  rows = [(0, 2), (1, 3), (2, 5), (4, 6), (5, 8), (7, 9), (8, 10)]
  cols = [(3 * j // 7, -(-3 * (j + 1) // 7)) for j in range(7)]
  expected = np.array([[np.asarray(x)[0, r0:r1, c0:c1].mean(axis=(0, 1)) for c0, c1 in cols]
                       for r0, r1 in rows])
  np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-6)
