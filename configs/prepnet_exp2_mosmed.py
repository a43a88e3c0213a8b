"""PrepNet Experiment 2 / Table 4.4: MosMed as a third dataset; E_img is 3-way and E_cov trains on SARS+MosMed or UCSD+MosMed.

  python main.py --config=configs/prepnet_exp2_mosmed.py --workdir=runs/prepnet_exp2_mosmed

CPU-fast phantom sizes from configs/prepnet.py (add --config.seeds='(0,1,2)' for mean ± std);
configs/prepnet_thesis.py holds the faithful 224×224 settings to combine with these rows.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  c.cov_train_sets = (("phantom_ct/sars", "phantom_ct/mosmed"), ("phantom_ct/ucsd", "phantom_ct/mosmed"))
  c.rows = (dict(name="PrepNet reproduction", overrides={"cov_train_sets": (("phantom_ct/sars",), ("phantom_ct/ucsd",))}),
      dict(name="+ MosMed in COVID training", overrides={}))
  c.baseline_row = "PrepNet reproduction"
  return c
