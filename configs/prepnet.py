"""PrepNet on the 3-site CT phantom — the project's main job (CPU-fast).

  python main.py --config=configs/prepnet.py --workdir=runs/prepnet

Rows: Original (no AE), plain Auto-encoder, PrepNet (reproduced schedule: AE warm-up → E_img
warm-up → adversarial rec/img/forget epochs → E_cov with the AE frozen), and PrepNet with the
thesis's two fixes (up-sampling of the smaller datasets + grayscaling before E_cov). E_cov is
trained on each site in turn and evaluated on train/val/test of every site; the cross-dataset
table goes to stdout and reports/prepnet_table.md, the before/after grids, intensity
histograms and the fresh dataset-origin classifier to reports/<row>/. One seed here;
configs/prepnet_experiment.py runs the rows over 3 seeds (mean ± std).
Small networks at 48×48, 130 patients per site, E_cov trained 8 epochs with flips/affine
augmentation. Measured on 2 idle CPU cores: 6 min 56 s wall (compiling 36 s of it). Seed 0:
Original Within 0.770 / Cross 0.609; Auto-encoder Within −3.5 pp, Cross −0.5 pp; PrepNet Within
−3.4 pp, Cross +2.8 pp; PrepNet + up-sampling + grayscaling Within −11.0 pp, Cross +3.7 pp (one
seed: no spread estimate). Before models/conv.py the same run gave 0.728 / 0.605, −3.2 / −2.6,
−1.6 / +3.3, +7.9 / +2.5 in 7 min 19 s: the conv computes the same products summed in another
order (first step's loss equal within 3e-7), and such rounding differences grow through training like
any change of CPU or thread count would, so one seed's deltas move by several pp. The 3-seed
table is in README.md. The faithful 224×224 VGG16/VGG19 setting is configs/prepnet_thesis.py.
The run directory is servable as one CT model — a row's AE, then the E_cov trained on its output,
calibrated on that site's validation split (rows/<row>/seed_<s>/e_cov/<site>/reports/):
  python main.py --config=configs/predict.py --workdir=runs/predict_prepnet \
      --config.model_workdir=runs/prepnet --config.prepnet_row=PrepNet --config.train_site=sars \
      --config.inputs=phantom:ct
"""

import ml_collections

from configs import common


