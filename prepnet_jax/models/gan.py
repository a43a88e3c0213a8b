"""GAN generators and discriminators/critics for 1-channel chest X-rays.

Two families, each with the initialisation of its source:
- the thesis's Keras-GAN models (seed 001 §3): MLP G/D (also conditional), the up-sample +
  conv generator and the strided-conv discriminator/critic; Keras conventions: glorot-uniform
  kernels, BatchNorm momentum 0.8 and epsilon 1e-3;
- Radford's DCGAN (PyTorch tutorial layout, seed 003 §003.2.3): ConvTranspose G and
  strided-conv D, kernels N(0, 0.02), BatchNorm γ ~ N(1, 0.02).

Generators map z (B, latent) to tanh images (B, S, S, C) in [−1, 1]; discriminators return
one logit (critic score) per image, shape (B,). `build_generator` / `build_discriminator`
turn `config.model` into modules; `model.kind` picks the pair and the loss (`KINDS`).

Every module computes in its `dtype` (bfloat16 under `config.half_precision`, see
`runtime.precision`) with float32 parameters; images leave a generator and logits (and the
VAE-GAN's similarity features) leave a discriminator as float32, so every loss and penalty is
float32.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from prepnet_jax.models.conv import Conv, ConvTranspose
from prepnet_jax.models.vgg import scaled

# kind → (generator, discriminator, loss); the training loop reads the loss.
KINDS = {
    "gan": ("mlp", "mlp", "ns"),
    "cgan": ("mlp", "mlp", "ns"),
    "dcgan": ("dcgan", "dcgan", "ns"),
    "dcgan_upsample": ("upsample_conv", "strided_conv", "ns"),
    "wgan": ("upsample_conv", "strided_conv", "wasserstein_clip"),
    "wgan_gp": ("upsample_conv", "strided_conv", "wasserstein_gp"),
}
CONDITIONINGS = ("embed_mul", "onehot_concat")
NORMS = ("batchnorm", "layernorm", "none")

keras_kernel_init = nn.initializers.xavier_uniform()  # Keras glorot_uniform
dcgan_kernel_init = nn.initializers.normal(0.02)


def dcgan_scale_init(key, shape, dtype=jnp.float32):
  """BatchNorm γ ~ N(1, 0.02) (PyTorch DCGAN `weights_init`)."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def keras_embedding_init(key, shape, dtype=jnp.float32):
  """Keras Embedding default: U(−0.05, 0.05)."""
  return jax.random.uniform(key, shape, dtype, -0.05, 0.05)


def num_doublings(image_size: int, start: int) -> int:
  """How many ×2 stages grow `start` to `image_size` (both powers of two apart)."""
  n = math.log2(image_size / start) if image_size > 0 else -1
  if n < 1 or n != int(n):
    raise ValueError(f"image_size={image_size} must be {start} times a power of two (≥ {2 * start})")
  return int(n)


def _norm(kind: str, train: bool, momentum: float, epsilon: float, scale_init=nn.initializers.ones,
          dtype: Any = jnp.float32):
  if kind == "batchnorm":
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon,
                        scale_init=scale_init, dtype=dtype)
  if kind == "layernorm":
    return nn.LayerNorm(epsilon=epsilon, dtype=dtype)
  if kind == "none":
    return lambda x: x
  raise ValueError(f"unknown normalisation {kind!r}; expected one of {NORMS}")


class LabelConditioning(nn.Module):
  """Mixes a class label into a flat input.

  'embed_mul': x ⊙ Embedding(label) (Keras-GAN CGAN, the thesis code); 'onehot_concat':
  [x, one_hot(label)] (the other reading of the thesis text).
  """
  num_classes: int
  mode: str = "embed_mul"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, labels):
    if labels is None:
      raise ValueError(f"a conditional model (num_classes={self.num_classes}) needs labels")
    labels = labels.astype(jnp.int32)
    if self.mode == "embed_mul":
      return x * nn.Embed(self.num_classes, x.shape[-1], embedding_init=keras_embedding_init,
                          dtype=self.dtype)(labels)
    if self.mode == "onehot_concat":
      return jnp.concatenate([x, jax.nn.one_hot(labels, self.num_classes, dtype=x.dtype)], axis=-1)
    raise ValueError(f"unknown conditioning {self.mode!r}; expected one of {CONDITIONINGS}")


