"""VAE on COVID-positive phantom chest X-rays: the thesis's convolutional VAE (seed 001 §3.6,
YongWookHa: [Conv k5 s2 → BN → LeakyReLU] 32..512, z 512, Adam 1e-4) or seed 003's
fully-connected one (S²→400→20, sigmoid + BCE): --config.model.kind=vae_fc
--config.model.latent_dim=20 --config.model.recon_loss=bce --config.optim.learning_rate=1e-3.

  python main.py --config=configs/vae.py --workdir=runs/vae

Loss: reconstruction (per-image sum; 'mse' = ½ Σ (x − x̂)² with a tanh decoder, 'bce' = BCE of
a sigmoid decoder against (x + 1)/2) + kl_weight · KL(q(z|x) ‖ N(0, I)).
CPU-fast default: vae_conv at 64×64, width ×0.25, z 128, 'bce', Adam 1e-3, 400 iterations of
batch 32, about 1 min on 2 CPU cores; expected fd_randinit ≈ 125 → ≈ 25.
Thesis settings: --config=configs/vae.py:thesis (width ×1, z 512, 'mse', Adam 1e-4, batch 64,
10000 iterations). Seed 003's per-class fine-tuning: train with --config.data.class_filter=[]
first, then branch with --config.resume_workdir=<that run> --config.data.class_filter=[1].
"""

import ml_collections

from configs import gan


def get_config(preset=None):
  c = gan.generative_base("vae", preset)
  thesis = c.preset == "thesis"
  c.model = ml_collections.ConfigDict(dict(
      kind="vae_conv",              # 'vae_conv' | 'vae_fc'
      latent_dim=512 if thesis else 128,
      recon_loss="mse" if thesis else "bce",
      width_multiplier=1.0 if thesis else 0.25,
      conv_filters=(32, 64, 128, 256, 512),
      conv_kernel=5,
      fc_hidden=400,
  ))
  c.optim = gan.adam(1e-4 if thesis else 1e-3, b1=0.9)
  c.kl_weight = 1.0
  if thesis:
    c.batch_size = 64
  else:
    c.num_steps = 400
  return c
