"""Classification and PrepNet losses (the generative ones live in `losses.gan` and `losses.stylegan2`).

Binary tasks use one logit and BCE; K-class tasks use softmax cross-entropy. Class weights
multiply each example's loss by the weight of its true class and the mean is normalised by the
summed weights (PyTorch's `CrossEntropyLoss(weight=...)` convention).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def classification_loss(logits: jax.Array, labels: jax.Array, class_weights: jax.Array | None = None) -> jax.Array:
  """Weighted BCE for (B,1) logits, weighted softmax CE for (B,K) logits."""
  labels = labels.astype(jnp.int32).reshape(-1)
  if logits.shape[-1] == 1:
    per_example = optax.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(logits.dtype))
  else:
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if class_weights is None:
    return per_example.mean()
  w = jnp.asarray(class_weights, per_example.dtype)[labels]
  return (per_example * w).sum() / w.sum()


def class_probabilities(logits: jax.Array) -> jax.Array:
  """P(positive) (B,) for one logit; softmax (B,K) otherwise."""
  if logits.shape[-1] == 1:
    return jax.nn.sigmoid(logits[:, 0])
  return jax.nn.softmax(logits, axis=-1)


# --- PrepNet (thesis §3) ---------------------------------------------------------------------

def reconstruction_loss(x: jax.Array, x_hat: jax.Array, kind: str = "l1") -> jax.Array:
  """L_rec: mean |X − X̂| ('l1', the thesis's equations) or mean (X − X̂)² ('l2', its prose)."""
  if kind == "l1":
    return jnp.abs(x - x_hat).mean()
  if kind == "l2":
    return jnp.square(x - x_hat).mean()
  raise ValueError(f"reconstruction loss must be 'l1' or 'l2', got {kind!r}")


def imaging_loss(img_logits: jax.Array, domains: jax.Array) -> jax.Array:
  """L_img: cross-entropy of E_img's K-way logits against the true dataset id."""
  return optax.softmax_cross_entropy_with_integer_labels(img_logits, domains.astype(jnp.int32)).mean()


def pseudo_label_loss(img_logits: jax.Array, rng: jax.Array, sigma: float = 0.005,
                      target: str = "logits") -> jax.Array:
  """L_pseu: L1 between E_img's output on X̂ and Gaussian pseudo-labels (forget imaging).

  target='logits' (default, reference §3.3): pseudo-labels ~ N(0, σ²) per sample and class, which
  pushes the logits to ≈0, i.e. a uniform softmax. target='probs': softmax probabilities against
  1/K + N(0, σ²).
  """
  noise = sigma * jax.random.normal(rng, img_logits.shape, img_logits.dtype)
  if target == "logits":
    return jnp.abs(img_logits - noise).mean()
  if target == "probs":
    k = img_logits.shape[-1]
    return jnp.abs(jax.nn.softmax(img_logits, -1) - (1.0 / k + noise)).mean()
  raise ValueError(f"pseudo-label target must be 'logits' or 'probs', got {target!r}")


def covid_loss(cov_logits: jax.Array, labels: jax.Array, class_weights: jax.Array | None = None) -> jax.Array:
  """L_cov: BCE of E_cov's single logit (or CE for K-class heads)."""
  return classification_loss(cov_logits, labels, class_weights)
