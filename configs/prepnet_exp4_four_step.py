"""PrepNet Experiment 4 part 2: pre-trained AE; each epoch e runs rec / img / forget / (AE+E_cov) on e batches (growing batch curriculum).

  python main.py --config=configs/prepnet_exp4_four_step.py --workdir=runs/prepnet_exp4_four_step

CPU-fast phantom sizes from configs/prepnet.py (add --config.seeds='(0,1,2)' for mean ± std);
configs/prepnet_thesis.py holds the faithful 224×224 settings to combine with these rows.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  c.rows = (dict(name="PrepNet reproduction", overrides={}),
      dict(name="Exp 4 part 2 (four-step loop)", overrides={"schedule": "four_step"}))
  c.baseline_row = "PrepNet reproduction"
  return c