class MLPGenerator(nn.Module):
  """Thesis vanilla/conditional G: [Dense → LeakyReLU → BN(0.8)] × 3 (256/512/1024) → tanh."""
  image_size: int
  channels: int = 1
  hidden: Sequence[int] = (256, 512, 1024)
  leaky_slope: float = 0.3
  bn_momentum: float = 0.8
  bn_epsilon: float = 1e-3
  num_classes: int = 0
  conditioning: str = "embed_mul"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, labels=None, train: bool = True):
    x = z.astype(self.dtype)
    if self.num_classes:
      x = LabelConditioning(self.num_classes, self.conditioning, self.dtype)(x, labels)
    for width in self.hidden:
      x = nn.Dense(width, kernel_init=keras_kernel_init, dtype=self.dtype)(x)
      x = nn.leaky_relu(x, self.leaky_slope)
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                       dtype=self.dtype)(x)
    x = nn.Dense(self.image_size * self.image_size * self.channels, kernel_init=keras_kernel_init, dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32)).reshape(-1, self.image_size, self.image_size, self.channels)


class MLPDiscriminator(nn.Module):
  """Thesis D: flatten → [Dense → LeakyReLU(0.2)] (512/256) → logit.

  CGAN (Keras-GAN): the flat image is conditioned first, widths 512/512/512 and Dropout(0.4)
  after every hidden block but the first.
  """
  hidden: Sequence[int] = (512, 256)
  leaky_slope: float = 0.2
  dropout: float = 0.0
  num_classes: int = 0
  conditioning: str = "embed_mul"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, labels=None, train: bool = True):
    x = images.reshape(images.shape[0], -1).astype(self.dtype)
    if self.num_classes:
      x = LabelConditioning(self.num_classes, self.conditioning, self.dtype)(x, labels)
    for i, width in enumerate(self.hidden):
      x = nn.leaky_relu(nn.Dense(width, kernel_init=keras_kernel_init, dtype=self.dtype)(x), self.leaky_slope)
      if i > 0 and self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.Dense(1, kernel_init=keras_kernel_init, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)


