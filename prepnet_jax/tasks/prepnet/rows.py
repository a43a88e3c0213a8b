"""The AE-side hash of a row's config: which rows can share their AE/E_img phases."""

from __future__ import annotations

import hashlib

from prepnet_jax.runtime import compile_cache

# Config fields that only affect E_cov (or bookkeeping): everything else can change the AE or E_img.
COV_ONLY_FIELDS = ("e_cov", "grayscale_cov", "cov_train_sets", "cov_class_weights", "diagnostics",
                   "rows", "baseline_row", "seeds", "schedule", "diagnostic_variant", "diagnostic_train_img",
                   "checkpoint_every_epochs", "patient_aggregation", "leave_one_site_out", "baselines",
                   "comparisons", "evidence_page")
COV_ONLY_EPOCHS = ("cov", "joint", "four_step", "end_to_end", "diag_cov", "diag_ae")
COV_ONLY_OPTIM = ("cov",)


def ae_side_hash(config) -> str:
  """Hash of every config field that can influence the AE or E_img (seed included); two rows with
  the same hash train bit-identical AE/E_img states in their shared phases."""
  c = config.to_dict()
  for key in COV_ONLY_FIELDS:
    c.pop(key)
  c["num_epochs"] = {k: v for k, v in c["num_epochs"].items() if k not in COV_ONLY_EPOCHS}
  c["optim"] = {k: v for k, v in c["optim"].items() if k not in COV_ONLY_OPTIM}
  c["preprocess"] = {k: v for k, v in c["preprocess"].items() if k != "augment"}  # E_cov training only
  return hashlib.sha1(compile_cache.setting_key(c).encode()).hexdigest()[:12]
