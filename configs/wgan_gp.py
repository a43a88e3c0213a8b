"""WGAN-GP (seed 001 §3.3) on COVID-positive phantom chest X-rays.

  python main.py --config=configs/wgan_gp.py --workdir=runs/wgan_gp

WGAN's networks without clipping, plus λ · E[(‖∇D(x̂)‖ − 1)²], λ = 10, on random interpolates.
The critic has no normalisation by default (Gulrajani et al.; BatchNorm couples the samples
whose gradients are penalised); the thesis/Keras-GAN critic: --config.model.d_norm=batchnorm.
Optimizer: Adam 1e-4, β = (0.5, 0.9) (igul222); the Keras-GAN code: RMSprop 5e-5 (thesis preset).
CPU-fast default: 64×64, width ×0.5, 300 iterations, about 2–3 min on 2 CPU cores; expected
fd_randinit ≈ 125 → ≈ 30. Thesis protocol: --config=configs/wgan_gp.py:thesis.
"""

from configs import gan, wgan


def get_config(preset=None):
  c = wgan.get_config(preset)
  c.model.kind = "wgan_gp"
  c.model.d_norm = "none"
  c.gp_weight = 10.0
  if c.preset == "thesis":
    c.optim.g = gan.rmsprop(5e-5)
    c.optim.d = gan.rmsprop(5e-5)
  else:
    c.optim.g = gan.adam(1e-4, b1=0.5, b2=0.9)
    c.optim.d = gan.adam(1e-4, b1=0.5, b2=0.9)
  return c
