"""VAE-GAN (Larsen et al.; seed 003 §003.2.4) on COVID-positive phantom chest X-rays: ResNet-18
encoder (random init), DCGAN decoder/generator, DCGAN discriminator whose last hidden features
are the reconstruction metric.

  python main.py --config=configs/vaegan.py --workdir=runs/vaegan

Losses: encoder KL + L_feat; decoder feature_weight · L_feat + NS-GAN; D BCE on real,
reconstructed and prior samples (see prepnet_jax/tasks/generative/vaegan.py). Optional equilibrium
gating (lucabergamini): --config.equilibrium_gating=True.
CPU-fast default: 64×64, width ×0.25, z 128, Adam 2e-4/β1 0.5, 300 iterations, about 2–3 min
on 2 CPU cores; expected fd_randinit ≈ 125 → ≈ 25.
Paper settings: --config=configs/vaegan.py:thesis (width ×1, z 512, lr 2e-4, 10000 iterations;
seed 003 gives neither batch size, epochs nor loss weights).
"""

import ml_collections

from configs import gan


def get_config(preset=None):
  c = gan.generative_base("vaegan", preset)
  thesis = c.preset == "thesis"
  c.model = ml_collections.ConfigDict(dict(
      kind="vaegan",
      latent_dim=512 if thesis else 128,
      width_multiplier=1.0 if thesis else 0.25,
      dcgan_width=64,
      d_norm="batchnorm",
  ))
  c.optim = ml_collections.ConfigDict()
  c.optim.g = gan.adam(2e-4)        # encoder and decoder (one optimizer state each)
  c.optim.d = gan.adam(2e-4)
  c.kl_weight = 1.0
  c.feature_weight = 1.0            # γ: feature error vs GAN term in the decoder loss
  c.recon_weight = 0.0              # pixel MSE on top of the feature loss (Larsen: 0)
  c.equilibrium_gating = False
  c.equilibrium = 0.68
  c.margin = 0.35
  if not thesis:
    c.num_steps = 200
    c.sample_every = 50
    c.save_every = 100
  return c
