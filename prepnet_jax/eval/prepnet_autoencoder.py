"""The harmonising auto-encoder of a finished PrepNet run, loaded from its workdir.

Layout written by the 'prepnet' task: `config.json`, and per row and seed
`rows/<slug(row)>/seed_<s>/checkpoints/` whose single checkpoint holds the tree
{'ae': TrainState, 'img': TrainState, 'cov': {train_set: (ae, cov)}} plus metadata with the
finished phases ('done'). The restore template is rebuilt here from the row's config
(`ae`, `e_img`, `e_cov`, `optim.ae`, `optim.img`, `optim.cov`, `data.train`: one E_img
output per training site) with the same
modules (`models.UNetVGG16AE`, `models.get_classifier`) and optimizers as the task.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from prepnet_jax.data import transforms
from prepnet_jax.eval import prepnet_layout
from prepnet_jax.models import prepnet_networks
from prepnet_jax.runtime import checkpointing, rundir


@dataclasses.dataclass
class AutoEncoder:
  """A PrepNet auto-encoder with the preprocessing of its run (the 'normalisation' step)."""
  apply_fn: Callable
  variables: dict
  preprocess_config: dict
  description: str

  def __post_init__(self):
    self._preprocess = transforms.make_preprocess(self.preprocess_config, training=False)
    self._forward = jax.jit(lambda variables, x: self.apply_fn(variables, x, train=False))

  def normalise(self, image: np.ndarray) -> np.ndarray:
    """uint8 H×W×C → the AE output as uint8 (S×S×C of the PrepNet run)."""
    x = self._preprocess({"image": image}, None)["image"]
    out = np.asarray(self._forward(self.variables, jnp.asarray(x[None])))[0]
    return transforms.denormalize(out, self.preprocess_config["value_range"])


def load_prepnet_autoencoder(prepnet_workdir: str, row: str = "PrepNet", seed: int = -1) -> AutoEncoder:
  """The harmonising AE of one row and seed of a `prepnet` run (its phase checkpoint's 'ae').

  seed -1 = the run's first seed.
  """
  config = rundir.read_config(prepnet_workdir, "prepnet")
  rows = {str(r["name"]): r for r in config.rows}
  if row not in rows:
    raise ValueError(f"prepnet_row={row!r} is not a row of {prepnet_workdir}; rows: {sorted(rows)}")
  seeds = [int(s) for s in config.seeds]
  seed = seeds[0] if seed == -1 else int(seed)
  if seed not in seeds:
    raise ValueError(f"prepnet_seed={seed} was not run in {prepnet_workdir}; seeds: {seeds}")
  rc = prepnet_layout.row_config(config, rows[row], seed)
  if rc.schedule == "none":
    raise ValueError(f"row {row!r} of {prepnet_workdir} uses schedule 'none' (no auto-encoder)")
  row_dir = prepnet_layout.row_dir(prepnet_workdir, row, seed)
  ckpt = checkpointing.Checkpointer(prepnet_layout.row_checkpoints(row_dir), 1)
  done = list(ckpt.read_meta().get("done", []))
  if not {"ae_warmup", "ae_pretrained"} & set(done):
    raise FileNotFoundError(f"no trained auto-encoder in {row_dir}/checkpoints (finished phases: "
                            f"{done}); run or finish the prepnet job first")

  def templates():
    rng = jax.random.key(0)
    # Pretrained files are not needed: the checkpoint holds the weights.
    ae = prepnet_networks.make_ae_state(rc, rng, 1, load_pretrained=False)
    img = prepnet_networks.make_classifier_state(rc, rc.e_img, len(rc.data.train), rng, 1, rc.optim.img,
                                                 load_pretrained=False)
    cov = prepnet_networks.make_classifier_state(rc, rc.e_cov, 1, rng, 1, rc.optim.cov, load_pretrained=False)
    saved = [p[len("cov_"):] for p in done if p.startswith("cov_")]
    return {"ae": ae, "img": img, "cov": {k: (ae, cov) for k in saved}}

  tree, _ = ckpt.restore(jax.eval_shape(templates))
  return AutoEncoder(tree["ae"].apply_fn, tree["ae"].variables, rc.preprocess.to_dict(),
                     f"PrepNet AE of row {row!r}, seed {seed} in {prepnet_workdir}")
