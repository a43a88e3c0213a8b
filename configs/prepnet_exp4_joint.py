"""PrepNet Experiment 4 part 1 / Table 4.6: after the adversarial phase, AE + E_cov trained with one gradient of L_rec + L_cov.

  python main.py --config=configs/prepnet_exp4_joint.py --workdir=runs/prepnet_exp4_joint

CPU-fast phantom sizes from configs/prepnet.py (add --config.seeds='(0,1,2)' for mean ± std);
configs/prepnet_thesis.py holds the faithful 224×224 settings to combine with these rows.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  c.rows = (dict(name="PrepNet reproduction", overrides={}),
      dict(name="Exp 4 part 1 (L_rec + L_cov)", overrides={"schedule": "joint"}))
  c.baseline_row = "PrepNet reproduction"
  return c
