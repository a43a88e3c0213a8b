"""Generative models and their losses: shapes, parameter counts of the thesis layouts,
initialisations, label conditioning, and closed-form values of the losses."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import cgan, dcgan, gan as gan_config, vae, wgan, wgan_gp
from prepnet_jax.losses import gan as gan_losses
from prepnet_jax.models import gan as gan_models, vae as vae_models, vaegan as vaegan_models

KEY = jax.random.key(0)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _shapes(model, *inputs, **kwargs):
  return jax.eval_shape(lambda: model.init({"params": KEY, "dropout": KEY}, *inputs, train=False, **kwargs))


def test_gradient_penalty_of_a_linear_critic_is_analytic():
  w = jax.random.normal(jax.random.key(1), (4 * 4 * 1,)) * 0.7
  critic = lambda x: x.reshape(x.shape[0], -1) @ w
  real = jax.random.uniform(jax.random.key(2), (8, 4, 4, 1), minval=-1, maxval=1)
  fake = jax.random.uniform(jax.random.key(3), (8, 4, 4, 1), minval=-1, maxval=1)
  penalty = gan_losses.gradient_penalty(critic, real, fake, jax.random.key(4), weight=10.0)
  expected = 10.0 * (float(jnp.linalg.norm(w)) - 1.0) ** 2
  assert float(penalty) == pytest.approx(expected, rel=1e-5)
  unit = gan_losses.gradient_penalty(lambda x: x.reshape(x.shape[0], -1) @ (w / jnp.linalg.norm(w)),
                                     real, fake, jax.random.key(4))
  assert float(unit) == pytest.approx(0.0, abs=1e-6)


def test_gaussian_kl_matches_hand_computed_value():
  mean = jnp.array([[0.5, -1.0]])
  logvar = jnp.array([[0.0, math.log(2.0)]])
  # ½ [(1 + 0.25 − 1 − 0) + (2 + 1 − 1 − ln 2)] = ½ (2.25 − ln 2)
  assert float(gan_losses.gaussian_kl(mean, logvar)) == pytest.approx(0.5 * (2.25 - math.log(2.0)), rel=1e-6)
  assert float(gan_losses.gaussian_kl(jnp.zeros((3, 5)), jnp.zeros((3, 5)))) == 0.0


def test_gan_losses_closed_forms():
  zeros = jnp.zeros(6)
  assert float(gan_losses.discriminator_loss(zeros, zeros)) == pytest.approx(math.log(2.0), rel=1e-6)
  assert float(gan_losses.generator_loss(jnp.full(4, 2.0), "ns")) == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)
  assert float(gan_losses.generator_loss(jnp.full(4, 2.0), "minimax")) == pytest.approx(-math.log1p(math.exp(2.0)), rel=1e-6)
  real, fake = jnp.array([1.0, 3.0]), jnp.array([-1.0, 0.0])
  assert float(gan_losses.wasserstein_critic_loss(real, fake)) == pytest.approx(-2.5)
  assert float(gan_losses.wasserstein_generator_loss(fake)) == pytest.approx(0.5)
  assert float(gan_losses.discriminator_accuracy(jnp.array([1.0, -1.0]), jnp.array([-1.0, -2.0]))) == 0.75
  a, b = jnp.ones((2, 3, 3, 4)), jnp.zeros((2, 3, 3, 4))
  assert float(gan_losses.feature_loss(a, b)) == pytest.approx(0.5 * 36)
  clipped = gan_losses.clip_weights({"w": jnp.array([-0.5, 0.005, 0.3])}, 0.01)
  np.testing.assert_allclose(clipped["w"], [-0.01, 0.005, 0.01])


def test_reconstruction_losses():
  target = jnp.array([[[[1.0], [-1.0]]]])  # (1, 1, 2, 1)
  logits = jnp.array([[[[0.0], [0.0]]]])
  assert float(gan_losses.reconstruction_loss(logits, target, "bce")) == pytest.approx(2 * math.log(2.0), rel=1e-6)
  assert float(gan_losses.reconstruction_loss(jnp.zeros_like(target), target, "mse")) == pytest.approx(1.0)


def test_thesis_mlp_gan_parameter_counts_at_64():
  cfg = gan_config.gan_model("gan")
  g = _shapes(gan_models.build_generator(cfg, 64), jnp.zeros((1, 100)))
  # Dense 100→256→512→1024→4096 (thesis table: 25,856 + 131,584 + 525,312 + 4,198,400) + BN γ, β.
  assert _count(g["params"]) == 25_856 + 131_584 + 525_312 + 4_198_400 + 2 * (256 + 512 + 1024)
  d = _shapes(gan_models.build_discriminator(cfg), jnp.zeros((1, 64, 64, 1)))
  assert _count(d["params"]["Dense_0"]) == 2_097_664


@pytest.mark.parametrize("filters,flat", [((32, 64, 128, 256), 20_736), ((16, 32, 64, 128), 10_368)])
def test_thesis_strided_conv_discriminators_flatten_as_the_code(filters, flat):
  """Keras-GAN's zero-pad after the 2nd conv and last stride 1: 9×9×256 (DCGAN D), 9×9×128 (WGAN critic)."""
  d = _shapes(gan_models.StridedConvDiscriminator(filters), jnp.zeros((1, 64, 64, 1)))
  assert d["params"]["Dense_0"]["kernel"].shape == (flat, 1)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("kind", sorted(gan_models.KINDS))
