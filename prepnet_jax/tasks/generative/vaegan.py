"""VAE-GAN training (task 'vaegan'), Larsen et al. 2016 as seed 003 uses it.

One forward pass over x (real), x̃ = Dec(Enc(x)) and x_p = Dec(z_p), z_p ~ N(0, I), then each
network descends its own loss with its own optimizer:
  encoder:        kl_weight · KL + L_feat (+ recon_weight · pixel MSE)
  decoder:        feature_weight · L_feat + NS-GAN(D(x̃), D(x_p)) (+ recon_weight · pixel MSE)
  discriminator:  BCE(D(x), 1) + BCE(D(x̃), 0) + BCE(D(x_p), 0)
where L_feat = ½ Σ (D_l(x) − D_l(x̃))² on D's last hidden feature map. Optional equilibrium
gating (lucabergamini/VAEGAN-PYTORCH): D skips its update when BCE(D(x), 1) or BCE(D(x_p), 0)
is below equilibrium − margin, the decoder when either is above equilibrium + margin (both
train when both would skip).

State (`VAEGANState`): step, encoder / decoder / discriminator `TrainState`s, RNG key.
Optimizers: `config.optim.g` for the encoder and the decoder (one state each), `config.optim.d`.
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp

from prepnet_jax.eval import generators
from prepnet_jax.losses import gan as gan_losses
from prepnet_jax.models import vae as vae_models, vaegan as vaegan_models
from prepnet_jax.runtime import optimizers, precision, sharding
from prepnet_jax.runtime.state import TrainState
from prepnet_jax.tasks.generative import common as gen_common
from prepnet_jax.tasks.generative.common import select_tree


@flax.struct.dataclass
class VAEGANState:
  step: jax.Array
  encoder: TrainState
  decoder: TrainState
  discriminator: TrainState
  rng: jax.Array


def state_initializer(config):
  """fn(rng) → a fresh `VAEGANState` (modules and optimizers built once, see gan.state_initializer)."""
  size, channels = int(config.preprocess.image_size), int(config.preprocess.channels)
  encoder, decoder, discriminator = vaegan_models.build_vaegan(config.model, size, channels,
                                                               precision.compute_dtype(config))
  enc_tx, dec_tx = optimizers.make_optimizer(config.optim.g), optimizers.make_optimizer(config.optim.g)
  dis_tx = optimizers.make_optimizer(config.optim.d)
  images, z = jnp.zeros((1, size, size, channels)), jnp.zeros((1, int(config.model.latent_dim)))

  def init(rng: jax.Array) -> VAEGANState:
    k_enc, k_dec, k_dis, rng = jax.random.split(rng, 4)
    return VAEGANState(step=jnp.zeros((), jnp.int32),
                       encoder=gen_common.create_net(encoder, enc_tx, k_enc, images),
                       decoder=gen_common.create_net(decoder, dec_tx, k_dec, z),
                       discriminator=gen_common.create_net(discriminator, dis_tx, k_dis, images), rng=rng)

  return init


def _forward(state: VAEGANState, params, x, k_noise, z_prior, *, kl_weight, feature_weight, recon_weight):
  """(encoder, decoder, discriminator) losses, new BatchNorm stats and metrics."""
  enc_params, dec_params, dis_params = params
  (mean, logvar), enc_up = state.encoder.apply_fn(state.encoder.variables_with(enc_params), x, train=True,
                                                  mutable=["batch_stats"])
  z = vae_models.reparameterize(k_noise, mean, logvar)
  decoded, dec_up = state.decoder.apply_fn(state.decoder.variables_with(dec_params), jnp.concatenate([z, z_prior]),
                                           train=True, mutable=["batch_stats"])
  x_tilde, x_prior = jnp.split(decoded, 2)
  (logits, features), dis_up = state.discriminator.apply_fn(
      state.discriminator.variables_with(dis_params), jnp.concatenate([x, x_tilde, x_prior]), train=True,
      return_features=True, mutable=["batch_stats"])
  l_real, l_tilde, l_prior = jnp.split(logits, 3)
  f_real, f_tilde, _ = jnp.split(features, 3)
  kl = gan_losses.gaussian_kl(mean, logvar)
  feature = gan_losses.feature_loss(f_real, f_tilde)
  pixel = gan_losses.reconstruction_loss(x_tilde, x, "mse")
  bce_real, bce_prior = gan_losses.bce_with_logits(l_real, 1.0), gan_losses.bce_with_logits(l_prior, 0.0)
  d_loss = bce_real + gan_losses.bce_with_logits(l_tilde, 0.0) + bce_prior
  g_adv = gan_losses.generator_loss(l_tilde) + gan_losses.generator_loss(l_prior)
  losses = (kl_weight * kl + feature + recon_weight * pixel,
            feature_weight * feature + g_adv + recon_weight * pixel,
            d_loss)
  stats = tuple(up.get("batch_stats", net.batch_stats) for up, net in
                ((enc_up, state.encoder), (dec_up, state.decoder), (dis_up, state.discriminator)))
  metrics = {"kl": kl, "feature": feature, "pixel_mse": pixel, "d_loss": d_loss, "g_adv": g_adv,
             "bce_real": bce_real, "bce_prior": bce_prior}
  return losses, (stats, metrics)


def train_step(state: VAEGANState, batch: dict, *, latent_dim: int, kl_weight: float, feature_weight: float,
               recon_weight: float, gating: bool, equilibrium: float, margin: float, mesh):
  rng, k_noise, k_prior = jax.random.split(state.rng, 3)
  x = batch["image"][:, 0]
  z_prior = gen_common.with_data_sharding(jax.random.normal(k_prior, (x.shape[0], latent_dim)), mesh)
  forward = functools.partial(_forward, state, x=x, k_noise=k_noise, z_prior=z_prior, kl_weight=kl_weight,
                              feature_weight=feature_weight, recon_weight=recon_weight)
  params = (state.encoder.params, state.decoder.params, state.discriminator.params)
  losses, vjp, (stats, metrics) = jax.vjp(forward, params, has_aux=True)
  # Each network descends its own loss: one backward pass per loss, keep that network's part.
  grads = [vjp(tuple(jnp.float32(i == j) for j in range(3)))[0][i] for i in range(3)]
  encoder = state.encoder.apply_gradients(grads[0], batch_stats=stats[0])
  decoder = state.decoder.apply_gradients(grads[1], batch_stats=stats[1])
  discriminator = state.discriminator.apply_gradients(grads[2], batch_stats=stats[2])
  train_dis, train_dec = jnp.bool_(True), jnp.bool_(True)
  if gating:
    bce_real, bce_prior = metrics["bce_real"], metrics["bce_prior"]
    train_dis = ~((bce_real < equilibrium - margin) | (bce_prior < equilibrium - margin))
    train_dec = ~((bce_real > equilibrium + margin) | (bce_prior > equilibrium + margin))
    neither = ~(train_dis | train_dec)
    train_dis, train_dec = train_dis | neither, train_dec | neither
    decoder = select_tree(train_dec, decoder, state.decoder)
    discriminator = select_tree(train_dis, discriminator, state.discriminator)
  state = state.replace(step=state.step + 1, encoder=encoder, decoder=decoder, discriminator=discriminator, rng=rng)
  metrics = {**metrics, "encoder_loss": losses[0], "decoder_loss": losses[1],
             "train_dis": train_dis.astype(jnp.float32), "train_dec": train_dec.astype(jnp.float32)}
  return state, metrics


def generate(state: VAEGANState, z: jax.Array, labels: jax.Array) -> jax.Array:
  return generators.vaegan_images(state.decoder, z, labels)


def make_family(config, mesh) -> gen_common.Family:
  step = functools.partial(
      train_step, latent_dim=int(config.model.latent_dim), kl_weight=float(config.kl_weight),
      feature_weight=float(config.feature_weight), recon_weight=float(config.recon_weight),
      gating=bool(config.equilibrium_gating), equilibrium=float(config.equilibrium), margin=float(config.margin),
      mesh=mesh)
  return gen_common.Family(name=config.model.kind, init_state=jax.jit(state_initializer(config)), train_step=jax.jit(step, donate_argnums=0),
                           generate=jax.jit(generate), latent_dim=int(config.model.latent_dim))


def train_and_evaluate(config, workdir: str) -> dict:
  mesh = sharding.make_mesh()
  return gen_common.fit(config, workdir, gen_common.build_family(make_family, config, mesh), mesh)
