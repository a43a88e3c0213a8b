"""Does PrepNet beat simple baselines? Control rows, the literature's baselines, 5 paired seeds.

  python main.py --config=configs/prepnet_evidence.py --workdir=runs/prepnet_evidence

Writes runs/prepnet_evidence/reports/prepnet_evidence.{md,json} (every row's Within/Cross at slice
and patient level and leave-one-site-out, each comparison's paired difference with its 95 %
t-interval over seeds and verdict, the fraction of the cross-site gap closed, the diagnostics
over every seed), evidence_forest_plot.png and evidence_cross_site_heatmaps.png, and regenerates
docs/prepnet_evidence.md with its figures in docs/prepnet_evidence/ (run it from the repository
root; `--config.evidence_page=''` leaves the repository alone). The protocol is the main job's
(configs/prepnet.py: same networks, data, epochs, augmentation, model selection); every row changes
one thing. Quick 1-seed variant (what tests/test_prepnet_evidence.py runs, with fewer epochs):
  python main.py --config=configs/prepnet_evidence.py --workdir=runs/evidence_quick \
      --config.seeds='(0,)' --config.evidence_page=''
Run time on 2 CPU cores: 102 min wall for the committed docs/prepnet_evidence.md (about 60 of them
beside test runs on the same cores; the Original row alone, undisturbed: 95 s per seed). The page
states the compute time of the run that generated it.
"""

from configs import prepnet

NONE = {"schedule": "none"}
UP, GRAY = {"upsample": True}, {"grayscale_cov": True}
# The leave-one-site-out view trains 3 more E_covs on two sites each (twice the one-site cost), so
# it runs for the reference row and the two PrepNet rows only: all twelve would double the run time.
LOSO = {"leave_one_site_out": True}


def get_config():
  c = prepnet.get_config()
  c.seeds = (0, 1, 2, 3, 4)
  c.evidence_page = "docs/prepnet_evidence.md"
  # Checkpoints at phase boundaries only: a killed run redoes at most one E_cov training (seconds
  # here), and 60 row/seeds × 6 E_covs × 8 epochs of epoch checkpoints cost minutes of disk writes.
  c.checkpoint_every_epochs = 0
  c.rows = (
      dict(name="Original", overrides={**NONE, **LOSO},
           about="E_cov on the preprocessed images, no harmonisation: the reference of every comparison."),
      dict(name="Original + up-sampling", overrides={**NONE, **UP},
           about="control: the smaller sites' training images repeated round(largest/size) times, no AE — "
                 "the same extra E_cov steps the up-sampled PrepNet row gets."),
      dict(name="Original + grayscaling", overrides={**NONE, **GRAY},
           about="control: E_cov sees luma×3 of the raw image, no AE (thesis §4.8's fix without the AE)."),
      dict(name="Original + up-sampling + grayscaling", overrides={**NONE, **UP, **GRAY},
           about="control: both fixes without the AE — the equal-training reference of PrepNet + up-sampling + "
                 "grayscaling."),
      dict(name="Auto-encoder", overrides={"schedule": "ae_only"},
           about="the U-Net AE trained on reconstruction only; E_cov on its output (does the adversarial part "
                 "add anything beyond passing images through an AE?)."),
      dict(name="PrepNet", overrides=LOSO,
           about="the reproduced thesis schedule: AE warm-up → E_img warm-up → adversarial rec/img/forget "
                 "epochs → E_cov on the frozen AE's output."),
      dict(name="PrepNet + up-sampling + grayscaling", overrides={**UP, **GRAY, **LOSO},
           about="PrepNet with the thesis's two fixes (its best row)."),
      dict(name="Nyúl standardisation", overrides={**NONE, "baselines.standardise": "nyul"},
           about="every site's intensities mapped piecewise-linearly onto the first site's landmarks (percentiles "
                 "1, 10, …, 90, 99 per channel, fitted on each site's unlabelled training images) — Nyúl, Udupa & "
                 "Zhang, IEEE TMI 2000."),
      dict(name="Per-site z-scoring", overrides={**NONE, "baselines.standardise": "zscore"},
           about="every site's images standardised to zero mean and unit variance per channel with that site's "
                 "own training-image statistics (the usual intensity normalisation, e.g. Reinhold et al. 2019)."),
      dict(name="BigAug augmentation", overrides={
          **NONE, "preprocess.augment.gamma": 0.4, "preprocess.augment.contrast": 0.35,
          "preprocess.augment.brightness": 0.1, "preprocess.augment.blur_sharpen": 1.5,
          "preprocess.augment.noise": 0.03, "preprocess.augment.low_resolution": 0.5},
           about="E_cov trained with stacked appearance augmentation on top of the flips/affine of every row: "
                 "gamma, brightness/contrast, blur or sharpen, Gaussian noise, lower resolution, each with "
                 "probability 0.5 — BigAug, Zhang et al., IEEE TMI 2020."),
      dict(name="DANN", overrides={**NONE, "baselines.dann_weight": 1.0},
           about="E_cov with a dataset-origin head on its pooled features behind a gradient-reversal layer, "
                 "trained on every site's unlabelled training images (the information PrepNet's E_img uses), "
                 "reversal × Ganin's ramp 2/(1+e^(−10p))−1 — Ganin et al., JMLR 2016."),
      dict(name="AdaBN", overrides={**NONE, "baselines.test_time_bn": True},
           about="the Original row's training; at test time E_cov's BatchNorm statistics re-estimated on the "
                 "evaluated site's unlabelled training images — Li et al., Pattern Recognition 2018."),
  )
  c.baseline_row = "Original"
  # Each improvement against the control with the same training (equal E_cov steps, same input).
  c.comparisons = (("PrepNet + up-sampling + grayscaling", "Original + up-sampling + grayscaling"),
                   ("PrepNet", "Auto-encoder"))
  return c