def upsample_nearest(x: jax.Array) -> jax.Array:
  """Keras UpSampling2D: ×2 nearest neighbour."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class UpsampleConvGenerator(nn.Module):
  """Thesis DCGAN (kernel 3) / WGAN (kernel 4) G: Dense(128·8·8, ReLU) → [UpSample → Conv →
  BN(0.8) → ReLU] per doubling (filters 128, 64, 64, ...) → Conv(channels) → tanh."""
  image_size: int
  channels: int = 1
  filters: Sequence[int] = (128, 64, 64, 64, 64)
  kernel: int = 3
  base_size: int = 8
  base_channels: int = 128
  bn_momentum: float = 0.8
  bn_epsilon: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, labels=None, train: bool = True):
    n = num_doublings(self.image_size, self.base_size)
    if n > len(self.filters):
      raise ValueError(f"image_size={self.image_size} needs {n} up-sampling blocks but "
                       f"filters={tuple(self.filters)} lists {len(self.filters)}")
    x = nn.relu(nn.Dense(self.base_channels * self.base_size ** 2, kernel_init=keras_kernel_init,
                         dtype=self.dtype)(z))
    x = x.reshape(-1, self.base_size, self.base_size, self.base_channels)
    k = (self.kernel, self.kernel)
    for features in self.filters[:n]:
      x = Conv(features, k, padding="SAME", kernel_init=keras_kernel_init, dtype=self.dtype)(upsample_nearest(x))
      x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=self.bn_epsilon,
                       dtype=self.dtype)(x)
      x = nn.relu(x)
    x = Conv(self.channels, k, padding="SAME", kernel_init=keras_kernel_init, dtype=self.dtype)(x)
    return jnp.tanh(x.astype(jnp.float32))


class StridedConvDiscriminator(nn.Module):
  """Thesis DCGAN discriminator (filters 32..256) and WGAN critic (16..128), Keras-GAN layout.

  Conv k3 s2 → LeakyReLU(0.2) → Dropout(0.25); then per filter: Conv k3 s2 (the last one
  `last_stride`, 1 in the code) → [ZeroPad bottom/right after the 2nd conv] → norm → LeakyReLU →
  Dropout; flatten → Dense(1). `norm='none'` is the WGAN-GP paper's critic.
  """
  filters: Sequence[int] = (32, 64, 128, 256)
  last_stride: int = 1
  norm: str = "batchnorm"
  dropout: float = 0.25
  leaky_slope: float = 0.2
  bn_momentum: float = 0.8
  bn_epsilon: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, labels=None, train: bool = True):
    x = images
    for i, features in enumerate(self.filters):
      stride = self.last_stride if i == len(self.filters) - 1 else 2
      x = Conv(features, (3, 3), strides=(stride, stride), padding="SAME", kernel_init=keras_kernel_init,
               dtype=self.dtype)(x)
      if i == 1:
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
      if i > 0:
        x = _norm(self.norm, train, self.bn_momentum, self.bn_epsilon, dtype=self.dtype)(x)
      x = nn.leaky_relu(x, self.leaky_slope)
      if self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = nn.Dense(1, kernel_init=keras_kernel_init, dtype=self.dtype)(x.reshape(x.shape[0], -1))
    return logits[:, 0].astype(jnp.float32)


class DCGANGenerator(nn.Module):
  """Radford DCGAN G: ConvT(k4, s1, VALID) to 4×4 → [ConvT k4 s2 → BN → ReLU]… → ConvT → tanh.

  Widths halve from width·min(2^(n−1), max_multiplier) down to `width` (64² with width 64:
  512, 256, 128, 64, as in the PyTorch tutorial). Also the VAE-GAN decoder.
  """
  image_size: int
  channels: int = 1
  width: int = 64
  max_multiplier: int = 8
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, labels=None, train: bool = True):
    n = num_doublings(self.image_size, 4)
    bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                              epsilon=self.bn_epsilon, scale_init=dcgan_scale_init, dtype=self.dtype)
    conv_t = lambda features, stride, padding: ConvTranspose(
        features, (4, 4), strides=(stride, stride), padding=padding, use_bias=False,
        kernel_init=dcgan_kernel_init, dtype=self.dtype)
    x = z.reshape(z.shape[0], 1, 1, z.shape[-1])
    for i in range(n):
      features = self.width * min(2 ** (n - 1 - i), self.max_multiplier)
      x = conv_t(features, 1, "VALID")(x) if i == 0 else conv_t(features, 2, "SAME")(x)
      x = nn.relu(bn()(x))
    return jnp.tanh(conv_t(self.channels, 2, "SAME")(x).astype(jnp.float32))


class DCGANDiscriminator(nn.Module):
  """Radford DCGAN D: Conv k4 s2 p1 → LeakyReLU(0.2); [Conv k4 s2 → norm → LeakyReLU]… to 4×4 →
  Conv k4 VALID → logit. `return_features=True` also returns the last 4×4 feature map (the
  VAE-GAN's learned-similarity layer)."""
  width: int = 64
  max_multiplier: int = 8
  norm: str = "batchnorm"
  leaky_slope: float = 0.2
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, labels=None, train: bool = True, return_features: bool = False):
    n = num_doublings(images.shape[1], 4)
    conv = lambda features: Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                                 use_bias=False, kernel_init=dcgan_kernel_init, dtype=self.dtype)
    x = nn.leaky_relu(conv(self.width)(images), self.leaky_slope)
    for i in range(1, n):
      x = conv(self.width * min(2 ** i, self.max_multiplier))(x)
      x = _norm(self.norm, train, self.bn_momentum, self.bn_epsilon, dcgan_scale_init, self.dtype)(x)
      x = nn.leaky_relu(x, self.leaky_slope)
    logits = Conv(1, (4, 4), padding="VALID", use_bias=False, kernel_init=dcgan_kernel_init, dtype=self.dtype)(x)
    logits = logits.reshape(images.shape[0]).astype(jnp.float32)
    return (logits, x.astype(jnp.float32)) if return_features else logits


