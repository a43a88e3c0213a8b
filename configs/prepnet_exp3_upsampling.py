"""PrepNet Experiment 3 / Table 4.5: up-sampling of the smaller datasets (factor round(largest/size)).

  python main.py --config=configs/prepnet_exp3_upsampling.py --workdir=runs/prepnet_exp3_upsampling

CPU-fast phantom sizes from configs/prepnet.py (add --config.seeds='(0,1,2)' for mean ± std);
configs/prepnet_thesis.py holds the faithful 224×224 settings to combine with these rows.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  c.rows = (dict(name="PrepNet reproduction", overrides={}),
      dict(name="+ up-sampling", overrides={"upsample": True}))
  c.baseline_row = "PrepNet reproduction"
  return c
