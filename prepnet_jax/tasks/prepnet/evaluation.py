"""A row/seed's evaluation: every E_cov (with its AE) on every split of every dataset.

Per dataset and split: slice-level metrics (balanced accuracy, sensitivity, specificity, AUC, …)
and patient-level ones beside them (`patient`: one score per patient, the mean or max of its
slices' probabilities — `config.patient_aggregation` — thresholded at 0.5 like the slices), so a
patient with many slices counts once. With `baselines.test_time_bn` (AdaBN), E_cov's BatchNorm
statistics are first re-estimated on the evaluated site's training images. Each E_cov's result
says which protocol trained it: 'train_sets' (`config.cov_train_sets`, the thesis's one-site
protocol) or 'leave_one_site_out' (every site but one; the held-out site is the cross-site test).
Then the E_cov's temperature, fitted on the validation splits of its own training set (its model
selection data) and reported on their test splits, goes to `prepnet_layout.cov_model_dir` for
predict/serve.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np

from prepnet_jax.eval import calibration, metrics as metrics_lib, paired_stats, prepnet_layout
from prepnet_jax.eval.prepnet_autoencoder import grayscale3
from prepnet_jax.tasks.prepnet import baselines

SPLITS = ("train", "val", "test")
PROTOCOLS = ("train_sets", "leave_one_site_out")
PATIENT_METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auc")


def leave_one_site_out_sets(config, num_sites: int) -> list[list[int]]:
  """Every group of all sites but one when `config.leave_one_site_out` (else none)."""
  if not config.leave_one_site_out:
    return []
  if num_sites < 3:
    raise ValueError(f"leave_one_site_out needs ≥ 3 sites (train on the others, test on one), got {num_sites}")
  return [list(g) for g in itertools.combinations(range(num_sites), num_sites - 1)]


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def patient_metrics(probs, labels, patients, how: str) -> dict:
  """Patient-level metrics of slice probabilities (`paired_stats.patient_level`)."""
  p_probs, p_labels, ids = paired_stats.patient_level(probs, labels, patients, how)
  m = metrics_lib.classification_metrics(p_labels, p_probs)
  return {**{k: m.get(k, float("nan")) for k in PATIENT_METRICS}, "n_patients": int(len(ids)), "aggregation": how}


def cov_inputs(run, ae, src) -> np.ndarray:
  """The images of `src` as E_cov sees them: standardised or through the AE, grayscaled if the row does."""
  if ae is not None:
    x = run.reconstructions(ae, src).column("image")
  else:
    x = run.cov_input_batch({"image": src.column("image"), "domain": src.column("domain")})["image"]
  return np.asarray(grayscale3(jnp.asarray(x))) if run.gray_cov else x


def evaluate_all(run, keys: list[str], train_sets: list[list[int]]) -> dict:
  config, data = run.config, run.data
  main_sets = [[data.refs.index(r) for r in group] for group in config.cov_train_sets]
  adabn = bool(config.baselines.test_time_bn)
  results = {}
  for key, members in zip(keys, train_sets):
    ae, cov = run.cov_states[key]
    protocol = PROTOCOLS[0] if members in main_sets else PROTOCOLS[1]
    results[key] = {"members": [data.names[d] for d in members], "protocol": protocol, "eval": {},
                    "test_time_bn": adabn}
    own = {"val": [], "test": []}
    for d, name in enumerate(data.names):
      results[key]["eval"][name] = {}
      site_cov = baselines.site_adapted(cov, cov_inputs(run, ae, data.splits[(d, "train")]), jnp.asarray) \
          if adabn else cov
      for split in SPLITS:
        src = data.splits[(d, split)]
        logits, labels = run.cov_logits(ae, site_cov, src), src.column("label")
        probs = _sigmoid(logits[:, 0])
        entry = metrics_lib.classification_metrics(labels, probs, list(config.data.class_names))
        entry["patient"] = patient_metrics(probs, labels, src.column("patient"), config.patient_aggregation)
        results[key]["eval"][name][split] = entry
        if d in members and split in own:
          own[split].append((run.cov_logits(ae, cov, src) if adabn else logits, labels))
    joined = {s: tuple(np.concatenate(part) for part in zip(*pairs)) for s, pairs in own.items()}
    model_dir = prepnet_layout.cov_model_dir(run.workdir, key)
    # Reliability diagrams for the first seed's one-site E_covs; every E_cov gets its temperature.
    diagrams = protocol == PROTOCOLS[0] and int(config.seed) == int(config.seeds[0])
    report = calibration.write_model_calibration(model_dir, joined["val"], config.data.class_names,
                                                 test=joined["test"], diagrams=diagrams)
    results[key]["calibration"] = {"temperature": report["temperature"], "dir": model_dir}
  return results