def architectures(model_cfg) -> tuple[str, str, str]:
  """(generator, discriminator, loss) of `model_cfg.kind`, with explicit overrides applied."""
  kind = model_cfg.kind
  if kind not in KINDS:
    raise ValueError(f"unknown config.model.kind={kind!r}; expected one of {sorted(KINDS)}")
  generator, discriminator, loss = KINDS[kind]
  return (model_cfg.generator or generator, model_cfg.discriminator or discriminator, loss)


def build_generator(model_cfg, image_size: int, channels: int = 1, dtype: Any = jnp.float32) -> nn.Module:
  """G of `model_cfg` computing in `dtype` (`runtime.precision.compute_dtype(config)`)."""
  arch, _, _ = architectures(model_cfg)
  m = float(model_cfg.width_multiplier)
  num_classes = int(model_cfg.num_classes)
  if num_classes and arch != "mlp":
    raise ValueError(f"conditional training (model.num_classes={num_classes}) needs the 'mlp' "
                     f"generator, got model.generator={arch!r}")
  if arch == "mlp":
    return MLPGenerator(image_size, channels, tuple(scaled(w, m) for w in model_cfg.mlp_g_hidden),
                        float(model_cfg.g_leaky_slope), num_classes=num_classes,
                        conditioning=model_cfg.conditioning, dtype=dtype)
  if arch == "upsample_conv":
    return UpsampleConvGenerator(image_size, channels, tuple(scaled(f, m) for f in model_cfg.upsample_filters),
                                 int(model_cfg.upsample_kernel),
                                 base_channels=scaled(int(model_cfg.upsample_base_channels), m), dtype=dtype)
  if arch == "dcgan":
    return DCGANGenerator(image_size, channels, scaled(int(model_cfg.dcgan_width), m), dtype=dtype)
  raise ValueError(f"unknown generator {arch!r}; expected 'mlp', 'upsample_conv' or 'dcgan'")


def build_discriminator(model_cfg, dtype: Any = jnp.float32) -> nn.Module:
  """D (critic) of `model_cfg` computing in `dtype`; its logits are float32."""
  _, arch, _ = architectures(model_cfg)
  m = float(model_cfg.width_multiplier)
  num_classes = int(model_cfg.num_classes)
  if num_classes and arch != "mlp":
    raise ValueError(f"conditional training (model.num_classes={num_classes}) needs the 'mlp' "
                     f"discriminator, got model.discriminator={arch!r}")
  if arch == "mlp":
    return MLPDiscriminator(tuple(scaled(w, m) for w in model_cfg.mlp_d_hidden), dropout=float(model_cfg.d_dropout),
                            num_classes=num_classes, conditioning=model_cfg.conditioning, dtype=dtype)
  if arch == "strided_conv":
    return StridedConvDiscriminator(tuple(scaled(f, m) for f in model_cfg.conv_d_filters),
                                    int(model_cfg.conv_d_last_stride), model_cfg.d_norm,
                                    float(model_cfg.d_dropout), dtype=dtype)
  if arch == "dcgan":
    return DCGANDiscriminator(scaled(int(model_cfg.dcgan_width), m), norm=model_cfg.d_norm, dtype=dtype)
  raise ValueError(f"unknown discriminator {arch!r}; expected 'mlp', 'strided_conv' or 'dcgan'")
