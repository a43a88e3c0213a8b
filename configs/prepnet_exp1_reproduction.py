"""PrepNet Experiment 1 / Tables 4.2-4.3: Original, Auto-encoder, PrepNet reproduction and the pre-trained-AE variant.

  python main.py --config=configs/prepnet_exp1_reproduction.py --workdir=runs/prepnet_exp1_reproduction

CPU-fast phantom sizes from configs/prepnet.py (add --config.seeds='(0,1,2)' for mean ± std);
configs/prepnet_thesis.py holds the faithful 224×224 settings to combine with these rows.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  c.rows = (dict(name="Original", overrides={"schedule": "none"}),
      dict(name="Auto-encoder", overrides={"schedule": "ae_only"}),
      dict(name="PrepNet reproduction", overrides={}),
      dict(name="Reproduction with pre-trained AE", overrides={"schedule": "pretrained_ae"}))
  c.baseline_row = "Original"
  return c
