"""PrepNet's jitted steps, one per schedule phase, over explicit per-network states.

Three `TrainState`s: `ae` (the U-Net auto-encoder, E_auto/D_auto), `img` (the imaging-technology
classifier E_img, K = number of datasets) and `cov` (the COVID classifier E_cov). Which loss
updates which network follows the thesis (reference §1.4):

  ae_rec_step     L_rec                              → AE
  img_step        L_img on stop_gradient(X̂)          → E_img
  forget_step     η_rec L_rec + η_pseu L_pseu        → AE   (E_img fixed critic)
  cov_step        L_cov on X̂, AE frozen              → E_cov
  joint_cov_step  η_rec L_rec + η_cov L_cov          → AE + E_cov   (Exp. 4, "single gradient")
  e2e_step        L_rec + L_pseu (all data) + L_cov (one dataset) → AE + E_cov   (Exp. 5)
  adv_step        η_rec L_rec − η_img L_img          → AE   (Exp. 6 part 2)
  dann_cov_step   L_cov + L_origin through gradient reversal → E_cov + its origin head (DANN baseline)
  site_batch_statistics   BatchNorm statistics of E_cov on one site's images (AdaBN baseline)

Frozen networks run in inference mode (BatchNorm running statistics). Every step is a pure
function of its states and a global batch; jit shards it over the mesh's data axis.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from prepnet_jax.eval.prepnet_autoencoder import grayscale3  # also E_cov's input at inference
from prepnet_jax.losses import classification as losses
from prepnet_jax.runtime.state import TrainState


def _apply(state: TrainState, x, train: bool, rng=None, params=None):
  """Returns (output, new_batch_stats); batch stats only change in training mode.

  `params` replaces the state's own parameters (the ones being differentiated); None = its own.
  """
  variables = state.variables if params is None else state.variables_with(params)
  if not train:
    return state.apply_fn(variables, x, train=False), state.batch_stats
  out, updates = state.apply_fn(variables, x, train=True, rngs={"dropout": rng}, mutable=["batch_stats"])
  return out, updates.get("batch_stats", state.batch_stats)


def _rng(state: TrainState, salt: int = 0):
  return jax.random.fold_in(jax.random.fold_in(state.rng, state.step), salt)


def _cov_input(x_hat, gray: bool):
  return grayscale3(x_hat) if gray else x_hat


@functools.partial(jax.jit, static_argnames=("rec",), donate_argnums=0)
def ae_rec_step(ae: TrainState, batch, rec: str = "l1"):
  def loss_fn(params):
    x_hat, stats = _apply(ae, batch["image"], True, _rng(ae), params)
    return losses.reconstruction_loss(batch["image"], x_hat, rec), stats
  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(ae.params)
  return ae.apply_gradients(grads, stats), {"l_rec": loss}


@functools.partial(jax.jit, static_argnames=("gray",), donate_argnums=0)
def img_step(img: TrainState, ae: TrainState, batch, gray: bool = False):
  x_hat, _ = _apply(ae, batch["image"], False)
  x_hat = jax.lax.stop_gradient(_cov_input(x_hat, gray))
  def loss_fn(params):
    logits, stats = _apply(img, x_hat, True, _rng(img), params)
    return losses.imaging_loss(logits, batch["domain"]), (stats, logits)
  (loss, (stats, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(img.params)
  acc = (logits.argmax(-1) == batch["domain"].astype(jnp.int32)).mean()
  return img.apply_gradients(grads, stats), {"l_img": loss, "img_acc": acc}


def _forget_terms(ae_params, ae: TrainState, img: TrainState, batch, rec, sigma, target, gray):
  x_hat, stats = _apply(ae, batch["image"], True, _rng(ae), ae_params)
  l_rec = losses.reconstruction_loss(batch["image"], x_hat, rec)
  img_logits, _ = _apply(img, _cov_input(x_hat, gray), False)
  l_pseu = losses.pseudo_label_loss(img_logits, _rng(ae, 1), sigma, target)
  return l_rec, l_pseu, img_logits, stats


@functools.partial(jax.jit, static_argnames=("rec", "target", "gray"), donate_argnums=0)
def forget_step(ae: TrainState, img: TrainState, batch, eta_rec: float = 1.0, eta_pseu: float = 1.0,
                sigma: float = 0.005, rec: str = "l1", target: str = "logits", gray: bool = False):
  def loss_fn(params):
    l_rec, l_pseu, _, stats = _forget_terms(params, ae, img, batch, rec, sigma, target, gray)
    return eta_rec * l_rec + eta_pseu * l_pseu, (stats, l_rec, l_pseu)
  (loss, (stats, l_rec, l_pseu)), grads = jax.value_and_grad(loss_fn, has_aux=True)(ae.params)
  return ae.apply_gradients(grads, stats), {"l_auto": loss, "l_rec": l_rec, "l_pseu": l_pseu}


@functools.partial(jax.jit, static_argnames=("rec", "gray"), donate_argnums=0)
def adv_step(ae: TrainState, img: TrainState, batch, eta_rec: float = 1.0, eta_img: float = 1.0,
             rec: str = "l1", gray: bool = False):
  def loss_fn(params):
    x_hat, stats = _apply(ae, batch["image"], True, _rng(ae), params)
    l_rec = losses.reconstruction_loss(batch["image"], x_hat, rec)
    img_logits, _ = _apply(img, _cov_input(x_hat, gray), False)
    l_img = losses.imaging_loss(img_logits, batch["domain"])
    return eta_rec * l_rec - eta_img * l_img, (stats, l_rec, l_img)
  (loss, (stats, l_rec, l_img)), grads = jax.value_and_grad(loss_fn, has_aux=True)(ae.params)
  return ae.apply_gradients(grads, stats), {"l_adv": loss, "l_rec": l_rec, "l_img": l_img}


@functools.partial(jax.jit, static_argnames=("gray",), donate_argnums=0)
def cov_step(cov: TrainState, ae: TrainState | None, batch, gray: bool = False, class_weights=None):
  x = batch["image"] if ae is None else _apply(ae, batch["image"], False)[0]
  x = jax.lax.stop_gradient(_cov_input(x, gray) if ae is not None or gray else x)
  def loss_fn(params):
    logits, stats = _apply(cov, x, True, _rng(cov), params)
    return losses.covid_loss(logits, batch["label"], class_weights), stats
  (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(cov.params)
  return cov.apply_gradients(grads, stats), {"l_cov": loss}


@functools.partial(jax.jit, static_argnames=("rec", "gray"), donate_argnums=(0, 1))
def joint_cov_step(ae: TrainState, cov: TrainState, batch, eta_rec: float = 1.0, eta_cov: float = 1.0,
                   rec: str = "l1", gray: bool = False, class_weights=None):
  def loss_fn(params):
    ae_p, cov_p = params
    x_hat, ae_stats = _apply(ae, batch["image"], True, _rng(ae), ae_p)
    l_rec = losses.reconstruction_loss(batch["image"], x_hat, rec)
    logits, cov_stats = _apply(cov, _cov_input(x_hat, gray), True, _rng(cov), cov_p)
    l_cov = losses.covid_loss(logits, batch["label"], class_weights)
    return eta_rec * l_rec + eta_cov * l_cov, (ae_stats, cov_stats, l_rec, l_cov)
  (loss, (ae_stats, cov_stats, l_rec, l_cov)), (g_ae, g_cov) = jax.value_and_grad(loss_fn, has_aux=True)(
      (ae.params, cov.params))
  return (ae.apply_gradients(g_ae, ae_stats), cov.apply_gradients(g_cov, cov_stats),
          {"l_total": loss, "l_rec": l_rec, "l_cov": l_cov})


@functools.partial(jax.jit, static_argnames=("rec", "target", "gray"), donate_argnums=(0, 1))
def e2e_step(ae: TrainState, cov: TrainState, img: TrainState, batch_all, batch_cov,
             eta_rec: float = 1.0, eta_pseu: float = 1.0, eta_cov: float = 1.0, sigma: float = 0.005,
             rec: str = "l1", target: str = "logits", gray: bool = False, class_weights=None):
  """Exp. 5: one loss, one backward pass; L_rec and L_pseu on every dataset, L_cov on one."""
  def loss_fn(params):
    ae_p, cov_p = params
    l_rec, l_pseu, _, ae_stats = _forget_terms(ae_p, ae, img, batch_all, rec, sigma, target, gray)
    x_hat_cov, _ = _apply(ae, batch_cov["image"], False, params=ae_p)
    logits, cov_stats = _apply(cov, _cov_input(x_hat_cov, gray), True, _rng(cov), cov_p)
    l_cov = losses.covid_loss(logits, batch_cov["label"], class_weights)
    total = eta_rec * l_rec + eta_pseu * l_pseu + eta_cov * l_cov
    return total, (ae_stats, cov_stats, l_rec, l_pseu, l_cov)
  (loss, (ae_stats, cov_stats, l_rec, l_pseu, l_cov)), (g_ae, g_cov) = jax.value_and_grad(
      loss_fn, has_aux=True)((ae.params, cov.params))
  return (ae.apply_gradients(g_ae, ae_stats), cov.apply_gradients(g_cov, cov_stats),
          {"l_total": loss, "l_rec": l_rec, "l_pseu": l_pseu, "l_cov": l_cov})


@functools.partial(jax.jit, donate_argnums=0)
def dann_cov_step(cov: TrainState, batch, batch_all, reversal, class_weights=None):
  """DANN (Ganin et al. 2016) on E_cov, no AE: one forward pass over the labelled batch (its
  COVID training set) and a batch of every site's training images (origin labels only); L_cov on
  the first, the origin loss on both, the origin head's gradient reversed (× −`reversal`) into
  E_cov's features. BatchNorm sees both halves, as DANN implementations that pass source and
  target data through the network in training mode do."""
  x = jnp.concatenate([batch["image"], batch_all["image"]])
  domains = jnp.concatenate([batch["domain"], batch_all["domain"]])
  n = batch["image"].shape[0]
  def loss_fn(params):
    (logits, origin), updates = cov.apply_fn(cov.variables_with(params), x, True, reversal, method="both",
                                             rngs={"dropout": _rng(cov)}, mutable=["batch_stats"])
    l_cov = losses.covid_loss(logits[:n], batch["label"], class_weights)
    l_origin = losses.imaging_loss(origin, domains)
    return l_cov + l_origin, (updates["batch_stats"], l_cov, l_origin, origin)
  (_, (stats, l_cov, l_origin, origin)), grads = jax.value_and_grad(loss_fn, has_aux=True)(cov.params)
  origin_acc = (origin.argmax(-1) == domains.astype(jnp.int32)).mean()
  return cov.apply_gradients(grads, stats), {"l_cov": l_cov, "l_origin": l_origin, "origin_acc": origin_acc}


@jax.jit
def site_batch_statistics(cov: TrainState, images):
  """Every BatchNorm layer's batch mean and variance for `images` (AdaBN's per-site statistics).

  A training-mode pass updates each running statistic r to m·r + (1 − m)·s (s: the batch
  statistic, m: the layer's momentum); run from r = 0 and from r = 1 it gives u0 = (1 − m)·s and
  u1 = m + (1 − m)·s, so s = u0 / (1 − (u1 − u0)) without knowing m. Deeper layers see inputs
  normalised with this batch's statistics, as in AdaBN.
  """
  def updated(fill):
    start = jax.tree.map(lambda v: jnp.full_like(v, fill), cov.batch_stats)
    _, updates = cov.apply_fn({"params": cov.params, "batch_stats": start}, images, train=True,
                              rngs={"dropout": jax.random.key(0)}, mutable=["batch_stats"])
    return updates["batch_stats"]
  u0, u1 = updated(0.0), updated(1.0)
  return jax.tree.map(lambda a, b: a / (1.0 - (b - a)), u0, u1)


@functools.partial(jax.jit, static_argnames=("gray",))
def cov_logits(cov: TrainState, ae: TrainState | None, images, gray: bool = False):
  """Evaluation path: every image passes the trained AE (if any) before E_cov."""
  x = images if ae is None else _apply(ae, images, False)[0]
  if ae is not None or gray:
    x = _cov_input(x, gray)
  return _apply(cov, x, False)[0]


@jax.jit
def reconstruct(ae: TrainState, images):
  return _apply(ae, images, False)[0]


@functools.partial(jax.jit, static_argnames=("gray",))
def img_logits(img: TrainState, ae: TrainState | None, images, gray: bool = False):
  x = images if ae is None else _apply(ae, images, False)[0]
  return _apply(img, _cov_input(x, gray) if gray else x, False)[0]
