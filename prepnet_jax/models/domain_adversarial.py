"""Domain-adversarial training (DANN) as a model wrapper: a classifier plus an origin head.

Ganin et al., "Domain-Adversarial Training of Neural Networks" (JMLR 2016): a domain (here:
dataset-of-origin) classifier reads the task network's features through a gradient-reversal
layer, so minimising the summed losses trains the origin head to recognise the site while the
features are pushed to hide it. PrepNet uses the same origin discriminator, but on images (its
AE's output) instead of on the classifier's features: this wrapper is the feature-level version
of the same idea, on the same E_cov.

`WithOriginHead(classifier)` behaves exactly as `classifier` when called (so evaluation, the
jitted eval steps and calibration see an ordinary one-logit E_cov); `both` returns the task
logits and the origin logits of one forward pass.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def gradient_reversal(x, scale):
  """Identity forward; the backward pass multiplies the gradient by −scale (Ganin's GRL)."""
  return x


def _reversal_fwd(x, scale):
  return x, scale


def _reversal_bwd(scale, g):
  return -scale * g, jnp.zeros_like(scale)


gradient_reversal.defvjp(_reversal_fwd, _reversal_bwd)


def ganin_lambda(progress):
  """Ganin's ramp 2 / (1 + exp(−10 p)) − 1 from 0 to ~1 over training progress p ∈ [0, 1]: the
  origin head learns before its reversed gradient is allowed to shape the features."""
  return 2.0 / (1.0 + jnp.exp(-10.0 * progress)) - 1.0


class WithOriginHead(nn.Module):
  """A `StagedClassifier` (VGG / ResNet / small CNN) with a dataset-origin head on its
  spatially averaged `features` map: Dense(hidden) → ReLU → Dense(num_domains)."""
  classifier: nn.Module
  num_domains: int
  hidden: int = 64

  def setup(self):
    self.origin_hidden = nn.Dense(self.hidden, name="origin_hidden")
    self.origin_out = nn.Dense(self.num_domains, name="origin_out")

  def __call__(self, x, train: bool):
    if self.is_initializing():  # create the origin head's parameters too
      return self.both(x, train, jnp.zeros(()))[0]
    return self.classifier(x, train)

  def both(self, x, train: bool, reversal):
    """(task logits, origin logits); the origin head's gradient reaches the features × −reversal."""
    feats = self.classifier.features(x, train)
    logits = self.classifier.head(feats, train)
    pooled = jnp.mean(feats.astype(jnp.float32), axis=(1, 2))
    h = nn.relu(self.origin_hidden(gradient_reversal(pooled, jnp.asarray(reversal, jnp.float32))))
    return logits, self.origin_out(h)
