"""StyleGAN2 + DiffAugment on the phantom's chest X-rays (seed 004's generator), CPU-fast default.

  python main.py --config=configs/stylegan2.py --workdir=runs/stylegan2

Default preset 'small': 32×32×1 on the phantom's COVIDx-like site (218 training images), narrow
networks (≤ 32 maps, z = w = 64, 2 mapping layers), batch 16, 12 kimg, a checkpoint every kimg
and a snapshot every 2 kimg (Fréchet distance / KID / precision-recall with the random-init
extractor, leak check, `reports/fakes_<kimg>.png`). Measured: 4.9 CPU-minutes (about 5 minutes
on 2 free cores; compilation is about a minute of it); fd_randinit 31.7 at kimg 0 → 6.5 at
kimg 12 (real/real noise floor 1.0). Rerunning the same command after an interruption resumes
from the last checkpoint and ends bit-identical to an uninterrupted run. Results:
`reports/metrics_history.json`, TensorBoard in the workdir.

Presets (`--config.preset=`; any field set on the command line overrides the preset: the
resolution is `preprocess.image_size`, the training fields (`batch_size`, `total_kimg`,
`snapshot_kimg`, `checkpoint_kimg`, `lr`, `r1_gamma`, `ema_kimg`, ...) sit at the top level):
  low_shot  DiffAugment-stylegan2-pytorch: 256², 300 kimg, batch 8, γ 10, fmaps 1 (a GPU run)
  paper256  StyleGAN2-ADA paper256: batch 64, γ 1, 25000 kimg
  auto      StyleGAN2-ADA 'auto' formulas of resolution and device count

Seed 004 trains one unconditional generator per class (COVID-positive and negative):
  python main.py --config=configs/stylegan2.py --config.preset=low_shot \
      --config.data.class_filter=[1] --workdir=runs/sg2_covid
  python main.py --config=configs/stylegan2.py --config.preset=low_shot \
      --config.data.class_filter=[0] --workdir=runs/sg2_noncovid
The conditional alternative (one model, label embedding in G, projection in D):
  python main.py --config=configs/stylegan2.py --config.data.conditional=True --workdir=runs/sg2_cond

Branch from a checkpoint of another run (same architecture):
  --config.resume_workdir=runs/stylegan2 --config.resume_step=375 --workdir=runs/sg2_from375

Seed 004 leaves the StyleGAN version, resolution, γ, policy and kimg unstated; preset low_shot
and the default policy follow DiffAugment's low-shot recipe. Horizontal mirroring is off: chest
anatomy is not left-right symmetric. Cutout is known to leak into samples (data-efficient-gans
#84); drop it with --config.diffaugment.policy=color,translation and watch `fake_cutout_leak`.
"""

import ml_collections

from configs import common


def _unset(field_type):
  """A field the preset fills unless it is set here or on the command line."""
  return ml_collections.FieldReference(None, field_type=field_type)


def get_config():
  c = ml_collections.ConfigDict()
  c.task = "stylegan2"
  c.seed = 0
  common.top_level(c)
  c.preset = "small"                # small | low_shot | paper256 | auto

  c.data = common.data(
      "phantom_cxr/covidx",
      label_key="label",            # 1 = COVID-positive
      num_classes=2,
      class_filter=[],              # e.g. [1]: a generator of COVID-positive images only ([] = all)
      conditional=False,
      phantom_backend="memory",
  )
  c.preprocess = common.preprocess(
      _unset(int), 1, "symmetric",  # image_size: power of two, 32..1024 (small: 32, others: 256)
      grayscale=False, resize_method="lanczos")  # channels: 1 (native grayscale) or 3

  c.model = ml_collections.ConfigDict()
  c.model.z_dim = _unset(int)
  c.model.w_dim = _unset(int)
  c.model.mapping_layers = _unset(int)
  c.model.channel_base = _unset(int)    # feature maps at res r: min(channel_base // r, channel_max)
  c.model.channel_max = _unset(int)
  c.model.mbstd_group_size = _unset(int)
  c.model.mbstd_num_channels = 1
  c.model.mapping_lr_multiplier = 0.01
  c.model.w_avg_beta = 0.995

  # Training, counted in thousands of images (kimg) as the reference does.
  c.batch_size = _unset(int)
  c.total_kimg = _unset(float)
  c.snapshot_kimg = _unset(float)
  c.checkpoint_kimg = _unset(float)     # checkpoints between snapshots (cheap; bounds lost work)
  c.lr = _unset(float)                  # Adam of G and D (the lazy phases scale it by I/(I+1))
  c.adam_beta1 = 0.0
  c.adam_beta2 = 0.99
  c.adam_eps = 1e-8
  c.r1_gamma = _unset(float)
  c.ema_kimg = _unset(float)            # EMA half-life of G in thousands of images
  c.ema_rampup = _unset(float)          # 0 = no ramp-up
  c.d_reg_interval = 16                 # lazy R1; 0 = every step inside the main loss
  c.g_reg_interval = 4                  # lazy path length; 0 = every step
  c.pl_weight = 2.0                     # 0 turns path-length regularisation off
  c.pl_decay = 0.01
  c.pl_batch_shrink = 2
  c.style_mixing_prob = 0.9
  c.log_every_steps = 50
  c.keep_checkpoints = 2
  c.resume_step = -1                    # -1 = latest; k = restart from step k (with resume_workdir)
  c.resume_workdir = ""                 # run to branch from ('' = this workdir)

  c.diffaugment = ml_collections.ConfigDict()
  c.diffaugment.policy = "color,translation,cutout"   # groups or single ops, '' = none
  c.diffaugment.translation_ratio = 0.125
  c.diffaugment.cutout_ratio = 0.5

  c.eval = ml_collections.ConfigDict()
  c.eval.num_generated = 1000           # fakes per snapshot for FD/KID (0 = grids only)
  c.eval.num_real = 0                   # 0 = every training image
  c.eval.extractor = "randinit"         # named extractor of prepnet_jax.eval.gen_metrics
  c.eval.extractor_seed = 0
  c.eval.extractor_image_size = 0       # randinit input size; 0 = the training resolution
  c.eval.metrics = ("fd", "kid", "pr")  # of gen_metrics: fd, kid, pr (precision/recall), is
  c.eval.latent_seed = 123              # fixed latents for grids and metrics
  c.eval.grid_size = 64
  c.eval.truncation_psi = 1.0
  c.eval.leak_check = True
  return c