def get_config():
  c = ml_collections.ConfigDict()
  c.task = "prepnet"
  c.seed = 0
  c.seeds = (0,)
  common.top_level(c)

  # The sites: the imaging label of every example is its index here. Every table evaluates E_cov
  # on every split of every one of them, so `data.eval` stays empty.
  # 130 patients per site (sars 1040 slices, ucsd 390, mosmed 390): with the default phantom's
  # 62/50/100 patients a from-scratch E_cov stays at chance on ucsd and mosmed. Overrides make the
  # phantom generate in memory (a few seconds) instead of reading the TFDS copy.
  c.data = common.data(("phantom_ct/sars", "phantom_ct/ucsd", "phantom_ct/mosmed"),
                       phantom_overrides={"num_patients": 130})
  # E_cov training augmentation (flips, ±10° rotation, 6 % shift, ±10 % zoom): without it the
  # from-scratch VGG19 memorises its training site within a few epochs (train BA 1.0, val ≈ 0.6).
  # Only E_cov training sees it; the AE, E_img and every evaluation use the plain images.
  # PrepNet's grayscaling acts on the AE output (grayscale_cov), so the input keeps its colour.
  c.preprocess = common.preprocess(
      48, 3, "imagenet", grayscale=False,
      augment=common.augment(hflip=True, affine_degrees=10.0, affine_translate=0.06, affine_scale=0.1))

  # The U-Net auto-encoder (TernausNet UNet16, reference §2.1).
  c.ae = ml_collections.ConfigDict(dict(
      width_multiplier=0.125, depth=4, upsample="bilinear", out_activation="linear",
      pretrained_path="", pretrained_sha256=""))
  # Imaging-technology classifier E_img (K = number of datasets) and COVID classifier E_cov.
  # VGG19 as in the thesis; from scratch (no ImageNet weights offline) the BatchNorm variant
  # with a global-average-pool head is what trains in a few CPU epochs.
  vgg = dict(name="vgg19_bn", width_multiplier=0.125, kwargs={"head_type": "gap", "dropout_rate": 0.2},
             pretrained_path="", pretrained_sha256="")
  c.e_img = ml_collections.ConfigDict(vgg)
  c.e_cov = ml_collections.ConfigDict(vgg)
  # One optimizer per network: AdamW (PyTorch's betas/eps), constant learning rate.
  c.optim = ml_collections.ConfigDict()
  c.optim.ae = common.optim("adamw", 1e-3, weight_decay=1e-2)
  c.optim.img = common.optim("adamw", 1e-3, weight_decay=1e-2)
  c.optim.cov = common.optim("adamw", 5e-4, weight_decay=1e-2)

  # Losses (reference §3); every documented ambiguity is a field.
  c.losses = ml_collections.ConfigDict(dict(
      rec="l1",                # 'l1' (equations) or 'l2' (prose)
      pseudo_sigma=0.005,      # pseudo-labels ~ N(0, sigma^2)
      pseudo_target="logits",  # 'logits' (default) or 'probs' (1/K + noise)
      eta_rec=1.0, eta_pseu=1.0, eta_cov=1.0, eta_img=1.0))

  # Schedule (table in prepnet_jax/tasks/prepnet/schedules.py) and epochs per phase
  # (thesis: 20/2/50/30).
  c.schedule = "original"
  c.num_epochs = ml_collections.ConfigDict(dict(
      ae_warmup=3, img_warmup=2, adversarial=3, cov=8, ae_pretrain=6, img_pretrain=3,
      joint=6, four_step=8, end_to_end=6, diag_cov=4, diag_ae=3))
  c.adversarial_alternation = "epoch"  # 'epoch' (a full pass per step) or 'batch'
  c.upsample = False                   # Exp. 3: duplicate smaller datasets by round(max/n)
  c.grayscale_cov = False              # §4.8: luma ×3 of the AE output before E_cov
  c.grayscale_img = False              # the thesis does not say whether E_img sees it too
  c.diagnostic_variant = "pseu"        # Exp. 6: 'pseu' (L_rec + L_pseu) or 'adv' (L_rec − L_img)
  c.diagnostic_train_img = False       # Exp. 6: does E_img keep training? (not stated)
  c.ae_pretrained_workdir = ""         # load a pre-trained AE instead of pretraining one
  # E_cov is trained on each of these groups in turn (Exp. 2 uses pairs).
  c.cov_train_sets = (("phantom_ct/sars",), ("phantom_ct/ucsd",), ("phantom_ct/mosmed",))
  c.batch_size = 32
  # Inside every phase, an epoch checkpoint each this many epochs (0 = at phase boundaries only),
  # so a killed run redoes at most that many epochs; each replaces the last, and the phase-boundary
  # checkpoint replaces the last one.
  c.checkpoint_every_epochs = 1
  c.cov_class_weights = "balanced"     # E_cov loss weights: 'balanced' (sars is 74 % positive) or 'none'
  # Patient-level results beside the slice-level ones: a patient's score is the mean (or 'max') of
  # its slices' COVID probabilities.
  c.patient_aggregation = "mean"
  # Also train E_cov on every group of all sites but one and test on the held-out site (results
  # tagged 'leave_one_site_out'; the Within/Cross columns stay the cov_train_sets protocol's).
  c.leave_one_site_out = False
  # The harmonisation literature's simple baselines (prepnet_jax/tasks/prepnet/baselines.py), all
  # off here; configs/prepnet_evidence.py turns each on in a row of its own.
  c.baselines = ml_collections.ConfigDict(dict(
      standardise="",        # '' | 'zscore' | 'nyul' | 'histogram_matching' (per site, before E_cov; no AE)
      reference_site="",     # the site nyul / histogram_matching map onto ('' = the first of data.train)
      dann_weight=0.0,       # > 0: DANN, E_cov's origin head behind gradient reversal × Ganin's ramp
      dann_hidden=64,        # width of the origin head's hidden layer
      test_time_bn=False,    # AdaBN: E_cov's BatchNorm statistics re-estimated on each evaluated site
  ))
  # Comparisons beyond "every row vs baseline_row": (row, reference row) pairs, e.g. a PrepNet
  # variant against its equal-training control. The evidence report gives each a paired CI.
  c.comparisons = ()
  # Where the evidence report (reports/prepnet_evidence.md) is also written as a repository page,
  # with its figures in a folder of the same name ('' = only reports/).
  c.evidence_page = ""

  c.rows = (
      dict(name="Original", overrides={"schedule": "none"}),
      dict(name="Auto-encoder", overrides={"schedule": "ae_only"}),
      dict(name="PrepNet", overrides={}),
      dict(name="PrepNet + up-sampling + grayscaling", overrides={"upsample": True, "grayscale_cov": True}),
  )
  c.baseline_row = "Original"

  c.diagnostics = ml_collections.ConfigDict(dict(
      enabled=True, origin_model="small_cnn", origin_width=0.5, origin_epochs=3))
  return c
