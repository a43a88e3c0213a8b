"""PrepNet: cross-dataset CT harmonisation (task 'prepnet'), every schedule of the thesis.

For each table row (a named set of config overrides) and each seed:
  1. build the training data: the train split of every dataset, tagged with its dataset id
     (the imaging label), optionally up-sampled (Exp. 3);
  2. run the row's schedule over three explicit states (AE, E_img, E_cov) with the jitted
     steps of `prepnet_steps`;
  3. for every COVID training set (one dataset, or several for Exp. 2) train E_cov on AE outputs,
     select the epoch by same-dataset validation balanced accuracy, and evaluate on
     train/val/test of every dataset (every image passes the trained AE first);
  4. write the cross-dataset tables (`prepnet_report`) and harmonisation diagnostics
     (`prepnet_diagnostics`).

Schedules (`config.schedule`; epochs in `config.epochs`):
  none          "Original": E_cov on the preprocessed images, no AE
  ae_only       "Auto-encoder": AE warm-up with L_rec, then E_cov
  original      the reproduced PrepNet: AE warm-up → E_img warm-up → adversarial epochs of
                (rec → img → forget) → E_cov with the AE frozen
  pretrained_ae the same with a pre-trained AE replacing the warm-up (pretrained for
                epochs.ae_pretrain and cached, or loaded from `ae_pretrained_workdir`)
  joint         Exp. 4.1: after the adversarial phase, AE + E_cov trained with L_rec + L_cov
  four_step     Exp. 4.2: pre-trained AE; each epoch e runs rec / img / forget / joint on e batches
  end_to_end    Exp. 5: pre-trained AE; E_img warm-up; one loss L_rec + L_pseu + L_cov
  diagnostic    Exp. 6: pre-trained AE; E_img; E_cov (AE frozen); then the AE alone with
                L_rec + L_pseu (diagnostic_variant='pseu') or L_rec − L_img ('adv'), monitoring
                the fixed E_cov every epoch
Resume: states are checkpointed after every phase under <row workdir>/checkpoints; a rerun
skips finished phases and finished rows.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from prepnet_jax import models
from prepnet_jax.data import datasets, pipeline, transforms
from prepnet_jax.eval import metrics as metrics_lib
from prepnet_jax.models.unet import UNetVGG16AE
from prepnet_jax.runtime import checkpointing, checks
from prepnet_jax.runtime import writers
from prepnet_jax.runtime import optimizers, sharding
from prepnet_jax.tasks.prepnet import diagnostics as prepnet_diagnostics
from prepnet_jax.tasks.prepnet import report as prepnet_report
from prepnet_jax.tasks.prepnet import steps
from prepnet_jax.runtime.state import TrainState, create_train_state

SCHEDULES = ("none", "ae_only", "original", "pretrained_ae", "joint", "four_step", "end_to_end", "diagnostic")


# --- data ------------------------------------------------------------------------------------------

class Data:
  """Preprocessed, in-memory splits of every dataset plus the combined AE/E_img training set."""

  def __init__(self, config):
    self.refs = list(config.data.datasets)
    self.names = [r.split("/")[-1] for r in self.refs]
    pre = transforms.make_preprocess(config.preprocess, training=False)
    self.pre = pre
    self.splits = {}
    for d, ref in enumerate(self.refs):
      for split in ("train", "val", "test"):
        raw = datasets.get_source(ref, split, config.data)
        if len(raw) == 0:
          raise ValueError(f"dataset {ref} has an empty {split} split; use more patients")
        src = pipeline.materialize(raw, pre, seed=config.seed)
        src.arrays["domain"] = np.full(len(src), d, np.int32)
        self.splits[(d, split)] = src
    self.raw_train = {d: datasets.get_source(ref, "train", config.data) for d, ref in enumerate(self.refs)}
    sizes = [len(self.splits[(d, "train")]) for d in range(len(self.refs))]
    self.repeats = upsample_factors(sizes) if config.upsample else [1] * len(sizes)
    self.all_train = pipeline.ConcatSource([self.splits[(d, "train")] for d in range(len(self.refs))],
                                           domains=list(range(len(self.refs))), repeats=self.repeats)
    self.origin_raw_cache: dict[tuple, dict] = {}  # see prepnet_diagnostics.run_all
    self._val: dict[tuple, pipeline.ConcatSource] = {}

  def cov_train(self, members: list[int], config):
    """E_cov training data: the train splits of `members` (up-sampled if config.upsample)."""
    repeats = [self.repeats[d] for d in members] if config.upsample else None
    augment = dict(config.preprocess.get("augment", {}) or {})
    if any(bool(v) for v in augment.values()):
      train_pre = transforms.make_preprocess(config.preprocess, training=True)
      sources = [self.raw_train[d] for d in members]
      return pipeline.ConcatSource(sources, domains=members, repeats=repeats), train_pre
    return (pipeline.ConcatSource([self.splits[(d, "train")] for d in members], domains=members, repeats=repeats),
            lambda ex, rng: ex)

  def val(self, members: list[int]):
    """The validation splits of `members` (one object per set, so its AE outputs can be cached)."""
    key = tuple(members)
    if key not in self._val:
      self._val[key] = pipeline.ConcatSource([self.splits[(d, "val")] for d in members], domains=members)
    return self._val[key]


def upsample_factors(sizes: list[int]) -> list[int]:
  """Thesis Exp. 3: duplicate each smaller dataset by round(largest / its size)."""
  largest = max(sizes)
  return [max(1, int(round(largest / max(n, 1)))) for n in sizes]


# --- networks --------------------------------------------------------------------------------------

def _sample_input(config):
  s, c = int(config.preprocess.image_size), int(config.preprocess.channels)
  return jnp.zeros((1, s, s, c), jnp.float32)


def _key(cfg) -> str:
  return json.dumps(cfg.to_dict() if hasattr(cfg, "to_dict") else cfg, sort_keys=True, default=str)


# The jitted steps take the states as arguments, and a state's module and optimizer are static
# (hashed) fields: building them once per distinct setting lets every seed, row and E_cov
# training set reuse the compiled steps instead of compiling them again (~10 s each on CPU).
@functools.lru_cache(maxsize=32)
def _ae_parts(ae_key: str, channels: int, optim_key: str, steps_per_epoch: int):
  ae_cfg, optim_cfg = json.loads(ae_key), ml_collections.ConfigDict(json.loads(optim_key))
  model = UNetVGG16AE(width_multiplier=float(ae_cfg["width_multiplier"]), depth=int(ae_cfg["depth"]),
                      upsample=ae_cfg["upsample"], out_channels=channels,
                      out_activation=ae_cfg["out_activation"])
  return model, optimizers.make_optimizer(optim_cfg, steps_per_epoch, steps_per_epoch)


@functools.lru_cache(maxsize=32)
def _classifier_parts(net_key: str, num_outputs: int, optim_key: str, steps_per_epoch: int):
  net_cfg, optim_cfg = json.loads(net_key), ml_collections.ConfigDict(json.loads(optim_key))
  model = models.get_classifier(net_cfg["name"], num_outputs, width_multiplier=float(net_cfg["width_multiplier"]),
                                **dict(net_cfg.get("kwargs", {}) or {}))
  return model, optimizers.make_optimizer(optim_cfg, steps_per_epoch, steps_per_epoch)


def make_ae_state(config, rng, steps_per_epoch: int) -> TrainState:
  ae_cfg = config.ae
  model, tx = _ae_parts(_key(ae_cfg), int(config.preprocess.channels), _key(config.optim_ae), int(steps_per_epoch))
  state = create_train_state(model, tx, rng, _sample_input(config))
  if ae_cfg.get("pretrained_path", ""):
    variables = models.load_pretrained("unet_vgg16", state.variables, ae_cfg.pretrained_path,
                                       sha256=ae_cfg.get("pretrained_sha256", "") or None)
    state = state.replace(params=variables["params"], opt_state=tx.init(variables["params"]))
  return state


def make_classifier_state(config, net_cfg, num_outputs: int, rng, steps_per_epoch: int, optim_cfg) -> TrainState:
  model, tx = _classifier_parts(_key(net_cfg), int(num_outputs), _key(optim_cfg), int(steps_per_epoch))
  state = create_train_state(model, tx, rng, _sample_input(config))
  if net_cfg.get("pretrained_path", ""):
    variables = models.load_pretrained(net_cfg.name, state.variables, net_cfg.pretrained_path,
                                       sha256=net_cfg.get("pretrained_sha256", "") or None)
    state = state.replace(params=variables["params"], batch_stats=variables.get("batch_stats", state.batch_stats),
                          opt_state=tx.init(variables["params"]))
  return state


# --- one row, one seed ---------------------------------------------------------------------------

class RowRun:
  """Runs one schedule for one seed with phase-level checkpoints in `workdir`."""

  def __init__(self, config, data: Data, workdir: str, mesh, writer, label: str):
    self.config, self.data, self.workdir, self.mesh, self.writer = config, data, workdir, mesh, writer
    self.label = label
    self.bs = int(config.batch_size)
    self.seed = int(config.seed)
    self.ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 1)
    self.meta = {"done": [], "curves": {}}
    self.gray_cov = bool(config.grayscale_cov)
    self.gray_img = bool(config.grayscale_img)
    self.l = config.losses
    self.global_step = 0
    self.phase_index = 0
    n_all = len(data.all_train)
    self.steps_all = pipeline.steps_per_epoch(data.all_train, self.bs)
    rng = jax.random.key(self.seed)
    r_ae, r_img, self.r_cov = jax.random.split(rng, 3)
    self.ae = sharding.replicate(make_ae_state(config, r_ae, self.steps_all), mesh)
    self.img = sharding.replicate(make_classifier_state(config, config.e_img, len(data.refs), r_img,
                                                        self.steps_all, config.optim_img), mesh)
    self.cov_states: dict[str, tuple] = {}
    self.shared_phases: list[str] = []
    self._recon_cache: tuple = (None, {})
    logging.info("row %s: %d AE/E_img training examples (repeats %s)", label, n_all, data.repeats)

  # -- bookkeeping
  def _state_tree(self):
    return {"ae": jax.device_get(self.ae), "img": jax.device_get(self.img),
            "cov": {k: jax.device_get(v) for k, v in self.cov_states.items()}}

  def _phase(self, name: str, fn, shared: bool = False) -> None:
    """Runs `fn` unless a checkpoint says it finished; checkpoints right after it.

    `shared` marks the AE/E_img phases before E_cov: rows that differ only in E_cov settings
    (grayscaling, the classifier, augmentation, the schedule's later phases) get bit-identical
    AE and E_img states from them, so the states after each such phase are stored once per
    (phase sequence, AE-side config) under the job's shared dir and reused by later rows.
    """
    self.phase_index += 1
    if shared:
      self.shared_phases.append(name)
    if name in self.meta["done"]:
      return
    t0 = time.time()
    cache = self._shared_phase_cache() if shared else None
    if cache is not None and cache.latest_step() is not None:
      tree, meta = cache.restore({"ae": jax.device_get(self.ae), "img": jax.device_get(self.img)})
      self.ae, self.img = sharding.replicate(tree["ae"], self.mesh), sharding.replicate(tree["img"], self.mesh)
      self.meta["curves"].update(meta.get("curves", {}))
      print(f"[prepnet {self.label}] {name}: reused the identical phase of an earlier row "
            f"({os.path.basename(cache.directory)})", flush=True)
    else:
      curves_before = set(self.meta["curves"])
      fn()
      if cache is not None:
        new_curves = {k: v for k, v in self.meta["curves"].items() if k not in curves_before}
        cache.save(1, {"ae": jax.device_get(self.ae), "img": jax.device_get(self.img)}, {"curves": new_curves})
    self.meta["done"].append(name)
    self.meta.setdefault("phase_seconds", {})[name] = round(time.time() - t0, 2)
    self.ckpt.save(self.phase_index, self._state_tree(), self.meta)

  def _shared_phase_cache(self) -> checkpointing.Checkpointer | None:
    shared_dir = self.config.get("_shared_dir", "")
    if not shared_dir:
      return None
    name = "+".join(self.shared_phases) + "_" + ae_side_hash(self.config)
    return checkpointing.Checkpointer(os.path.join(shared_dir, "phases", name), 1)

  def try_resume(self, cov_template) -> None:
    if self.ckpt.latest_step() is None:
      return
    meta = self.ckpt.read_meta()
    saved = [p[len("cov_"):] for p in meta.get("done", []) if p.startswith("cov_")]
    template = {"ae": jax.device_get(self.ae), "img": jax.device_get(self.img),
                "cov": {k: cov_template for k in saved}}
    tree, meta = self.ckpt.restore(template)
    self.ae, self.img = sharding.replicate(tree["ae"], self.mesh), sharding.replicate(tree["img"], self.mesh)
    self.cov_states = {k: sharding.replicate(v, self.mesh) for k, v in tree["cov"].items()}
    self.meta = meta
    print(f"[prepnet {self.label}] resuming after phases {meta['done']}", flush=True)

  def _batches(self, source, preprocess, salt: int):
    ds = pipeline.train_dataset(source, preprocess, self.bs, seed=self.seed * 1000 + salt)
    return pipeline.make_iterator(ds)

  def _log(self, phase: str, epoch: int, scalars: dict) -> None:
    scalars = {k: float(v) for k, v in jax.device_get(scalars).items()}
    self.global_step += 1
    checks.check_finite(scalars, self.global_step)
    self.writer.write_scalars(self.global_step, {f"{self.label}/{phase}/{k}": v for k, v in scalars.items()})
    self.meta["curves"].setdefault(phase, []).append({"epoch": epoch, **scalars})
    text = " ".join(f"{k}={v:.4f}" for k, v in scalars.items())
    print(f"[prepnet {self.label}] {phase} epoch {epoch}: {text}", flush=True)

  def _epochs(self, phase: str, n_epochs: int, run_epoch) -> None:
    for epoch in range(1, n_epochs + 1):
      self._log(phase, epoch, run_epoch(epoch))

  def _mean(self, outs: list[dict]) -> dict:
    return {k: jnp.mean(jnp.stack([o[k] for o in outs])) for k in outs[0]}

  def _shard(self, batch):
    return sharding.shard_batch(batch, self.mesh)

  # -- AE / E_img phases
  def ae_rec_epochs(self, phase: str, n_epochs: int, salt: int) -> None:
    it = self._batches(self.data.all_train, lambda e, r: e, salt)
    def run(_):
      outs = []
      for _ in range(self.steps_all):
        self.ae, out = steps.ae_rec_step(self.ae, self._shard(next(it)), rec=self.l.rec)
        outs.append(out)
      return self._mean(outs)
    self._epochs(phase, n_epochs, run)

  def img_epochs(self, phase: str, n_epochs: int, salt: int) -> None:
    it = self._batches(self.data.all_train, lambda e, r: e, salt)
    def run(_):
      outs = []
      for _ in range(self.steps_all):
        self.img, out = steps.img_step(self.img, self.ae, self._shard(next(it)), gray=self.gray_img)
        outs.append(out)
      return self._mean(outs)
    self._epochs(phase, n_epochs, run)

  def _forget(self, batch):
    return steps.forget_step(self.ae, self.img, batch, eta_rec=float(self.l.eta_rec),
                             eta_pseu=float(self.l.eta_pseu), sigma=float(self.l.pseudo_sigma),
                             rec=self.l.rec, target=self.l.pseudo_target, gray=self.gray_img)

  def adversarial_epochs(self, n_epochs: int) -> None:
    """Phase 3: every epoch runs rec → img → forget (each a full pass, or alternating per batch)."""
    its = [self._batches(self.data.all_train, lambda e, r: e, 30 + k) for k in range(3)]
    per_batch = self.config.adversarial_alternation == "batch"
    def run(_):
      outs = []
      if per_batch:
        for _ in range(self.steps_all):
          self.ae, o1 = steps.ae_rec_step(self.ae, self._shard(next(its[0])), rec=self.l.rec)
          self.img, o2 = steps.img_step(self.img, self.ae, self._shard(next(its[1])), gray=self.gray_img)
          self.ae, o3 = self._forget(self._shard(next(its[2])))
          outs.append({"rec_l_rec": o1["l_rec"], **o2, **o3})
        return self._mean(outs)
      o1 = []
      for _ in range(self.steps_all):
        self.ae, o = steps.ae_rec_step(self.ae, self._shard(next(its[0])), rec=self.l.rec)
        o1.append(o)
      o2 = []
      for _ in range(self.steps_all):
        self.img, o = steps.img_step(self.img, self.ae, self._shard(next(its[1])), gray=self.gray_img)
        o2.append(o)
      o3 = []
      for _ in range(self.steps_all):
        self.ae, o = self._forget(self._shard(next(its[2])))
        o3.append(o)
      return {"rec_l_rec": self._mean(o1)["l_rec"], **self._mean(o2), **self._mean(o3)}
    self._epochs("adversarial", n_epochs, run)

  def diagnostic_ae_epochs(self, n_epochs: int, cov_key: str, members: list[int]) -> None:
    """Exp. 6: AE-only training against the fixed E_img; the fixed E_cov is monitored each epoch."""
    it = self._batches(self.data.all_train, lambda e, r: e, 60)
    img_it = self._batches(self.data.all_train, lambda e, r: e, 61)
    variant = self.config.diagnostic_variant
    def run(_):
      outs = []
      for _ in range(self.steps_all):
        batch = self._shard(next(it))
        if variant == "pseu":
          self.ae, out = self._forget(batch)
        else:
          self.ae, out = steps.adv_step(self.ae, self.img, batch, eta_rec=float(self.l.eta_rec),
                                        eta_img=float(self.l.eta_img), rec=self.l.rec, gray=self.gray_img)
        if self.config.diagnostic_train_img:
          self.img, _ = steps.img_step(self.img, self.ae, self._shard(next(img_it)), gray=self.gray_img)
        outs.append(out)
      scalars = self._mean(outs)
      cov = self.cov_states[cov_key][1]
      for d in range(len(self.data.refs)):
        for split in ("train", "val"):
          ba = self.evaluate_split(self.ae, cov, d, split)["balanced_accuracy"]
          tag = "same" if d in members else "cross"
          scalars[f"cov_ba_{self.data.names[d]}_{split}_{tag}"] = jnp.asarray(ba)
      return scalars
    self._epochs(f"diagnostic_{variant}_{cov_key}", n_epochs, run)

  # -- E_cov
  def new_cov(self, salt: int) -> TrainState:
    return sharding.replicate(make_classifier_state(
        self.config, self.config.e_cov, 1, jax.random.fold_in(self.r_cov, salt), 1, self.config.optim_cov), self.mesh)

  def evaluate_split(self, ae, cov, d: int, split: str) -> dict:
    src = self.data.splits[(d, split)]
    logits = self.cov_logits(ae, cov, src)
    return metrics_lib.classification_metrics(src.column("label"), _sigmoid(logits[:, 0]), ["non-COVID", "COVID"])

  def cov_logits(self, ae, cov, src) -> np.ndarray:
    """E_cov logits of every example of `src`, each image passed through `ae` first (if any)."""
    bs = _round_up(self.bs, self.mesh.devices.size)
    if ae is not None:  # cov(AE(x)) == cov applied to the cached AE(x): reconstruct once per AE state
      src, ae = self._reconstructions(ae, src, bs), None
    out = []
    for batch, valid in pipeline.eval_batches(src, lambda e, r: e, bs):
      images = self._shard({"image": batch["image"]})["image"]
      out.append(np.asarray(steps.cov_logits(cov, ae, images, gray=self.gray_cov))[:valid])
    return np.concatenate(out)

  def _reconstructions(self, ae, src, bs: int) -> pipeline.ArraySource:
    """AE outputs of an evaluation source, cached while the same (immutable) AE state is used:
    E_cov is validated on 1 + K−1 splits every epoch and evaluated on all splits at the end."""
    if self._recon_cache[0] is not ae:
      self._recon_cache = (ae, {})  # holding the state and the source keeps their ids unique
    cache = self._recon_cache[1]
    if id(src) not in cache:
      out = []
      for batch, valid in pipeline.eval_batches(src, lambda e, r: e, bs):
        images = self._shard({"image": batch["image"]})["image"]
        out.append(np.asarray(steps.reconstruct(ae, images))[:valid])
      cache[id(src)] = (src, pipeline.ArraySource({"image": np.concatenate(out)}))
    return cache[id(src)][1]

  def train_cov(self, key: str, members: list[int], salt: int, mode: str = "frozen_ae",
                n_epochs: int | None = None) -> None:
    """E_cov on AE outputs of `members`, selected by their validation BA.

    mode 'frozen_ae' (baseline), 'none' (no AE: the Original row), 'joint' (Exp. 4.1),
    'end_to_end' (Exp. 5), 'four_step' (Exp. 4.2 growing batch curriculum).
    """
    config = self.config
    source, pre = self.data.cov_train(members, config)
    cov = self.new_cov(salt)
    ae = None if mode == "none" else self.ae
    if mode in ("joint", "end_to_end"):  # these update the AE: train a copy (the caller restores it)
      ae = sharding.replicate(jax.device_get(self.ae), self.mesh)
    it = self._batches(source, pre, 100 + salt)
    its = [self._batches(self.data.all_train, lambda e, r: e, 200 + salt + k) for k in range(3)]
    n_steps = pipeline.steps_per_epoch(source, self.bs)
    cw = config.get("cov_class_weights", "none")
    cw = None if cw == "none" else jnp.asarray(pipeline.class_weights(pipeline.column(source, "label"), 2, cw))
    n_epochs = n_epochs or int(config.epochs.cov)
    best = (-1.0, None, None, 0)
    eta = self.l
    for epoch in range(1, n_epochs + 1):
      outs = []
      steps_this_epoch = min(epoch, n_steps) if mode == "four_step" else n_steps
      if mode == "four_step":  # Exp. 4.2: rec, img, forget on `epoch` batches each, then joint
        for _ in range(epoch):
          self.ae, _ = steps.ae_rec_step(self.ae, self._shard(next(its[0])), rec=eta.rec)
        for _ in range(epoch):
          self.img, _ = steps.img_step(self.img, self.ae, self._shard(next(its[1])), gray=self.gray_img)
        for _ in range(epoch):
          self.ae, _ = self._forget(self._shard(next(its[2])))
        ae = self.ae
      for _ in range(steps_this_epoch):
        batch = self._shard(next(it))
        if mode in ("frozen_ae", "none"):
          cov, out = steps.cov_step(cov, ae, batch, gray=self.gray_cov, class_weights=cw)
        elif mode in ("joint", "four_step"):
          ae, cov, out = steps.joint_cov_step(ae, cov, batch, eta_rec=float(eta.eta_rec),
                                              eta_cov=float(eta.eta_cov), rec=eta.rec, gray=self.gray_cov,
                                              class_weights=cw)
        elif mode == "end_to_end":
          ae, cov, out = steps.e2e_step(ae, cov, self.img, self._shard(next(its[0])), batch,
                                        eta_rec=float(eta.eta_rec), eta_pseu=float(eta.eta_pseu),
                                        eta_cov=float(eta.eta_cov), sigma=float(eta.pseudo_sigma),
                                        rec=eta.rec, target=eta.pseudo_target, gray=self.gray_cov,
                                        class_weights=cw)
        else:
          raise ValueError(f"unknown E_cov training mode {mode!r}")
        outs.append(out)
      if mode == "four_step":
        self.ae = ae
      val_src = self.data.val(members)
      logits = self.cov_logits(ae, cov, val_src)
      val = metrics_lib.classification_metrics(val_src.column("label"), _sigmoid(logits[:, 0]))
      scalars = {**self._mean(outs), "val_ba": jnp.asarray(val["balanced_accuracy"])}
      cross = [d for d in range(len(self.data.refs)) if d not in members]
      for d in cross:  # the cross-dataset validation curve the thesis plots
        scalars[f"cross_val_ba_{self.data.names[d]}"] = jnp.asarray(
            self.evaluate_split(ae, cov, d, "val")["balanced_accuracy"])
      self._log(f"cov_{key}", epoch, scalars)
      # Ties (e.g. every epoch at BA 0.5 on a tiny validation split) keep the later, more trained
      # epoch rather than the untrained first one.
      if val["balanced_accuracy"] >= best[0]:
        keep_ae = ae is not None and mode != "frozen_ae"
        best = (val["balanced_accuracy"], jax.device_get(ae) if keep_ae else None, jax.device_get(cov), epoch)
    if mode == "frozen_ae":  # the AE never changed: keep the very state, so its outputs stay cached
      best_ae = ae
    else:
      best_ae = sharding.replicate(best[1], self.mesh) if best[1] is not None else None
    self.cov_states[key] = (best_ae, sharding.replicate(best[2], self.mesh))
    self.meta.setdefault("best_epochs", {})[key] = best[3]

  # -- schedule
  def pretrained_ae(self) -> None:
    """Replaces phase 1 by a pre-trained AE: loaded from a workdir, or pretrained once and cached."""
    src = self.config.get("ae_pretrained_workdir", "")
    cache = src or os.path.join(self.config.get("_shared_dir", self.workdir), f"ae_pretrained_{ae_side_hash(self.config)}")
    ckpt = checkpointing.Checkpointer(os.path.join(cache, "checkpoints"), 1)
    if ckpt.latest_step() is None:
      if src:
        raise FileNotFoundError(f"ae_pretrained_workdir={src} has no checkpoint")
      self.ae_rec_epochs("ae_pretrain", int(self.config.epochs.ae_pretrain), 5)
      ckpt.save(1, {"ae": jax.device_get(self.ae)}, {})
    else:
      tree, _ = ckpt.restore({"ae": jax.device_get(self.ae)})
      self.ae = sharding.replicate(tree["ae"], self.mesh)
      print(f"[prepnet {self.label}] loaded the pre-trained AE from {cache}", flush=True)

  def run(self) -> dict:
    config, e = self.config, self.config.epochs
    schedule = config.schedule
    if schedule not in SCHEDULES:
      raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")
    train_sets = [[self.data.refs.index(r) for r in group] for group in config.cov_train_sets]
    keys = ["+".join(self.data.names[d] for d in group) for group in train_sets]
    cov0 = jax.device_get(self.new_cov(0))
    self.try_resume((None, cov0) if schedule == "none" else (jax.device_get(self.ae), cov0))
    uses_pretrained = schedule in ("pretrained_ae", "four_step", "end_to_end", "diagnostic")
    if schedule != "none":
      if uses_pretrained:
        self._phase("ae_pretrained", self.pretrained_ae)
      else:
        self._phase("ae_warmup", lambda: self.ae_rec_epochs("ae_warmup", int(e.ae_warmup), 1), shared=True)
    if schedule in ("original", "pretrained_ae", "joint"):
      self._phase("img_warmup", lambda: self.img_epochs("img_warmup", int(e.img_warmup), 2), shared=True)
      self._phase("adversarial", lambda: self.adversarial_epochs(int(e.adversarial)), shared=True)
    if schedule in ("end_to_end", "diagnostic", "four_step"):
      self._phase("img_warmup_pretrain", lambda: self.img_epochs("img_warmup", int(e.img_pretrain), 2),
                  shared=True)
    mode = {"none": "none", "joint": "joint", "end_to_end": "end_to_end", "four_step": "four_step"}.get(
        schedule, "frozen_ae")
    n_cov = {"joint": e.joint, "end_to_end": e.end_to_end, "four_step": e.four_step,
             "diagnostic": e.diag_cov}.get(schedule, e.cov)
    for t, (key, members) in enumerate(zip(keys, train_sets)):
      if schedule in ("joint", "end_to_end", "four_step"):
        # The AE changes with E_cov: every COVID training set starts from the same AE.
        start_ae = jax.device_get(self.ae)
        self._phase(f"cov_{key}", lambda: self.train_cov(key, members, t, mode, int(n_cov)))
        self.ae = sharding.replicate(start_ae, self.mesh)
      else:
        self._phase(f"cov_{key}", lambda: self.train_cov(key, members, t, mode, int(n_cov)))
      if schedule == "diagnostic":
        start_ae = jax.device_get(self.ae)
        self.cov_states[key] = (self.ae, self.cov_states[key][1])
        self._phase(f"diagnostic_{key}", lambda: self.diagnostic_ae_epochs(int(e.diag_ae), key, members))
        self.cov_states[key] = (self.ae, self.cov_states[key][1])
        self.ae = sharding.replicate(start_ae, self.mesh)
    results = {}
    for key, members in zip(keys, train_sets):
      ae, cov = self.cov_states[key]
      results[key] = {"members": [self.data.names[d] for d in members], "eval": {}}
      for d, name in enumerate(self.data.names):
        results[key]["eval"][name] = {split: self.evaluate_split(ae, cov, d, split)
                                      for split in ("train", "val", "test")}
    return results


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _round_up(n: int, m: int) -> int:
  return ((n + m - 1) // m) * m


# --- rows × seeds ----------------------------------------------------------------------------------

# Config fields that only affect E_cov (or bookkeeping): everything else can change the AE or E_img.
_COV_ONLY_FIELDS = ("e_cov", "optim_cov", "grayscale_cov", "cov_train_sets", "cov_class_weights", "diagnostics",
                    "rows", "baseline_row", "seeds", "schedule", "diagnostic_variant", "diagnostic_train_img",
                    "_shared_dir")
_COV_ONLY_EPOCHS = ("cov", "joint", "four_step", "end_to_end", "diag_cov", "diag_ae")


def ae_side_hash(config) -> str:
  """Hash of every config field that can influence the AE or E_img (seed included); two rows with
  the same hash train bit-identical AE/E_img states in their shared phases."""
  c = config.to_dict()
  for key in _COV_ONLY_FIELDS:
    c.pop(key, None)
  c["epochs"] = {k: v for k, v in c["epochs"].items() if k not in _COV_ONLY_EPOCHS}
  c["preprocess"] = {k: v for k, v in c["preprocess"].items() if k != "augment"}  # E_cov training only
  return hashlib.sha1(_key(c).encode()).hexdigest()[:12]


def row_config(config, row: dict, seed: int, shared_dir: str):
  c = copy.deepcopy(config.to_dict())
  for key, value in dict(row.get("overrides", {})).items():
    target = c
    *path, last = key.split(".")
    for p in path:
      target = target[p]
    if last not in target:
      raise KeyError(f"row {row['name']!r} overrides unknown config field {key!r}")
    target[last] = value
  c["seed"] = seed
  c["_shared_dir"] = shared_dir
  return ml_collections.ConfigDict(c)


def slug(name: str) -> str:
  return "".join(ch if ch.isalnum() else "_" for ch in name.lower()).strip("_")


def train_and_evaluate(config, workdir: str) -> dict:
  mesh = sharding.make_mesh()
  writer = writers.create_writer(workdir)
  reports = os.path.join(workdir, "reports")
  os.makedirs(reports, exist_ok=True)
  t_start = time.time()
  data_cache: dict[bool, Data] = {}
  all_results: dict[str, dict[int, dict]] = {}
  diagnostics: dict[str, dict] = {}
  for row in config.rows:
    name = row["name"]
    all_results[name] = {}
    for seed in config.seeds:
      rc = row_config(config, row, int(seed), os.path.join(workdir, "shared"))
      row_dir = os.path.join(workdir, "rows", slug(name), f"seed_{seed}")
      done_file = os.path.join(row_dir, "results.json")
      if os.path.exists(done_file):
        with open(done_file) as f:
          all_results[name][int(seed)] = json.load(f)
        print(f"[prepnet] row {name!r} seed {seed}: finished earlier, results loaded", flush=True)
        continue
      key = (bool(rc.upsample), int(seed), _key(rc.preprocess), _key(rc.data))
      if key not in data_cache:
        data_cache[key] = Data(rc)
      data = data_cache[key]
      print(f"[prepnet] row {name!r} seed {seed}: schedule={rc.schedule} upsample={rc.upsample} "
            f"(repeats {data.repeats}) grayscale_cov={rc.grayscale_cov} E_cov={rc.e_cov.name}", flush=True)
      run = RowRun(rc, data, row_dir, mesh, writer, f"{slug(name)}/s{seed}")
      results = run.run()
      if rc.schedule != "none" and int(seed) == int(config.seeds[0]) and config.diagnostics.enabled:
        diagnostics[name] = prepnet_diagnostics.run_all(rc, data, run, os.path.join(reports, slug(name)), writer, mesh)
        results["_diagnostics"] = diagnostics[name]
      results["_curves"] = run.meta["curves"]
      results["_phase_seconds"] = run.meta.get("phase_seconds", {})
      os.makedirs(row_dir, exist_ok=True)
      with open(done_file, "w") as f:
        json.dump(results, f)
      all_results[name][int(seed)] = results
  tables = prepnet_report.build_tables(all_results, config)
  text = prepnet_report.write(reports, tables, all_results, config, time.time() - t_start)
  print("\n" + text, flush=True)
  writer.flush()
  return tables
