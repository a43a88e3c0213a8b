"""Vanilla MLP GAN (seed 001 §3.1, the thesis's best model) on COVID-positive phantom chest X-rays.

  python main.py --config=configs/gan.py --workdir=runs/gan

CPU-fast default: 64×64, 1 channel, 600 iterations of batch 32, sample grid every 100 and
checkpoint + fd_randinit every 200 (all checkpoints kept); about 1 min on 2 CPU cores.
Expected: fd_randinit ≈ 125 at initialisation → ≈ 9 at the end (reports/fd_history.json).

Thesis protocol: --config=configs/gan.py:thesis (10000 iterations, batch 32, latent 100, sample
and save every 500, Adam 2e-4/β1 0.5); --config.preprocess.image_size=256 for the 256² runs.
Second wind (restart from an earlier checkpoint into a new run):
  --config.resume_workdir=runs/gan --config.resume_step=2500 --workdir=runs/gan_from2500

This file also holds `generative_base`, the data/loop/metric fields every generative config
(cgan, dcgan, wgan, wgan_gp, vae, vaegan) shares.
"""

import ml_collections

from configs import common

PRESETS = ("cpu", "thesis")


def adam(learning_rate, b1=0.5, b2=0.999):
  """Keras-style Adam (ε 1e-7), constant learning rate, no weight decay or clipping."""
  return common.optim("adam", learning_rate, b1=b1, b2=b2, eps=1e-7, momentum=0.0)


def rmsprop(learning_rate):
  """Keras RMSprop (ρ 0.9, ε 1e-7, no momentum), the WGAN optimizer."""
  return common.optim("rmsprop", learning_rate, b1=0.5, b2=0.999, eps=1e-7, momentum=0.0, rms_decay=0.9)


def generative_base(task: str, preset: str | None) -> ml_collections.ConfigDict:
  """Data, preprocessing, loop and metric fields shared by the generative configs."""
  preset = common.parse_preset(preset, PRESETS)
  thesis = preset == "thesis"
  c = ml_collections.ConfigDict()
  c.task = task
  c.seed = 0
  c.preset = preset
  common.top_level(c)

  c.data = common.data(
      "phantom_cxr/covidx",
      label_key="label",            # 1 = COVID; 'label3' for normal/pneumonia/COVID
      class_filter=[1],             # train on these labels only ([] = all): COVID-positive, as the thesis
      balance_fraction=0.0,         # >0: that share of every batch has label 1 (CGAN: 0.5)
  )
  c.preprocess = common.preprocess(
      64, 1, "symmetric",           # [-1, 1], the generators' tanh range
      grayscale=False, resize_method="bicubic")  # bicubic: Pillow's default in the thesis code

  c.batch_size = 32
  c.num_steps = 10000 if thesis else 600
  c.sample_every = 500 if thesis else 100
  c.save_every = 500 if thesis else 200
  c.log_every_steps = 50 if thesis else 25
  c.num_grid_images = 25            # 5×5 grid of fixed latents
  c.keep_checkpoints = 0            # 0 = keep every checkpoint (restart from any of them)
  c.resume_step = -1                # -1 = latest; k = restart from step k (second wind)
  c.resume_workdir = ""             # run to restart from ('' = this workdir)

  c.fd = ml_collections.ConfigDict()
  c.fd.enabled = True
  c.fd.extractor = "randinit"       # fixed-seed random-init CNN: the metric is fd_randinit, not FID
  c.fd.extractor_seed = 0
  c.fd.extractor_image_size = 0     # 0 = the training resolution
  c.fd.metrics = ("fd", "kid")
  c.fd.num_real = 0                 # 0 = every training image
  c.fd.num_fake = 500
  return c


def gan_model(kind: str) -> ml_collections.ConfigDict:
  """Every architecture field of `models.gan` with the thesis/Radford values."""
  return ml_collections.ConfigDict(dict(
      kind=kind,
      generator="",                 # '' = the kind's (models.gan.KINDS): mlp | upsample_conv | dcgan
      discriminator="",             # '' = the kind's: mlp | strided_conv | dcgan
      latent_dim=100,
      num_classes=0,                # >0: conditional (CGAN)
      conditioning="embed_mul",     # 'embed_mul' (thesis code) | 'onehot_concat'
      width_multiplier=1.0,
      mlp_g_hidden=(256, 512, 1024),
      mlp_d_hidden=(512, 256),
      g_leaky_slope=0.3,            # thesis text; its code uses 0.2
      d_dropout=0.0,
      upsample_filters=(128, 64, 64, 64, 64),
      upsample_kernel=3,
      upsample_base_channels=128,
      conv_d_filters=(32, 64, 128, 256),
      conv_d_last_stride=1,         # code: 1; thesis text: 2
      d_norm="batchnorm",           # 'batchnorm' | 'layernorm' | 'none'
      dcgan_width=64,
  ))


def get_config(preset=None):
  c = generative_base("gan", preset)
  c.model = gan_model("gan")
  c.optim = ml_collections.ConfigDict()
  c.optim.g = adam(2e-4)
  c.optim.d = adam(2e-4)
  c.n_critic = 1                    # D steps per G step (Goodfellow's k)
  c.g_loss = "ns"                   # 'ns' | 'minimax'
  c.clip_value = 0.01               # WGAN only
  c.gp_weight = 10.0                # WGAN-GP only
  c.ema_decay = 0.0                 # >0 keeps an EMA of G and samples from it
  return c
