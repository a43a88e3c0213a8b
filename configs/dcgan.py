"""DCGAN on COVID-positive phantom chest X-rays: Radford's ConvTranspose G / strided-conv D
(seed 003 §003.2.3, PyTorch-tutorial layout, N(0, 0.02) init).

  python main.py --config=configs/dcgan.py --workdir=runs/dcgan

The thesis's variant (seed 001 §3.5: Dense → [UpSample → Conv k3 → BN → ReLU] × 3 and the
Keras-GAN strided-conv D with filters 32..256): --config.model.kind=dcgan_upsample.
CPU-fast default: 64×64, width ×0.25 (16 base filters), 300 iterations, about 2 min on 2 CPU
cores; expected fd_randinit ≈ 125 → ≈ 20. The thesis protocol: --config=configs/dcgan.py:thesis
(its up-sample variant at width ×1, 10000 iterations, sample every 100, save every 500).
"""

from configs import gan


def get_config(preset=None):
  c = gan.get_config(preset)
  c.model.kind = "dcgan"
  c.model.d_dropout = 0.25          # dcgan_upsample's D (Keras-GAN); Radford's D has none
  if c.preset == "thesis":
    c.model.kind = "dcgan_upsample"   # the thesis's DCGAN
    c.sample_every = 100
  else:
    c.model.width_multiplier = 0.25
    c.optim.g.learning_rate = 1e-3   # G 5× D: with 44 images and 2e-4 the D wins within 25 steps
    c.num_steps = 300
    c.sample_every = 50
    c.save_every = 100
  return c
