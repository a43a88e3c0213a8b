"""One table row for one seed: the row's schedule (see `schedules`) over three explicit states.

The AE, E_img and every E_cov are `TrainState`s updated by the jitted steps of `steps`. After
every phase the states are checkpointed in the row's directory; a rerun skips finished phases.
Inside a phase, every `checkpoint_every_epochs` epochs, the states it trains go to an epoch
checkpoint (`phase_progress`); a rerun continues a killed phase after its last saved epoch.

Console progress and TensorBoard scalars: `phase_log`.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from prepnet_jax.data import pipeline
from prepnet_jax.eval import classify, metrics as metrics_lib, prepnet_layout
from prepnet_jax.models import prepnet_networks
from prepnet_jax.runtime import checkpointing, sharding
from prepnet_jax.runtime.state import TrainState
from prepnet_jax.tasks.prepnet import baselines, evaluation, phase_log, phase_progress, rows, schedules, steps
from prepnet_jax.tasks.prepnet.training_data import Data

def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


class RowRun:
  """Runs one schedule for one seed with phase and epoch checkpoints in `workdir`.

  `shared_dir` holds what rows with the same AE-side config share (see `phase`); `writer` is the
  row/seed's TensorBoard run and `label` names it on the console.
  """

  def __init__(self, config, data: Data, workdir: str, shared_dir: str, mesh, writer, label: str):
    self.config, self.data, self.workdir, self.mesh, self.writer = config, data, workdir, mesh, writer
    self.shared_dir, self.label = shared_dir, label
    self.schedule = schedules.get_schedule(config.schedule)
    self.bs, self.seed = int(config.batch_size), int(config.seed)
    self.ckpt = checkpointing.Checkpointer(prepnet_layout.row_checkpoints(workdir), 1)
    self.meta = {"done": [], "curves": {}, "log_step": 0}
    self.gray_cov = bool(config.grayscale_cov)
    self.gray_img = bool(config.grayscale_img)
    self.loss_cfg = config.losses
    self.phase_index = 0
    self.progress: phase_progress.PhaseProgress | None = None  # the running phase's epoch checkpoint
    self.log = phase_log.PhaseLog(writer, label)
    self.steps_all = pipeline.steps_per_epoch(data.all_train, self.bs)
    r_ae, r_img, self.r_cov = jax.random.split(jax.random.key(self.seed), 3)
    self.ae = sharding.replicate(prepnet_networks.make_ae_state(config, r_ae, self.steps_all), mesh)
    self.img = sharding.replicate(prepnet_networks.make_classifier_state(
        config, config.e_img, len(data.refs), r_img, self.steps_all, config.optim.img), mesh)
    self.cov_states: dict[str, tuple] = {}
    self.shared_phases: list[str] = []
    self._recon_cache: tuple = (None, {})
    baselines.check(config)
    self.standardise = baselines.standardiser(config, data)  # None unless a standardisation baseline
    logging.info("row %s: %d AE/E_img training examples (repeats %s)", label, len(data.all_train), data.repeats)

  # -- bookkeeping
  def _state_tree(self):
    return {"ae": jax.device_get(self.ae), "img": jax.device_get(self.img),
            "cov": {k: jax.device_get(v) for k, v in self.cov_states.items()}}

  def phase(self, name: str, fn, shared: bool = False) -> None:
    """Runs `fn` unless a checkpoint says it finished; checkpoints right after it.

    `shared` marks the AE/E_img phases before E_cov: rows that differ only in E_cov settings
    (grayscaling, the classifier, augmentation, the schedule's later phases) get bit-identical
    AE and E_img states from them, so the states after each such phase are stored once per
    (phase sequence, AE-side config) under the shared dir and reused by later rows.
    """
    self.phase_index += 1
    if shared:
      self.shared_phases.append(name)
    if name in self.meta["done"]:
      phase_progress.remove(self.workdir, name)  # left behind by a kill right after the phase's checkpoint
      return
    t0 = time.time()
    cache = self._shared_phase_cache() if shared else None
    if cache is not None and cache.latest_step() is not None:
      tree, meta = cache.restore({"ae": jax.device_get(self.ae), "img": jax.device_get(self.img)})
      self.ae, self.img = sharding.replicate(tree["ae"], self.mesh), sharding.replicate(tree["img"], self.mesh)
      self.meta["curves"].update(meta["curves"])
      for curve, epochs in meta["curves"].items():  # this row's TensorBoard run gets them too
        for entry in epochs:
          self.log.write_scalars(self.meta, curve, {k: v for k, v in entry.items() if k != "epoch"})
      print(f"[prepnet {self.label}] {name}: reused the identical phase of an earlier row "
            f"({os.path.basename(cache.directory)})", flush=True)
    else:
      curves_before = set(self.meta["curves"])
      self.progress = phase_progress.PhaseProgress(self.workdir, name, int(self.config.checkpoint_every_epochs))
      fn()
      self.progress.close()
      t0 = self.progress.started  # with the time a killed run spent in the phase
      if cache is not None:
        new_curves = {k: v for k, v in self.meta["curves"].items() if k not in curves_before}
        cache.save(1, {"ae": jax.device_get(self.ae), "img": jax.device_get(self.img)}, {"curves": new_curves})
    self.meta["done"].append(name)
    self.meta.setdefault("phase_seconds", {})[name] = round(time.time() - t0, 2)
    self.ckpt.save(self.phase_index, self._state_tree(), self.meta)
    phase_progress.remove(self.workdir, name)  # superseded by the checkpoint just saved

  def _shared_phase_cache(self) -> checkpointing.Checkpointer | None:
    if not self.shared_dir:
      return None
    directory = prepnet_layout.shared_phase_dir(self.shared_dir, self.shared_phases, rows.ae_side_hash(self.config))
    return checkpointing.Checkpointer(directory, 1)

  def try_resume(self, cov_template) -> None:
    """Continues after the phases an earlier run of this row finished (nothing if none did)."""
    if self.ckpt.latest_step() is None:
      return
    saved = [p[len("cov_"):] for p in self.ckpt.read_meta()["done"] if p.startswith("cov_")]
    template = {"ae": jax.device_get(self.ae), "img": jax.device_get(self.img),
                "cov": {k: cov_template for k in saved}}
    tree, meta, _ = checkpointing.resume(self.ckpt, template, self.workdir)
    self.ae, self.img = sharding.replicate(tree["ae"], self.mesh), sharding.replicate(tree["img"], self.mesh)
    self.cov_states = {k: sharding.replicate(v, self.mesh) for k, v in tree["cov"].items()}
    self.meta = {"log_step": 0, **meta}
    print(f"[prepnet {self.label}] resuming after phases {meta['done']}", flush=True)

  def _resume_epochs(self, curve: str, states: dict, iterators: list) -> tuple[int, dict, dict]:
    """(epochs done, states, the loop's extra metadata) where the running phase's epoch checkpoint
    left off (the row's metadata restored with it), or (0, `states`, {})."""
    start, tree, meta, extra = self.progress.restore(states, iterators)
    if not start:
      return 0, states, {}
    self.meta = meta
    print(f"[prepnet {self.label}] {curve}: resuming after epoch {start} from {self.progress.directory}",
          flush=True)
    return start, sharding.replicate(tree, self.mesh), extra

  def _batches(self, source, preprocess, salt: int):
    ds = pipeline.train_dataset(source, preprocess, self.bs, seed=self.seed * 1000 + salt)
    return pipeline.make_iterator(ds)

  def _log(self, phase: str, epoch: int, n_epochs: int, scalars: dict) -> None:
    scalars = {k: float(v) for k, v in jax.device_get(scalars).items()}
    self.log.write_scalars(self.meta, phase, scalars)
    self.meta["curves"].setdefault(phase, []).append({"epoch": epoch, **scalars})
    self.log.epoch_line(f"{phase} epoch {epoch}/{n_epochs}", scalars)

  def _epochs(self, phase: str, n_epochs: int, run_epoch, trains: tuple[str, ...], iterators: list,
              epoch_steps: int) -> None:
    """Epochs 1..n_epochs of a loop that updates the row's states named in `trains` ('ae', 'img')
    and draws from `iterators`, continuing after the phase's epoch checkpoint if it has one;
    `run_epoch` ticks `self.log` `epoch_steps` times per epoch."""
    start, states, _ = self._resume_epochs(phase, {n: getattr(self, n) for n in trains}, iterators)
    for n in trains:
      setattr(self, n, states[n])
    self.log.start(n_epochs * epoch_steps, start * epoch_steps)
    for epoch in range(start + 1, n_epochs + 1):
      self._log(phase, epoch, n_epochs, run_epoch(epoch))
      self.progress.save(epoch, n_epochs, {n: getattr(self, n) for n in trains}, iterators, self.meta)

  def _mean(self, outs: list[dict]) -> dict:
    return {k: jnp.mean(jnp.stack([o[k] for o in outs])) for k in outs[0]}

  def _shard(self, batch):
    return sharding.shard_batch(batch, self.mesh)

  @property
  def eval_batch_size(self) -> int:  # eval batches are padded to a multiple of the device count
    return classify.round_up(self.bs, self.mesh.devices.size)

  # -- AE / E_img phases: each takes (curve name, epochs, batch-order salt)
  def _one_net_epochs(self, curve: str, n_epochs: int, salt: int, net: str, step) -> None:
    """Epochs of the one network `net` ('ae' or 'img'), updated by `step(state, batch)`."""
    it = self._batches(self.data.all_train, pipeline.identity, salt)
    def run(_):
      outs = []
      for _ in range(self.steps_all):
        state, out = step(getattr(self, net), self._shard(next(it)))
        setattr(self, net, state)
        outs.append(self.log.tick(out, curve))
      return self._mean(outs)
    self._epochs(curve, n_epochs, run, (net,), [it], self.steps_all)

  def ae_rec_epochs(self, curve: str, n_epochs: int, salt: int) -> None:
    self._one_net_epochs(curve, n_epochs, salt, "ae",
                         lambda ae, batch: steps.ae_rec_step(ae, batch, rec=self.loss_cfg.rec))

  def img_epochs(self, curve: str, n_epochs: int, salt: int) -> None:
    self._one_net_epochs(curve, n_epochs, salt, "img",
                         lambda img, batch: steps.img_step(img, self.ae, batch, gray=self.gray_img))

  def _forget(self, batch):
    return steps.forget_step(self.ae, self.img, batch, eta_rec=float(self.loss_cfg.eta_rec),
                             eta_pseu=float(self.loss_cfg.eta_pseu), sigma=float(self.loss_cfg.pseudo_sigma),
                             rec=self.loss_cfg.rec, target=self.loss_cfg.pseudo_target, gray=self.gray_img)

  def adversarial_epochs(self, curve: str, n_epochs: int, salt: int) -> None:
    """Phase 3: every epoch runs rec → img → forget (each a full pass, or alternating per batch)."""
    its = [self._batches(self.data.all_train, pipeline.identity, salt + k) for k in range(3)]
    per_batch = self.config.adversarial_alternation == "batch"
    def run(_):
      outs = []
      if per_batch:
        for _ in range(self.steps_all):
          self.ae, o1 = steps.ae_rec_step(self.ae, self._shard(next(its[0])), rec=self.loss_cfg.rec)
          self.img, o2 = steps.img_step(self.img, self.ae, self._shard(next(its[1])), gray=self.gray_img)
          self.ae, o3 = self._forget(self._shard(next(its[2])))
          outs.append(self.log.tick({"rec_l_rec": o1["l_rec"], **o2, **o3}, curve))
        return self._mean(outs)
      o1 = []
      for _ in range(self.steps_all):
        self.ae, o = steps.ae_rec_step(self.ae, self._shard(next(its[0])), rec=self.loss_cfg.rec)
        o1.append(self.log.tick(o, curve))
      o2 = []
      for _ in range(self.steps_all):
        self.img, o = steps.img_step(self.img, self.ae, self._shard(next(its[1])), gray=self.gray_img)
        o2.append(self.log.tick(o, curve))
      o3 = []
      for _ in range(self.steps_all):
        self.ae, o = self._forget(self._shard(next(its[2])))
        o3.append(self.log.tick(o, curve))
      return {"rec_l_rec": self._mean(o1)["l_rec"], **self._mean(o2), **self._mean(o3)}
    self._epochs(curve, n_epochs, run, ("ae", "img"), its, self.steps_all * (1 if per_batch else 3))

  def pretrained_ae(self, curve: str, n_epochs: int, salt: int) -> None:
    """Replaces phase 1 by a pre-trained AE: loaded from a workdir, or pretrained once and cached."""
    source = self.config.ae_pretrained_workdir
    cache = source or prepnet_layout.pretrained_ae_dir(self.shared_dir or self.workdir, rows.ae_side_hash(self.config))
    ckpt = checkpointing.Checkpointer(os.path.join(cache, "checkpoints"), 1)
    if ckpt.latest_step() is None:
      if source:
        raise FileNotFoundError(f"ae_pretrained_workdir={source} has no checkpoint")
      self.ae_rec_epochs(curve, n_epochs, salt)
      ckpt.save(1, {"ae": jax.device_get(self.ae)}, {})
    else:
      tree, _ = ckpt.restore({"ae": jax.device_get(self.ae)})
      self.ae = sharding.replicate(tree["ae"], self.mesh)
      print(f"[prepnet {self.label}] loaded the pre-trained AE from {cache}", flush=True)

  # `Phase.loss` → the loop that trains it (the phases before E_cov).
  PHASE_LOOPS = {"rec": ae_rec_epochs, "img": img_epochs, "adversarial": adversarial_epochs,
                 "pretrained_rec": pretrained_ae}

  def diagnostic_ae_epochs(self, curve: str, n_epochs: int, salt: int, cov_key: str, members: list[int]) -> None:
    """Exp. 6: AE-only training against the fixed E_img; the fixed E_cov is monitored each epoch."""
    it = self._batches(self.data.all_train, pipeline.identity, salt)
    img_it = self._batches(self.data.all_train, pipeline.identity, salt + 1)
    variant = self.config.diagnostic_variant
    name = f"{curve}_{variant}_{cov_key}"
    def run(_):
      outs = []
      for _ in range(self.steps_all):
        batch = self._shard(next(it))
        if variant == "pseu":
          self.ae, out = self._forget(batch)
        else:
          self.ae, out = steps.adv_step(self.ae, self.img, batch, eta_rec=float(self.loss_cfg.eta_rec),
                                        eta_img=float(self.loss_cfg.eta_img), rec=self.loss_cfg.rec,
                                        gray=self.gray_img)
        if self.config.diagnostic_train_img:
          self.img, _ = steps.img_step(self.img, self.ae, self._shard(next(img_it)), gray=self.gray_img)
        outs.append(self.log.tick(out, name))
      scalars = self._mean(outs)
      cov = self.cov_states[cov_key][1]
      for d in range(len(self.data.refs)):
        for split in ("train", "val"):
          ba = self.evaluate_split(self.ae, cov, d, split)["balanced_accuracy"]
          tag = "same" if d in members else "cross"
          scalars[f"cov_ba_{self.data.names[d]}_{split}_{tag}"] = jnp.asarray(ba)
      return scalars
    trains = ("ae", "img") if self.config.diagnostic_train_img else ("ae",)
    self._epochs(name, n_epochs, run, trains, [it, img_it], self.steps_all)

  # -- E_cov
  def new_cov(self, salt: int) -> TrainState:
    dann = float(self.config.baselines.dann_weight) > 0  # DANN: E_cov with a dataset-origin head
    return sharding.replicate(prepnet_networks.make_classifier_state(
        self.config, self.config.e_cov, 1, jax.random.fold_in(self.r_cov, salt), 1, self.config.optim.cov,
        origin_domains=len(self.data.refs) if dann else 0, origin_hidden=int(self.config.baselines.dann_hidden)),
        self.mesh)

  def cov_input_batch(self, batch: dict) -> dict:
    """A batch as E_cov's pipeline takes it: per-site standardised when the row is that baseline."""
    if self.standardise is None:
      return batch
    return {**batch, "image": self.standardise(batch["image"], batch["domain"])}

  def evaluate_split(self, ae, cov, d: int, split: str) -> dict:
    src = self.data.splits[(d, split)]
    logits = self.cov_logits(ae, cov, src)
    return metrics_lib.classification_metrics(src.column("label"), _sigmoid(logits[:, 0]), ["non-COVID", "COVID"])

  def cov_logits(self, ae, cov, src) -> np.ndarray:
    """E_cov logits of every example of `src`, each image passed through `ae` first (if any)."""
    if ae is not None:  # cov(AE(x)) == cov applied to the cached AE(x): reconstruct once per AE state
      src, ae = self.reconstructions(ae, src), None
    out = []
    for batch, valid in pipeline.eval_batches(src, pipeline.identity, self.eval_batch_size):
      images = self._shard({"image": self.cov_input_batch(batch)["image"]})["image"]
      out.append(np.asarray(sharding.to_host(steps.cov_logits(cov, ae, images, gray=self.gray_cov)))[:valid])
    return np.concatenate(out)

  def reconstructions(self, ae, src) -> pipeline.ArraySource:
    """AE outputs of an evaluation source, cached while the same (immutable) AE state is used:
    E_cov is validated on 1 + K−1 splits every epoch and evaluated on all splits at the end."""
    if self._recon_cache[0] is not ae:
      self._recon_cache = (ae, {})  # holding the state and the source keeps their ids unique
    cache = self._recon_cache[1]
    if id(src) not in cache:
      out = []
      for batch, valid in pipeline.eval_batches(src, pipeline.identity, self.eval_batch_size):
        images = self._shard({"image": batch["image"]})["image"]
        out.append(np.asarray(sharding.to_host(steps.reconstruct(ae, images)))[:valid])
      cache[id(src)] = (src, pipeline.ArraySource({"image": np.concatenate(out)}))
    return cache[id(src)][1]

  def train_cov(self, key: str, members: list[int], salt: int, mode: str, n_epochs: int) -> None:
    """E_cov on AE outputs of `members`, selected by their validation BA (modes: `CovPhase`)."""
    config = self.config
    source, pre = self.data.cov_train(members, config)
    cov = self.new_cov(salt)
    ae = None if mode == "none" else self.ae
    if mode in ("joint", "end_to_end"):  # these update the AE: train a copy (the caller restores it)
      ae = sharding.replicate(jax.device_get(self.ae), self.mesh)
    it = self._batches(source, pre, 100 + salt)
    its = [self._batches(self.data.all_train, pipeline.identity, 200 + salt + k) for k in range(3)]
    n_steps = pipeline.steps_per_epoch(source, self.bs)
    cw = config.cov_class_weights
    cw = None if cw == "none" else jnp.asarray(pipeline.class_weights(pipeline.column(source, "label"), 2, cw))
    best = (-1.0, None, None, 0)
    eta = self.loss_cfg
    dann = mode == "none" and float(config.baselines.dann_weight) > 0
    trains_ae = ae is not None and mode != "frozen_ae"
    curve = f"cov_{key}"

    def epoch_steps(epoch: int) -> int:  # four_step: `epoch` rec, img and forget steps, then joint ones
      return min(epoch, n_steps) + 3 * epoch if mode == "four_step" else n_steps

    def states():  # what an epoch checkpoint holds; four_step trains the row's own AE and E_img
      return {"cov": cov, "ae": ae if trains_ae else None, "img": self.img if mode == "four_step" else None,
              "best_ae": best[1], "best_cov": best[2]}
    template = {**states(), "best_ae": ae if trains_ae else None, "best_cov": cov}
    start, restored, extra = self._resume_epochs(curve, template, [it, *its])
    if start:
      cov, ae = restored["cov"], restored["ae"] if trains_ae else ae
      if mode == "four_step":
        self.ae, self.img = ae, restored["img"]
      best = (extra["best_ba"], jax.device_get(restored["best_ae"]), jax.device_get(restored["best_cov"]),
              extra["best_epoch"])
    self.log.start(sum(map(epoch_steps, range(1, n_epochs + 1))), sum(map(epoch_steps, range(1, start + 1))))
    for epoch in range(start + 1, n_epochs + 1):
      outs = []
      steps_this_epoch = min(epoch, n_steps) if mode == "four_step" else n_steps
      if mode == "four_step":  # Exp. 4.2: rec, img, forget on `epoch` batches each, then joint
        for _ in range(epoch):
          self.ae, out = steps.ae_rec_step(self.ae, self._shard(next(its[0])), rec=eta.rec)
          self.log.tick(out, curve)
        for _ in range(epoch):
          self.img, out = steps.img_step(self.img, self.ae, self._shard(next(its[1])), gray=self.gray_img)
          self.log.tick(out, curve)
        for _ in range(epoch):
          self.ae, out = self._forget(self._shard(next(its[2])))
          self.log.tick(out, curve)
        ae = self.ae
      for i in range(steps_this_epoch):
        batch = self._shard(self.cov_input_batch(next(it)))
        if dann:
          reversal = baselines.dann_reversal(config, (epoch - 1) * n_steps + i, n_epochs * n_steps)
          cov, out = steps.dann_cov_step(cov, batch, self._shard(next(its[0])), reversal, class_weights=cw)
        elif mode in ("frozen_ae", "none"):
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
        outs.append(self.log.tick(out, curve))
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
      self._log(curve, epoch, n_epochs, scalars)
      # Ties (e.g. every epoch at BA 0.5 on a tiny validation split) keep the later, more trained
      # epoch rather than the untrained first one.
      if val["balanced_accuracy"] >= best[0]:
        best = (val["balanced_accuracy"], jax.device_get(ae) if trains_ae else None, jax.device_get(cov), epoch)
      self.progress.save(epoch, n_epochs, states(), [it, *its], self.meta,
                         {"best_ba": best[0], "best_epoch": best[3]})
    if mode == "frozen_ae":  # the AE never changed: keep the very state, so its outputs stay cached
      best_ae = ae
    else:
      best_ae = sharding.replicate(best[1], self.mesh) if best[1] is not None else None
    self.cov_states[key] = (best_ae, sharding.replicate(best[2], self.mesh))
    self.meta.setdefault("best_epochs", {})[key] = best[3]

  # -- the schedule
  def run(self) -> dict:
    """Runs the row's schedule and evaluates every E_cov on every split of every dataset."""
    config, schedule = self.config, self.schedule
    num_epochs = config.num_epochs
    train_sets = [[self.data.refs.index(r) for r in group] for group in config.cov_train_sets]
    train_sets += [g for g in evaluation.leave_one_site_out_sets(config, len(self.data.refs)) if g not in train_sets]
    keys = ["+".join(self.data.names[d] for d in group) for group in train_sets]
    cov0 = jax.device_get(self.new_cov(0))
    self.try_resume((jax.device_get(self.ae), cov0) if schedule.uses_ae else (None, cov0))
    for p in schedule.before_cov:
      loop = self.PHASE_LOOPS[p.loss]
      self.phase(p.name, lambda: loop(self, p.curve, int(num_epochs[p.epochs_field]), p.salt), shared=p.shared)
    cov_phase = schedule.cov
    # The phases below put the AE back before their checkpoint, so a resumed row starts the next
    # phase from the AE an uninterrupted one does.
    for t, (key, members) in enumerate(zip(keys, train_sets)):
      def fit_cov():
        start_ae = jax.device_get(self.ae) if cov_phase.changes_ae else None
        self.train_cov(key, members, t, cov_phase.mode, int(num_epochs[cov_phase.epochs_field]))
        if cov_phase.changes_ae:  # every COVID training set starts from the same AE
          self.ae = sharding.replicate(start_ae, self.mesh)
      self.phase(f"cov_{key}", fit_cov)
      for p in schedule.after_cov:  # Exp. 6: the AE alone trains on, monitored by the fixed E_cov
        def diagnose():
          start_ae = jax.device_get(self.ae)
          self.diagnostic_ae_epochs(p.curve, int(num_epochs[p.epochs_field]), p.salt, key, members)
          self.cov_states[key] = (self.ae, self.cov_states[key][1])
          self.ae = sharding.replicate(start_ae, self.mesh)
        self.phase(f"{p.name}_{key}", diagnose)
    return self.evaluate_all(keys, train_sets)

  def evaluate_all(self, keys: list[str], train_sets: list[list[int]]) -> dict:
    return evaluation.evaluate_all(self, keys, train_sets)
