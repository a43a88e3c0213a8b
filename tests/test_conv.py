"""The project's Conv / ConvTranspose equal flax's (values and gradients) for the shapes the models use."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from prepnet_jax.models import conv

# (input NHWC, features, kernel, strides, padding, which model uses it)
SHAPES = [
    ((2, 32, 32, 3), 16, (7, 7), (2, 2), ((3, 3), (3, 3)), "ResNet stem"),
    ((2, 8, 8, 16), 32, (1, 1), (2, 2), ((0, 0), (0, 0)), "ResNet projection shortcut"),
    ((2, 8, 8, 16), 24, (1, 1), (1, 1), ((0, 0), (0, 0)), "ResNet50 bottleneck / COVID-Net PEPX 1x1"),
    ((2, 8, 8, 64), 32, (3, 3), (2, 2), ((1, 1), (1, 1)), "first conv of a ResNet stage"),
    ((2, 2, 2, 64), 64, (3, 3), (1, 1), ((1, 1), (1, 1)), "ResNet18 last stage at 64 px (2x2 output)"),
    ((3, 4, 4, 32), 32, (3, 3), (1, 1), ((1, 1), (1, 1)), "4x4 output"),
    ((2, 12, 12, 8), 8, (3, 3), (1, 1), ((1, 1), (1, 1)), "VGG / U-Net 3x3 (library path)"),
    ((2, 16, 16, 3), 8, (4, 4), (2, 2), ((1, 1), (1, 1)), "DCGAN discriminator, first layer"),
    ((2, 4, 4, 8), 1, (4, 4), (1, 1), "VALID", "DCGAN discriminator logits"),
    ((2, 12, 12, 3), 8, (3, 3), (1, 1), ((1, 1), (1, 1)), "VGG / U-Net first layer (RGB)"),
    ((2, 15, 15, 3), 8, (3, 3), (2, 2), "SAME", "VAE encoder (odd size, SAME)"),
    ((2, 17, 17, 64), 8, (3, 3), (2, 2), "VALID", "Inception-v3 reduction"),
    ((2, 3, 5, 3), 8, (1, 7), (1, 1), ((0, 0), (3, 3)), "a 1x7 kernel (Inception-v3) on an RGB input"),
]


def _assert_layers_agree(reference, ours, x):
  """Same initial parameters; then, with random (also bias) parameters, the same values and the
  same gradients for parameters and input, to float32 rounding."""
  variables = reference.init(jax.random.key(0), x)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), variables, ours.init(jax.random.key(0), x)))
  # Random bias too (flax starts it at zero, which would hide a bias mistake).
  variables = jax.tree.map(lambda v: v + 0.1 * jax.random.normal(jax.random.key(2), v.shape), variables)
  y_ref, y = reference.apply(variables, x), ours.apply(variables, x)
  assert y.shape == y_ref.shape
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(y_ref).max()))
  cotangent = jax.random.normal(jax.random.key(3), y_ref.shape)
  def grads(model):
    return jax.grad(lambda v, x: jnp.sum(model.apply(v, x) * cotangent), argnums=(0, 1))(variables, x)
  for g, g_ref in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(reference))):
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(g_ref).max()))


@pytest.mark.parametrize("shape,features,kernel,strides,padding,used_by", SHAPES,
                         ids=[s[-1] for s in SHAPES])
def test_values_and_gradients_equal_nn_conv(shape, features, kernel, strides, padding, used_by):
  kwargs = dict(features=features, kernel_size=kernel, strides=strides, padding=padding)
  _assert_layers_agree(nn.Conv(**kwargs), conv.Conv(**kwargs), jax.random.normal(jax.random.key(1), shape))


@pytest.mark.parametrize("shape,kernel,strides,expected", [
    ((2, 2, 2, 64), (3, 3), (1, 1), True),     # the pathological tiny output
    ((2, 8, 8, 16), (1, 1), (1, 1), True),     # a 1x1 conv is a matrix product
    ((2, 8, 8, 3), (3, 3), (1, 1), True),      # an RGB input: the patch matrix is small
    ((2, 8, 8, 64), (3, 3), (2, 2), True),     # strided, 64+ channels: the library's kernel gradient is slow
    ((2, 8, 8, 16), (4, 4), (2, 2), False),    # strided with few channels (DCGAN's D): the library wins
    ((2, 4, 4, 32), (3, 3), (1, 1), False),    # 4x4 output: about equal, the library saves less memory
    ((2, 12, 12, 8), (3, 3), (1, 1), False),   # 12x12 stride 1: the library is as fast, 9x less memory
])
def test_the_router_sends_the_slow_shapes_through_patches(shape, kernel, strides, expected, monkeypatch):
  """On CPU the shapes above take patches x matrix (so the value test exercises that path)."""
  calls = []
  real = conv.patches_conv
  monkeypatch.setattr(conv, "patches_conv", lambda *a, **k: calls.append(1) or real(*a, **k))
  x = jnp.ones(shape)
  w = jnp.ones(kernel + (shape[-1], 4))
  conv.conv_general_dilated(x, w, strides, ((kernel[0] // 2,) * 2, (kernel[1] // 2,) * 2),
                            dimension_numbers=("NHWC", "HWIO", "NHWC"))
  assert bool(calls) == expected


def test_dilation_and_groups_fall_through_to_the_library():
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 4))
  for kwargs in (dict(kernel_dilation=(2, 2)), dict(feature_group_count=4)):
    reference, ours = (cls(4, (3, 3), padding=((1, 1), (1, 1)), **kwargs) for cls in (nn.Conv, conv.Conv))
    v = reference.init(jax.random.key(1), x)
    np.testing.assert_array_equal(ours.apply(v, x), reference.apply(v, x))


def test_an_input_dilated_conv_takes_the_sub_pixel_path():
  x = jax.random.normal(jax.random.key(0), (1, 6, 6, 4))
  reference, ours = (cls(4, (3, 3), padding=((1, 1), (1, 1)), input_dilation=(2, 2)) for cls in (nn.Conv, conv.Conv))
  v = reference.init(jax.random.key(1), x)
  y_ref = reference.apply(v, x)
  np.testing.assert_allclose(ours.apply(v, x), y_ref, rtol=1e-5, atol=1e-5 * float(jnp.abs(y_ref).max()))


TRANSPOSED = [
    ((2, 4, 4, 8), 6, (4, 4), (2, 2), "SAME", "DCGAN generator / U-Net 'transpose' mode"),
    ((2, 1, 1, 8), 6, (4, 4), (1, 1), "VALID", "DCGAN generator's first layer (1x1 -> 4x4)"),
    ((2, 5, 5, 3), 4, (3, 3), (2, 2), "SAME", "VAE decoder (odd kernel)"),
    ((2, 5, 6, 3), 4, (3, 3), (2, 2), "VALID", "VALID, non-square input"),
    ((2, 3, 3, 4), 4, (3, 3), (3, 3), "SAME", "stride 3"),
    ((2, 4, 4, 8), 6, (4, 4), (2, 2), ((2, 1), (0, 3)), "explicit asymmetric padding"),
]


@pytest.mark.parametrize("shape,features,kernel,strides,padding,used_by", TRANSPOSED,
                         ids=[s[-1] for s in TRANSPOSED])
def test_conv_transpose_equals_nn_conv_transpose(shape, features, kernel, strides, padding, used_by):
  """The sub-pixel rewrite (one small convolution per output phase) is the same transposed conv."""
  kwargs = dict(features=features, kernel_size=kernel, strides=strides, padding=padding)
  _assert_layers_agree(nn.ConvTranspose(**kwargs), conv.ConvTranspose(**kwargs),
                       jax.random.normal(jax.random.key(1), shape))


def test_negative_padding_crops_exactly():
  """XLA:CPU's convolution returns garbage for some negative paddings; the router crops instead."""
  x = jax.random.normal(jax.random.key(1), (2, 4, 4, 8))
  w = jax.random.normal(jax.random.key(2), (2, 2, 8, 6))
  for pads in (((0, 0), (-1, 1)), ((-1, 2), (1, -1))):
    cropped = lax.pad(x, 0.0, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
    expected = lax.conv_general_dilated(cropped, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    got = conv.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
