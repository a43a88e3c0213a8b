"""PrepNet Experiment 5: pre-trained AE, E_img warm-up, then one loss L_rec + L_pseu + L_cov over AE and E_cov.

  python main.py --config=configs/prepnet_exp5_end_to_end.py --workdir=runs/prepnet_exp5_end_to_end

CPU-fast phantom sizes from configs/prepnet.py (add --config.seeds='(0,1,2)' for mean ± std);
configs/prepnet_thesis.py holds the faithful 224×224 settings to combine with these rows.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  c.rows = (dict(name="PrepNet reproduction", overrides={}),
      dict(name="Exp 5 end-to-end", overrides={"schedule": "end_to_end"}))
  c.baseline_row = "PrepNet reproduction"
  return c