def test_gan_shapes(kind, size):
  cfg = gan_config.gan_model(kind)
  cfg.num_classes = 2 if kind == "cgan" else 0
  g, d = gan_models.build_generator(cfg, size), gan_models.build_discriminator(cfg)
  labels = jnp.array([0, 1, 1]) if cfg.num_classes else None
  z = jnp.zeros((3, 100))

  def forward():
    g_vars = g.init({"params": KEY}, z, labels, train=False)
    images = g.apply(g_vars, z, labels, train=False)
    d_vars = d.init({"params": KEY, "dropout": KEY}, images, labels, train=False)
    return images, d.apply(d_vars, images, labels, train=False)

  images, scores = jax.eval_shape(forward)
  assert images.shape == (3, size, size, 1)
  assert scores.shape == (3,)


def test_dcgan_layers_and_init_follow_radford():
  g = _shapes(gan_models.DCGANGenerator(64, width=64), jnp.zeros((1, 100)))["params"]
  assert [g[f"ConvTranspose_{i}"]["kernel"].shape[-1] for i in range(5)] == [512, 256, 128, 64, 1]
  d = gan_models.DCGANDiscriminator(64)
  d_vars = _shapes(d, jnp.zeros((1, 64, 64, 1)))
  assert [d_vars["params"][f"Conv_{i}"]["kernel"].shape[-1] for i in range(5)] == [64, 128, 256, 512, 1]
  _, features = jax.eval_shape(lambda: d.apply(d.init(KEY, jnp.zeros((2, 64, 64, 1)), train=False),
                                               jnp.zeros((2, 64, 64, 1)), train=False, return_features=True))
  assert features.shape == (2, 4, 4, 512)
  kernel = np.asarray(gan_models.dcgan_kernel_init(KEY, (4, 4, 256, 128)))
  assert kernel.std() == pytest.approx(0.02, rel=0.02) and abs(kernel.mean()) < 1e-3
  gamma = np.asarray(gan_models.dcgan_scale_init(KEY, (4096,)))
  assert gamma.mean() == pytest.approx(1.0, abs=1e-3) and gamma.std() == pytest.approx(0.02, rel=0.05)


def _relative_change(a, b) -> float:
  return float(jnp.mean(jnp.abs(a - b)) / jnp.mean(jnp.abs(a) + jnp.abs(b)))


@pytest.mark.parametrize("conditioning", gan_models.CONDITIONINGS)
def test_cgan_outputs_depend_on_the_label(conditioning):
  g = gan_models.MLPGenerator(32, hidden=(16, 16), num_classes=2, conditioning=conditioning)
  d = gan_models.MLPDiscriminator((16, 16), num_classes=2, conditioning=conditioning)
  z = jax.random.normal(KEY, (4, 100))
  g_vars = g.init(KEY, z, jnp.zeros(4, jnp.int32), train=False)
  as_0 = g.apply(g_vars, z, jnp.zeros(4, jnp.int32), train=False)
  as_1 = g.apply(g_vars, z, jnp.ones(4, jnp.int32), train=False)
  assert _relative_change(as_0, as_1) > 0.05
  d_vars = d.init(KEY, as_0, jnp.zeros(4, jnp.int32), train=False)
  score_0 = d.apply(d_vars, as_0, jnp.zeros(4, jnp.int32), train=False)
  score_1 = d.apply(d_vars, as_0, jnp.ones(4, jnp.int32), train=False)
  assert _relative_change(score_0, score_1) > 0.05
  with pytest.raises(ValueError, match="needs labels"):
    g.apply(g_vars, z, None, train=False)


