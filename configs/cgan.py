"""Conditional GAN (seed 001 §3.4) on COVID-positive and -negative phantom chest X-rays.

  python main.py --config=configs/cgan.py --workdir=runs/cgan

The thesis's MLP G/D conditioned on the label (0 = non-COVID, 1 = COVID): the thesis code's
multiplicative embedding by default, `--config.model.conditioning=onehot_concat` for the
one-hot reading. D: 512/512/512 with Dropout 0.4, no BatchNorm. Batches are half positive
(the code's min(n_pos, n_neg) balancing). Sample grids have one class per row.
CPU-fast default: 64×64, 600 iterations, about 1 min on 2 CPU cores; expected fd_randinit
≈ 125 → ≈ 9. Thesis protocol: --config=configs/cgan.py:thesis.
"""

from configs import gan


def get_config(preset=None):
  c = gan.get_config(preset)
  c.model.kind = "cgan"
  c.model.num_classes = 2
  c.model.mlp_d_hidden = (512, 512, 512)
  c.model.d_dropout = 0.4
  c.model.g_leaky_slope = 0.2       # Keras-GAN CGAN
  c.data.class_filter = []
  c.data.balance_fraction = 0.5
  return c
