"""Batched Grad-CAM (Selvaraju et al.) for every classifier of the project.

Every classifier splits into `features(x, train)` → feature map A (B,h,w,C) of its
`feature_layer` and `head(A, train)` → logits (B,K), with `__call__ == head ∘ features` for any
`feature_layer` (see `prepnet_jax/models/`). That split is how Flax gives gradients with respect
to an intermediate activation (google/flax#4058): Grad-CAM differentiates the head only.

For each sample b with target class c_b:
  score_b   = logit_{b,c_b} (pre-softmax; K = 1: +logit for class 1 and −logit for class 0, so the
              binary single-logit CAM of class 0 shows the evidence *against* class 1)
  grads     = ∂(Σ_b score_b)/∂A, which is each sample's own ∂score_b/∂A_b because the eval-mode
              head (running BatchNorm statistics, no dropout) never mixes samples
  weights   = spatial mean of grads (B,C)                      — `channel_weights`
  cam       = ReLU(Σ_k weights_k · A_k), bilinearly resized to the image and divided by its max
The COVID-Net code of paper 002 averaged over channels instead of summing and averaged the
gradients over the batch too (it ran with batch 1); after the max-normalisation the channel
mean only rescales, and per-sample weights are what batch 1 computes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def channel_weights(grads: jax.Array) -> jax.Array:
  """Grad-CAM importance of each channel: the spatial mean of ∂score/∂A, (B,h,w,C) → (B,C)."""
  return jnp.mean(grads.astype(jnp.float32), axis=(1, 2))


def at_layer(model, layer: str | None):
  """`model` with `features`/`head` split at stage `layer` (same variables); None keeps it."""
  if layer is None:
    return model
  stages = getattr(model, "stage_names", None)
  if stages is None or not hasattr(model, "feature_layer"):
    raise ValueError(f"grad_cam layer={layer!r}: {type(model).__name__} has no `feature_layer`/"
                     "`stage_names`, so only its default feature map can be used (layer=None)")
  if layer not in stages:
    raise ValueError(f"grad_cam layer must be one of {tuple(stages)} for {type(model).__name__}, "
                     f"got {layer!r}")
  return model.clone(feature_layer=layer)


def _class_score_cotangent(logits: jax.Array, target: jax.Array) -> jax.Array:
  """d(Σ_b score_b)/d logits: one-hot of the target, or ±1 for a single binary logit."""
  if logits.shape[-1] == 1:
    return jnp.where(target == 1, 1.0, -1.0)[:, None].astype(logits.dtype)
  return jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype)


def predicted_class(logits: jax.Array) -> jax.Array:
  """argmax for K ≥ 2 logits; logit > 0 for a single binary logit."""
  if logits.shape[-1] == 1:
    return (logits[:, 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnums=(0,))
def _grad_cam_lowres(model, variables, images, requested_class):
  feats = model.apply(variables, images, train=False, method=model.features)
  head = lambda a: model.apply(variables, a, train=False, method=model.head)
  logits, head_vjp = jax.vjp(head, feats)
  target = jnp.where(requested_class < 0, predicted_class(logits), requested_class)
  cotangent = _class_score_cotangent(logits, target)
  (grads,) = head_vjp(cotangent)
  weights = channel_weights(grads)
  cam = jax.nn.relu(jnp.einsum("bhwc,bc->bhw", feats.astype(jnp.float32), weights))
  scores = jnp.sum(logits * cotangent, axis=-1)
  return cam, dict(logits=logits.astype(jnp.float32), target_class=target, scores=scores,
                   weights=weights, cam_lowres=cam)


def _normalise_per_sample(cams: jax.Array) -> jax.Array:
  peak = cams.max(axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, cams / jnp.where(peak > 0, peak, 1.0), 0.0)


def grad_cam(model, variables, images, target_class=None, layer: str | None = None):
  """Grad-CAM maps for a batch of model-ready images (B,H,W,C).

  target_class: None (each sample's predicted class), an int for all samples, or (B,) ints.
  layer: a stage name of the model (e.g. 'conv4' for ResNet, 'block4' for VGG) or None for the
  model's own `feature_layer` (its last conv stage by default).
  Returns (cams (B,H,W) float32 in [0,1], info) where info holds logits (B,K), target_class (B,),
  scores (B,) (the differentiated class scores), weights (B,C) and cam_lowres (B,h,w), the
  un-normalised map at the feature resolution. A sample whose map is ReLU'd to all zeros (no
  positive evidence) gets an all-zero CAM.
  """
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"grad_cam images: expected (B,H,W,C), got shape {images.shape}")
  model = at_layer(model, layer)
  batch = images.shape[0]
  requested = -1 if target_class is None else target_class
  requested = jnp.broadcast_to(jnp.asarray(requested, jnp.int32), (batch,))
  cam, info = _grad_cam_lowres(model, variables, images, requested)
  num_classes = max(info["logits"].shape[-1], 2)
  if target_class is not None and not bool(jnp.all((requested >= 0) & (requested < num_classes))):
    raise ValueError(f"grad_cam target_class: expected values in [0, {num_classes}) or None, "
                     f"got {np.asarray(target_class).tolist()}")
  upsampled = jax.image.resize(cam, (batch,) + images.shape[1:3], method="bilinear")
  return _normalise_per_sample(jnp.clip(upsampled, 0.0)), info