def test_vae_fc_layout_of_seed_003():
  cfg = dict(kind="vae_fc", width_multiplier=1.0, fc_hidden=400, latent_dim=20, recon_loss="bce", conv_filters=(), conv_kernel=5)
  vae = vae_models.build_vae(ml_collections.ConfigDict(cfg), 100)
  params = _shapes(vae, jnp.zeros((1, 100, 100, 1)), KEY)["params"]
  assert params["enc_hidden"]["kernel"].shape == (10_000, 400)
  assert params["enc_mean"]["kernel"].shape == (400, 20)
  assert params["dec_out"]["kernel"].shape == (400, 10_000)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("model", [
    vae_models.FCVAE(0, hidden=8, latent_dim=6),
    vae_models.ConvVAE(0, filters=(4, 4, 8, 8, 8), latent_dim=6),
    vae_models.ConvVAE(0, filters=(4, 8), latent_dim=6, recon_loss="bce")])
def test_vae_shapes(model, size):
  model = model.clone(image_size=size)
  x = jnp.zeros((3, size, size, 1))

  def forward():
    variables = model.init({"params": KEY}, x, KEY, train=False)
    return model.apply(variables, x, KEY, train=False), model.apply(variables, jnp.zeros((5, 6)), method="generate")

  (output, mean, logvar), images = jax.eval_shape(forward)
  assert output.shape == x.shape and mean.shape == logvar.shape == (3, 6)
  assert images.shape == (5, size, size, 1)


def test_vae_outputs_map_to_the_generator_range():
  logits = jnp.array([0.0, 100.0, -100.0, 1.0])
  np.testing.assert_allclose(vae_models.output_to_image(logits, "bce"),
                             2 * jax.nn.sigmoid(logits) - 1, atol=1e-6)
  np.testing.assert_allclose(vae_models.output_to_image(logits, "bce")[:3], [0.0, 1.0, -1.0], atol=1e-6)


@pytest.mark.parametrize("size", [32, 64])
def test_vaegan_shapes(size):
  cfg = ml_collections.ConfigDict(dict(latent_dim=12, width_multiplier=0.25, dcgan_width=64, d_norm="batchnorm"))
  encoder, decoder, discriminator = vaegan_models.build_vaegan(cfg, size)
  x, z = jnp.zeros((2, size, size, 1)), jnp.zeros((2, 12))

  def forward():
    encoded = encoder.apply(encoder.init(KEY, x, train=False), x, train=False)
    images = decoder.apply(decoder.init(KEY, z, train=False), z, train=False)
    scored = discriminator.apply(discriminator.init(KEY, images, train=False), images, train=False,
                                 return_features=True)
    return encoded, images, scored

  (mean, logvar), images, (logits, features) = jax.eval_shape(forward)
  assert mean.shape == logvar.shape == (2, 12)
  assert images.shape == (2, size, size, 1)
  assert logits.shape == (2,) and features.shape == (2, 4, 4, 16 * (4 if size == 32 else 8))


def test_bad_sizes_and_kinds_are_named():
  with pytest.raises(ValueError, match="image_size=48"):
    gan_models.DCGANGenerator(48).init(KEY, jnp.zeros((1, 100)), train=False)
  cfg = gan_config.gan_model("nope")
  with pytest.raises(ValueError, match="model.kind='nope'"):
    gan_models.build_generator(cfg, 64)
  cfg = gan_config.gan_model("dcgan")
  cfg.num_classes = 2
  with pytest.raises(ValueError, match="needs the 'mlp' generator"):
    gan_models.build_generator(cfg, 64)


def test_thesis_presets_hold_the_thesis_protocol():
  for module in (gan_config, cgan, dcgan, wgan, wgan_gp):
    c = module.get_config("thesis")
    assert (c.num_steps, c.batch_size, c.model.latent_dim, c.save_every) == (10000, 32, 100, 500)
    assert c.model.width_multiplier == 1.0 and c.data.class_filter == ([] if module is cgan else [1])
  assert gan_config.get_config("thesis").optim.g.to_dict() == gan_config.adam(2e-4).to_dict()
  assert gan_config.get_config("thesis").sample_every == 500
  assert dcgan.get_config("thesis").model.kind == "dcgan_upsample"
  for module in (wgan, wgan_gp):
    c = module.get_config("thesis")
    assert (c.n_critic, c.optim.g.name, c.optim.g.learning_rate, c.optim.d.learning_rate) == (5, "rmsprop", 5e-5, 5e-5)
  assert wgan.get_config("thesis").clip_value == 0.01 and wgan_gp.get_config("thesis").gp_weight == 10.0
  v = vae.get_config("thesis")
  assert (v.model.kind, v.model.latent_dim, v.optim.learning_rate, v.batch_size) == ("vae_conv", 512, 1e-4, 64)
  with pytest.raises(ValueError, match="unknown preset"):
    gan_config.get_config("paper")
