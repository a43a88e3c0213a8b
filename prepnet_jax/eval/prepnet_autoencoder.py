"""The trained networks of a finished PrepNet run, loaded from its workdir.

Layout written by the 'prepnet' task (`prepnet_layout`): `config.json`, and per row and seed
`rows/<slug(row)>/seed_<s>/checkpoints/` whose single checkpoint holds the tree
{'ae': TrainState, 'img': TrainState, 'cov': {train_set: (ae, cov)}} plus metadata with the
finished phases ('done'). `cov[train_set]` is the pair the job evaluates: E_cov trained on that
COVID training set (e.g. 'sars', 'sars+ucsd') and the AE whose outputs it was trained on (None in
rows without an AE; for the joint / end-to-end schedules the AE that trained with it). The
restore template is rebuilt here from the row's config (`ae`, `e_img`, `e_cov`, `optim.*`,
`data.train`: one E_img output per training site) with the task's modules and optimizers.

Two uses:
  load_prepnet_pipeline     one row / seed / training set as a servable CT model: preprocessing →
                            AE → grayscaling (§4.8, `grayscale_cov`) → E_cov, exactly the job's
                            evaluation path, with E_cov's calibration in `prepnet_layout.cov_model_dir`
  load_prepnet_autoencoder  the row's AE alone, to put in front of a classifier trained elsewhere on
                            AE-normalised images (its output mapped back to uint8)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from prepnet_jax.data import transforms
from prepnet_jax.eval import prepnet_layout
from prepnet_jax.models import prepnet_networks
from prepnet_jax.runtime import checkpointing, compile_cache, precision, rundir

HEADLINE_ROW = "PrepNet"
LUMA = jnp.asarray([0.299, 0.587, 0.114], jnp.float32)


def grayscale3(x: jax.Array) -> jax.Array:
  """Thesis §4.8: Y = 0.299 R + 0.587 G + 0.114 B, replicated to 3 channels (E_cov's input when
  `grayscale_cov`; the training steps use this same function)."""
  if x.shape[-1] == 1:
    return jnp.repeat(x, 3, axis=-1)
  y = x @ LUMA.astype(x.dtype)
  return jnp.repeat(y[..., None], 3, axis=-1)


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


@dataclasses.dataclass
class PipelineStage:
  """What a PrepNet pipeline does between the preprocessed image and E_cov: the row's AE (None in
  rows without one) and the optional grayscaling."""
  apply_fn: Callable | None
  variables: dict | None
  grayscale: bool

  def __post_init__(self):
    def forward(variables, x):
      ae_output = x if self.apply_fn is None else self.apply_fn(variables, x, train=False)
      return ae_output, (grayscale3(ae_output) if self.grayscale else ae_output)
    self._forward = jax.jit(forward)

  def __call__(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """Preprocessed (B,S,S,C) → (AE output or None without an AE, E_cov's input)."""
    ae_output, cov_input = self._forward(self.variables, jnp.asarray(x))
    return (None if self.apply_fn is None else np.asarray(ae_output)), np.asarray(cov_input)


@dataclasses.dataclass
class PrepNetPipeline:
  name: str                          # e.g. 'PrepNet AE → vgg19_bn E_cov'
  description: str                   # row, seed, training set and workdir
  config: ml_collections.ConfigDict  # the row's config (overrides and seed applied)
  model_dir: str                     # where E_cov's reports/calibration.json is
  cov_model: Any
  cov_variables: dict
  stage: PipelineStage | None        # None: E_cov on the preprocessed image itself


def default_row(config) -> str:
  """The run's headline row: 'PrepNet' if it has one, else its first row with an AE, else its first."""
  rows = [(str(r["name"]), prepnet_layout.row_config(config, r, 0).schedule) for r in config.rows]
  names = [name for name, _ in rows]
  if HEADLINE_ROW in names:
    return HEADLINE_ROW
  return next((name for name, schedule in rows if schedule != "none"), names[0])


def _select(workdir: str, row: str, seed: int):
  """(row name, seed, row config, checkpointer, finished phases) with errors that list the choices."""
  config = rundir.read_config(workdir, "prepnet")
  rows = {str(r["name"]): r for r in config.rows}
  row = row or default_row(config)
  if row not in rows:
    raise ValueError(f"prepnet_row={row!r} is not a row of {workdir}; rows: {sorted(rows)}")
  seeds = [int(s) for s in config.seeds]
  seed = seeds[0] if int(seed) == -1 else int(seed)
  if seed not in seeds:
    raise ValueError(f"model_seed={seed} was not run in {workdir}; seeds: {seeds}")
  rc = prepnet_layout.row_config(config, rows[row], seed)
  row_dir = prepnet_layout.row_dir(workdir, row, seed)
  ckpt = checkpointing.Checkpointer(prepnet_layout.row_checkpoints(row_dir), 1)
  return row, seed, rc, ckpt, list(ckpt.read_meta().get("done", []))


def _restore(rc, ckpt: checkpointing.Checkpointer, done: list[str]) -> dict:
  """The row's checkpoint tree {'ae', 'img', 'cov': {train_set: (ae or None, cov)}}."""
  def templates():
    rng = jax.random.key(0)
    # Pretrained files are not needed: the checkpoint holds the weights.
    ae = prepnet_networks.make_ae_state(rc, rng, 1, load_pretrained=False)
    img = prepnet_networks.make_classifier_state(rc, rc.e_img, len(rc.data.train), rng, 1, rc.optim.img,
                                                 load_pretrained=False)
    cov = prepnet_networks.make_classifier_state(rc, rc.e_cov, 1, rng, 1, rc.optim.cov, load_pretrained=False)
    pair = (ae if rc.schedule != "none" else None, cov)
    return {"ae": ae, "img": img, "cov": {p[len("cov_"):]: pair for p in done if p.startswith("cov_")}}

  tree, _ = ckpt.restore(jax.eval_shape(templates))
  return tree


def load_prepnet_autoencoder(prepnet_workdir: str, row: str = "", seed: int = -1) -> AutoEncoder:
  """The harmonising AE of one row and seed of a `prepnet` run (its phase checkpoint's 'ae').

  row '' = `default_row`; seed -1 = the run's first seed.
  """
  row, seed, rc, ckpt, done = _select(prepnet_workdir, row, seed)
  if rc.schedule == "none":
    raise ValueError(f"row {row!r} of {prepnet_workdir} uses schedule 'none' (no auto-encoder)")
  if not {"ae_warmup", "ae_pretrained"} & set(done):
    raise FileNotFoundError(f"no trained auto-encoder in {ckpt.directory} (finished phases: {done}); "
                            "run or finish the prepnet job first")
  tree = _restore(rc, ckpt, done)
  return AutoEncoder(tree["ae"].apply_fn, tree["ae"].variables, rc.preprocess.to_dict(),
                     f"PrepNet AE of row {row!r}, seed {seed} in {prepnet_workdir}")


def train_set_keys(config) -> list[str]:
  """The names of a run's COVID training sets, as the job keys E_cov: 'sars', 'sars+ucsd', ..."""
  return ["+".join(ref.split("/")[-1] for ref in group) for group in config.cov_train_sets]


def load_prepnet_pipeline(workdir: str, row: str = "", seed: int = -1, train_site: str = "") -> PrepNetPipeline:
  """One row / seed / COVID training set of a `prepnet` run as a CT classifier: the image goes
  through the row's AE (and grayscaling), then the E_cov trained on that AE's outputs.

  row '' = `default_row`; seed -1 = the run's first seed; train_site '' = the run's first COVID
  training set (`cov_train_sets`).
  """
  row, seed, rc, ckpt, done = _select(workdir, row, seed)
  keys = train_set_keys(rc)
  trained = [k for k in keys if f"cov_{k}" in done]
  key = train_site or keys[0]
  if key not in keys:
    raise ValueError(f"train_site={key!r} is not a COVID training set of {workdir}; sets: {keys}")
  if key not in trained:
    raise FileNotFoundError(f"row {row!r} seed {seed} of {workdir} has no trained E_cov for {key!r} yet "
                            f"(trained: {trained}; finished phases: {done}); run or finish the prepnet job")
  ae, cov = _restore(rc, ckpt, done)["cov"][key]
  gray = bool(rc.grayscale_cov)
  stage = None
  if ae is not None or gray:
    stage = PipelineStage(None if ae is None else ae.apply_fn, None if ae is None else ae.variables, gray)
  name = (f"{'PrepNet AE → ' if ae is not None else ''}{'grayscale → ' if gray else ''}"
          f"{rc.e_cov.name} E_cov")
  description = (f"PrepNet run {workdir}: row {row!r} (schedule {rc.schedule}), seed {seed}, "
                 f"E_cov trained on {key}")
  cov_model, _ = compile_cache.build_once(prepnet_networks.build_classifier, rc.e_cov, 1, rc.optim.cov, 1,
                                         precision.compute_dtype(rc))
  return PrepNetPipeline(name, description, rc, prepnet_layout.cov_model_dir(
      prepnet_layout.row_dir(workdir, row, seed), key), cov_model, cov.variables, stage)
