"""PrepNet Experiment 6 (both parts): pre-trained AE, E_img, E_cov (AE frozen), then the AE alone with L_rec + L_pseu (part 1) or L_rec - L_img (part 2); the fixed E_cov is monitored per epoch (curves in rows/*/results.json and TensorBoard).

  python main.py --config=configs/prepnet_exp6_diagnostic.py --workdir=runs/prepnet_exp6_diagnostic

CPU-fast phantom sizes from configs/prepnet.py (add --config.seeds='(0,1,2)' for mean ± std);
configs/prepnet_thesis.py holds the faithful 224×224 settings to combine with these rows.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  c.rows = (dict(name="Exp 6 part 1 (L_rec + L_pseu)", overrides={"schedule": "diagnostic", "diagnostic_variant": "pseu"}),
      dict(name="Exp 6 part 2 (L_rec - L_img)", overrides={"schedule": "diagnostic", "diagnostic_variant": "adv"}))
  c.baseline_row = "Exp 6 part 1 (L_rec + L_pseu)"
  return c
