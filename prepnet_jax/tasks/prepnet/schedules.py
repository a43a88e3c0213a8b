"""The eight training schedules of the PrepNet thesis as data: phases, losses, networks, epochs.

A schedule is the phases that run once per row and seed before the COVID classifier (each
checkpointed), then E_cov training once per COVID training set, then optional phases after
each E_cov (Exp. 6). `RowRun` executes the table; a new schedule is a new entry here.

  none          "Original": E_cov on the preprocessed images, no AE
  ae_only       "Auto-encoder": AE warm-up with L_rec, then E_cov
  original      the reproduced PrepNet: AE warm-up → E_img warm-up → adversarial epochs of
                (rec → img → forget) → E_cov with the AE frozen
  pretrained_ae the same with a pre-trained AE replacing the warm-up (pretrained for
                num_epochs.ae_pretrain and cached, or loaded from `ae_pretrained_workdir`)
  joint         Exp. 4.1: after the adversarial phase, AE + E_cov trained with L_rec + L_cov
  four_step     Exp. 4.2: pre-trained AE; each epoch e runs rec / img / forget / joint on e batches
  end_to_end    Exp. 5: pre-trained AE; E_img warm-up; one loss L_rec + L_pseu + L_cov
  diagnostic    Exp. 6: pre-trained AE; E_img; E_cov (AE frozen); then the AE alone with
                L_rec + L_pseu (diagnostic_variant='pseu') or L_rec − L_img ('adv'), monitoring
                the fixed E_cov every epoch
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Phase:
  """One checkpointed training phase of the AE and/or E_img.

  `loss` names the training loop (`RowRun.PHASE_LOOPS`): 'rec' (L_rec → AE), 'img'
  (L_img → E_img), 'adversarial' (rec → img → forget each epoch), 'pretrained_rec' (L_rec,
  trained once per AE-side config and cached, or loaded); after E_cov, 'diagnostic' (Exp. 6:
  L_rec + L_pseu or L_rec − L_img → AE, and E_img too when `diagnostic_train_img`).
  `shared` phases give bit-identical states in every row with the same AE-side config, so their
  results are stored once and reused. `curve` is the name the epochs are logged under, `salt`
  seeds the phase's batch order; both keep the thesis runs' numbers reproducible.
  """
  name: str
  loss: str
  trains: tuple[str, ...]
  epochs_field: str        # the field of config.num_epochs
  curve: str
  salt: int
  shared: bool = True


@dataclasses.dataclass(frozen=True)
class CovPhase:
  """E_cov training, once per COVID training set, selected by same-dataset validation BA.

  `mode`: 'none' (no AE: the Original row), 'frozen_ae' (L_cov on AE outputs), 'joint'
  (η_rec L_rec + η_cov L_cov over AE + E_cov), 'four_step' (Exp. 4.2 growing batch curriculum),
  'end_to_end' (L_rec + L_pseu + L_cov).
  """
  mode: str
  trains: tuple[str, ...]
  epochs_field: str

  @property
  def changes_ae(self) -> bool:
    """The AE changes with E_cov, so every COVID training set must start from the same AE."""
    return "ae" in self.trains


@dataclasses.dataclass(frozen=True)
class Schedule:
  before_cov: tuple[Phase, ...]
  cov: CovPhase
  after_cov: tuple[Phase, ...] = ()   # per COVID training set, the AE restored afterwards

  @property
  def uses_ae(self) -> bool:
    return bool(self.before_cov)


AE_WARMUP = Phase("ae_warmup", "rec", ("ae",), "ae_warmup", curve="ae_warmup", salt=1)
PRETRAINED_AE = Phase("ae_pretrained", "pretrained_rec", ("ae",), "ae_pretrain", curve="ae_pretrain",
                      salt=5, shared=False)
IMG_WARMUP = Phase("img_warmup", "img", ("img",), "img_warmup", curve="img_warmup", salt=2)
ADVERSARIAL = Phase("adversarial", "adversarial", ("ae", "img"), "adversarial", curve="adversarial", salt=30)
IMG_AFTER_PRETRAINED_AE = Phase("img_warmup_pretrain", "img", ("img",), "img_pretrain", curve="img_warmup",
                                salt=2)
DIAGNOSTIC_AE = Phase("diagnostic", "diagnostic", ("ae",), "diag_ae", curve="diagnostic", salt=60)

COV_FROZEN_AE = CovPhase("frozen_ae", ("cov",), "cov")

SCHEDULES: dict[str, Schedule] = {
    "none": Schedule((), CovPhase("none", ("cov",), "cov")),
    "ae_only": Schedule((AE_WARMUP,), COV_FROZEN_AE),
    "original": Schedule((AE_WARMUP, IMG_WARMUP, ADVERSARIAL), COV_FROZEN_AE),
    "pretrained_ae": Schedule((PRETRAINED_AE, IMG_WARMUP, ADVERSARIAL), COV_FROZEN_AE),
    "joint": Schedule((AE_WARMUP, IMG_WARMUP, ADVERSARIAL), CovPhase("joint", ("ae", "cov"), "joint")),
    "four_step": Schedule((PRETRAINED_AE, IMG_AFTER_PRETRAINED_AE),
                          CovPhase("four_step", ("ae", "img", "cov"), "four_step")),
    "end_to_end": Schedule((PRETRAINED_AE, IMG_AFTER_PRETRAINED_AE),
                           CovPhase("end_to_end", ("ae", "cov"), "end_to_end")),
    "diagnostic": Schedule((PRETRAINED_AE, IMG_AFTER_PRETRAINED_AE), CovPhase("frozen_ae", ("cov",), "diag_cov"),
                           after_cov=(DIAGNOSTIC_AE,)),
}


def get_schedule(name: str) -> Schedule:
  if name not in SCHEDULES:
    raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
  return SCHEDULES[name]
