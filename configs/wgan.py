"""WGAN with weight clipping (seed 001 §3.2) on COVID-positive phantom chest X-rays.

  python main.py --config=configs/wgan.py --workdir=runs/wgan

Thesis code: up-sample + conv G with kernel 4, Keras-GAN critic (16/32/64/128, BatchNorm,
Dropout 0.25), n_critic = 5 (each critic step on its own real batch), every critic parameter
clipped to [−0.01, 0.01] after each step, RMSprop 5e-5 for both.
CPU-fast default: 64×64, width ×0.5, RMSprop 5e-4, 300 iterations, about 2 min on 2 CPU cores;
expected fd_randinit ≈ 125 → ≈ 40. Thesis protocol: --config=configs/wgan.py:thesis (RMSprop
5e-5, width ×1, 10000 iterations, sample every 100, save every 500).
"""

from configs import gan


def get_config(preset=None):
  c = gan.get_config(preset)
  c.model.kind = "wgan"
  c.model.upsample_kernel = 4
  c.model.conv_d_filters = (16, 32, 64, 128)
  c.model.d_dropout = 0.25
  c.n_critic = 5
  c.optim.g = gan.rmsprop(5e-5)
  c.optim.d = gan.rmsprop(5e-5)
  if c.preset == "thesis":
    c.sample_every = 100
  else:
    c.model.width_multiplier = 0.25
    c.optim.g.learning_rate = c.optim.d.learning_rate = 5e-4
    c.num_steps = 200
    c.sample_every = 50
    c.save_every = 100
  return c
