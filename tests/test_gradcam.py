"""Grad-CAM: weights equal averaged gradients, maps follow the evidence, and they pass the
model-randomisation sanity check of Adebayo et al. (2018)."""

from __future__ import annotations

import functools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from prepnet_jax.eval import figures, gradcam
from prepnet_jax.models import get_classifier
from prepnet_jax.models.small_cnn import SmallCNN

BLOB_SIZE = 16


def _init_variables(model, sample, seed: int) -> dict:
  """He-normal kernels, zero biases, unit BatchNorm scales/variances, drawn with numpy.

  Same family as the models' own init, without compiling XLA's truncated normal once per kernel
  shape (seconds each on a busy 2-core CPU, most of these tests' time otherwise).
  """
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), sample)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("scale", "var"):
      return jnp.ones(leaf.shape, leaf.dtype)
    if name in ("bias", "mean"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / fan_in), leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _blob_images(rng: np.random.Generator, count: int):
  """Class 1: a bright Gaussian blob at a random place; class 0: a dark one. Returns images
  (count,S,S,1) in [0,1], labels and the blob masks (where the evidence is)."""
  labels = rng.integers(0, 2, count)
  cy, cx = rng.uniform(3, BLOB_SIZE - 3, (2, count))
  yy, xx = np.mgrid[:BLOB_SIZE, :BLOB_SIZE]
  blob = np.exp(-((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) / (2 * 1.5 ** 2))
  sign = np.where(labels == 1, 1.0, -1.0)[:, None, None]
  images = 0.5 + 0.4 * sign * blob + 0.05 * rng.normal(size=blob.shape)
  return images[..., None].astype(np.float32), labels, blob > 0.5


@pytest.fixture(scope="module")
def blob_classifier():
  """A SmallCNN trained for 40 Adam steps on the blob task (about a second after compiling)."""
  model = SmallCNN(num_classes=2, widths=(8, 16))
  rng = np.random.default_rng(0)
  variables = _init_variables(model, np.zeros((1, BLOB_SIZE, BLOB_SIZE, 1), np.float32), seed=0)
  tx = optax.adam(1e-2)

  @jax.jit
  def train_step(params, batch_stats, opt_state, images, labels):
    def loss_fn(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, images, train=True,
                                    mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates
    (_, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    steps, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, steps), updates["batch_stats"], opt_state

  params, batch_stats, opt_state = variables["params"], variables["batch_stats"], tx.init(variables["params"])
  for _ in range(40):
    images, labels, _ = _blob_images(rng, 16)
    params, batch_stats, opt_state = train_step(params, batch_stats, opt_state, images, labels)
  return model, {"params": params, "batch_stats": batch_stats}, _blob_images(rng, 48)


def test_channel_weights_equal_each_samples_spatially_averaged_gradient():
  # Split after block1, so the head (block2 convs + GAP + Dense) is non-linear in the features.
  model = SmallCNN(num_classes=3, widths=(4, 8), feature_layer="block1")
  images = np.random.default_rng(0).normal(size=(4, 8, 8, 2)).astype(np.float32)
  variables = _init_variables(model, images, seed=1)
  targets = np.array([2, 0, 1, 2])
  _, info = gradcam.grad_cam(model, variables, images, target_class=targets)
  feats = model.apply(variables, images, train=False, method=model.features)
  # One sample at a time through the head alone: nothing shared with the batched vjp.
  sample_grad = jax.jit(jax.grad(
      lambda a, c: model.apply(variables, a[None], train=False, method=model.head)[0, c]))
  for b, target in enumerate(targets):
    grad_b = sample_grad(feats[b], target)
    np.testing.assert_allclose(info["weights"][b], grad_b.mean(axis=(0, 1)), rtol=1e-5, atol=1e-7)
    expected_cam = np.maximum(np.einsum("hwc,c->hw", feats[b], grad_b.mean(axis=(0, 1))), 0)
    np.testing.assert_allclose(info["cam_lowres"][b], expected_cam, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(info["target_class"], targets)


@pytest.mark.parametrize("num_classes", [3, 1])
def test_gap_dense_head_weights_are_the_class_kernel_over_the_feature_area(num_classes):
  # For GAP + Dense, ∂logit_c/∂A_{ijk} = W_kc/(h·w) everywhere (Grad-CAM reduces to CAM); a
  # single binary logit uses −W for class 0.
  model = SmallCNN(num_classes=num_classes, widths=(4, 8))
  images = np.random.default_rng(2).normal(size=(3, 12, 12, 1)).astype(np.float32)
  variables = _init_variables(model, images, seed=3)
  cams, info = gradcam.grad_cam(model, variables, images)
  kernel = np.asarray(variables["params"]["head"]["predictions"]["kernel"])
  logits = np.asarray(info["logits"])
  if num_classes == 1:
    predicted = (logits[:, 0] > 0).astype(int)
    expected = np.where(predicted[:, None] == 1, 1.0, -1.0) * kernel[:, 0] / 36
  else:
    predicted = logits.argmax(-1)
    expected = kernel[:, predicted].T / 36
  np.testing.assert_array_equal(info["target_class"], predicted)
  np.testing.assert_allclose(info["weights"], expected, rtol=1e-5, atol=1e-8)
  assert cams.shape == (3, 12, 12)


class ChannelProbe(nn.Module):
  """features = ReLU(image); head = Dense(GAP): the logits read chosen image channels."""
  num_classes: int

  def setup(self):
    self.dense = nn.Dense(self.num_classes, use_bias=False)

  def features(self, x, train: bool):
    return nn.relu(x)

  def head(self, feats, train: bool):
    return self.dense(feats.mean(axis=(1, 2)))

  def __call__(self, x, train: bool):
    return self.head(self.features(x, train), train)


def _two_blob_image():
  """Channel 0 has a blob in the top-left corner, channel 1 one in the bottom-right corner."""
  image = np.zeros((1, 16, 16, 2), np.float32)
  image[0, 2:6, 3:6, 0] = np.array([1.0, 2.0, 1.0])
  image[0, 10:14, 11:13, 1] = 3.0
  return image


@pytest.mark.parametrize("num_classes,kernel", [(2, [[1.0, 0.0], [0.0, 1.0]]), (1, [[-1.0], [1.0]])])
def test_cam_highlights_the_region_whose_channel_drives_the_class_score(num_classes, kernel):
  model = ChannelProbe(num_classes)
  image = _two_blob_image()
  variables = {"params": {"dense": {"kernel": jnp.asarray(kernel)}}}
  cam_class0, _ = gradcam.grad_cam(model, variables, image, target_class=0)
  cam_class1, _ = gradcam.grad_cam(model, variables, image, target_class=1)
  # Same resolution, so the CAM is the driving channel divided by its max.
  np.testing.assert_allclose(cam_class0[0], image[0, ..., 0] / 2.0, atol=1e-6)
  np.testing.assert_allclose(cam_class1[0], image[0, ..., 1] / 3.0, atol=1e-6)


def test_cam_localises_the_blob_and_changes_when_weights_are_rerandomised(blob_classifier, tmp_path):
  model, trained, (images, labels, blobs) = blob_classifier
  cams, info = gradcam.grad_cam(model, trained, images)
  cams = np.asarray(cams)
  assert (np.asarray(info["target_class"]) == labels).mean() >= 0.9
  blob_contrast = cams[blobs].mean() / cams[~blobs].mean()
  assert blob_contrast > 2.5  # measured 4.4
  # Adebayo et al.: a map that survives re-randomising the weights explains nothing about them.
  random_variables = _init_variables(model, images[:1], seed=7)
  random_cams, _ = gradcam.grad_cam(model, random_variables, images, target_class=info["target_class"])
  random_cams = np.asarray(random_cams)
  correlations = [np.corrcoef(a.ravel(), b.ravel())[0, 1]
                  for a, b in zip(cams, random_cams) if a.std() > 0 and b.std() > 0]
  assert len(correlations) >= 40
  assert np.mean(correlations) < 0.5  # measured −0.20 … 0.32 over re-randomisation seeds 7–11
  assert random_cams[blobs].mean() / random_cams[~blobs].mean() < blob_contrast / 2
  titles = [f"true {y} / pred {p}" for y, p in zip(labels[:8], np.asarray(info["target_class"])[:8])]
  path = figures.save_cam_grid(str(tmp_path / "cams.png"), images[:8], cams[:8], titles)
  assert Image.open(path).size[0] > 400
  overlays = figures.cam_overlays(images[:8], cams[:8])
  assert overlays.shape == (8, BLOB_SIZE, BLOB_SIZE, 3) and overlays.dtype == np.uint8


@pytest.mark.parametrize("name,num_classes,layer,feature_size", [
    ("resnet18", 2, None, 1), ("resnet18", 2, "conv3", 4), ("vgg11", 1, None, 2)])
def test_project_classifiers_give_finite_unit_range_cams(name, num_classes, layer, feature_size):
  model = get_classifier(name, num_classes, width_multiplier=0.125)
  images = np.random.default_rng(4).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  variables = _init_variables(model, images, seed=5)
  cams, info = gradcam.grad_cam(model, variables, images, layer=layer)
  cams = np.asarray(cams)
  assert cams.shape == (2, 32, 32)
  assert np.isfinite(cams).all() and cams.min() >= 0.0 and cams.max() <= 1.0
  assert info["cam_lowres"].shape == (2, feature_size, feature_size)
  assert info["logits"].shape == (2, num_classes) and np.isfinite(info["logits"]).all()


def test_bad_layer_and_target_are_named_in_the_error():
  model = SmallCNN(num_classes=2, widths=(4,))
  images = np.zeros((2, 8, 8, 1), np.float32)
  variables = _init_variables(model, images, seed=0)
  with pytest.raises(ValueError, match=r"layer must be one of \('block1',\)"):
    gradcam.grad_cam(model, variables, images, layer="conv5")
  with pytest.raises(ValueError, match=r"target_class: expected values in \[0, 2\)"):
    gradcam.grad_cam(model, variables, images, target_class=2)


def test_overlay_blends_jet_colour_over_the_grey_image():
  image = np.full((4, 4), 100, np.uint8)
  cam = np.zeros((4, 4), np.float32)
  cam[0, 0] = 1.0
  overlay = figures.cam_overlay(image, cam, alpha=0.5)
  # jet(0) = dark blue (0, 0, 0.5), jet(1) = dark red (0.5, 0, 0).
  np.testing.assert_array_equal(overlay[1, 1], [50, 50, 114])
  np.testing.assert_array_equal(overlay[0, 0], [114, 50, 50])
  with pytest.raises(ValueError, match="cam shape"):
    figures.cam_overlay(image, np.zeros((3, 3)))


def test_reliability_and_confusion_figures_are_written(tmp_path):
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(3), size=200)
  labels = rng.integers(0, 3, 200)
  names = ["normal", "pneumonia", "COVID-19"]
  figures.reliability_diagram(str(tmp_path / "rel.png"), probs, labels, names,
                              calibrated_probs=np.full_like(probs, 1 / 3))
  figures.confusion_matrix_plot(str(tmp_path / "cm.png"), np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]]), names)
  assert Image.open(tmp_path / "rel.png").size[0] > Image.open(tmp_path / "rel.png").size[1] > 300
  assert os.path.getsize(tmp_path / "cm.png") > 10_000
  with pytest.raises(ValueError, match="2 class names"):
    figures.reliability_diagram(str(tmp_path / "bad.png"), probs, labels, names[:2])
