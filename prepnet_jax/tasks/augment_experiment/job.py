"""Does adding generated chest X-rays help a COVID classifier? (task 'augment_experiment')

Seeds 001, 003 and 004 add GAN images to a classifier's training data and report a gain; seed
004 itself warns that the gain may only be a rebalancing effect and that its generator saw the
test-site data. This job therefore trains the same classifier recipe (`cxr_recipes.fit_recipe`)
on the same real training split in several arms that differ only in the extra images:

  none        real images only
  classical   + N Keras-ImageDataGenerator variants of real images (`classical_augment` preset)
  oversample  + N duplicates of real images (the rebalancing control of seed 004)
  synthetic   + N images sampled from a generator checkpoint of this project

N per class comes from `extra.per_class` (-1 = as many as bring that class up to the largest
class), so every arm sees the same class mix. Each arm runs for every seed in `seeds` and is
evaluated on the internal test split and on an external site (accuracy, per-class
precision/recall/F1, AUC; mean ± sample std over seeds), then calibrated (temperature fitted on
validation logits; NLL and 15-bin ECE before/after, per-class reliability diagrams) and explained
(Grad-CAM overlays, PNG and TensorBoard).

Generators: per-class workdirs (`generator.workdirs`, one per class, '' where no image is
needed), a conditional one (`generator.conditional_workdir`), or — when neither is given —
small per-class generators trained here (`generator.train` config) on the training split into
`<workdir>/generators/class_<k>`. Whatever their origin, the patients each generator was trained
on are checked against the validation, internal-test and external patients: an overlap is an
error unless `generator.allow_eval_data` is set, and then the report says so in its header.

Writes `<workdir>/reports/augment_table.md`, `augment_results.json`,
`reliability_<arm>_<set>.png` and `gradcam_<arm>_<set>.png`; each classifier run lives in
`<workdir>/arms/<arm>/seed_<s>` (a rerun resumes and does not retrain finished runs).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import ml_collections
import numpy as np

from prepnet_jax.data import classical_augment, datasets, pipeline, splits, transforms
from prepnet_jax.eval import calibration, figures, gradcam
from prepnet_jax.eval import metrics as metrics_lib
from prepnet_jax.tasks.classifier import train as classifier
from prepnet_jax.tasks.classifier import recipes as cxr_recipes
from prepnet_jax.tasks.generative import common as gen_common
from prepnet_jax.runtime import writers, sharding
from prepnet_jax import tasks
from prepnet_jax.tasks.generative import sample as sample_lib

ARMS = ("none", "classical", "oversample", "synthetic")
KEPT_FIELDS = ("image", "label", "patient")
SAMPLE_SEED_OFFSET = 10_000  # synthetic images of seed s come from latents seeded 10000 + s


# --- the extra images of each arm ----------------------------------------------------------------

def extra_counts(labels: np.ndarray, per_class, num_classes: int) -> np.ndarray:
  """Extra images per class: `per_class[k]` ≥ 0 as given, −1 = up to the largest class's count."""
  per_class = [int(n) for n in per_class]
  if len(per_class) != num_classes or any(n < -1 for n in per_class):
    raise ValueError(f"extra.per_class={tuple(per_class)}: expected {num_classes} integers, each ≥ 0 "
                     f"or -1 (= fill the class up to the largest class)")
  counts = np.bincount(np.asarray(labels, int), minlength=num_classes)
  return np.asarray([counts.max() - counts[k] if n == -1 else n for k, n in enumerate(per_class)], np.int64)


class FieldsSource:
  """Only `KEPT_FIELDS` of each example, so real and extra examples collate into one batch."""

  def __init__(self, source, fields=KEPT_FIELDS):
    self.source, self.fields = source, tuple(fields)

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict:
    example = self.source[i]
    return {key: example[key] for key in self.fields}

  def column(self, key: str) -> np.ndarray:
    return pipeline.column(self.source, key)


def _per_class_draws(labels: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> list[int]:
  """Indices of real images to copy or augment: each class's images in a seeded order, cycled,
  so every image of a class is used equally often (± 1)."""
  picks = []
  for k, n in enumerate(counts):
    members = np.flatnonzero(labels == k)
    if n and not len(members):
      raise ValueError(f"extra.per_class asks for {n} images of class {k}, which has no training images")
    if n:
      order = rng.permutation(members)
      picks.extend(order[np.arange(n) % len(order)].tolist())
  return picks


def _object_array(items: list) -> np.ndarray:
  out = np.empty(len(items), dtype=object)
  out[:] = items
  return out


def oversampled_images(real, counts: np.ndarray, seed: int) -> pipeline.SubsetSource:
  """`counts[k]` duplicates of real class-k images (sampling without replacement, cycled)."""
  labels = pipeline.column(real, "label").astype(int)
  return pipeline.SubsetSource(real, _per_class_draws(labels, counts, np.random.default_rng([seed, 1])))


def classical_images(real, counts: np.ndarray, preset: str, seed: int) -> pipeline.ArraySource:
  """`counts[k]` ImageDataGenerator variants of real class-k images (thesis §2.5, offline)."""
  if preset not in classical_augment.PRESETS:
    raise ValueError(f"classical.preset={preset!r}; expected one of {sorted(classical_augment.PRESETS)}")
  params = classical_augment.PRESETS[preset]
  labels = pipeline.column(real, "label").astype(int)
  picks = _per_class_draws(labels, counts, np.random.default_rng([seed, 2]))
  images, out_labels, patients = [], [], []
  for draw, index in enumerate(picks):
    example = real[index]
    rng = np.random.default_rng([seed, 3, draw])
    images.append(classical_augment.augment_image(rng, np.asarray(example["image"]), params))
    out_labels.append(int(example["label"]))
    patients.append(str(example["patient"]))
  return pipeline.ArraySource({"image": _object_array(images), "label": np.asarray(out_labels, np.int32),
                               "patient": _object_array(patients)})


@dataclasses.dataclass(frozen=True)
class Generator:
  """A generator checkpoint and the class it supplies (`label=None`: conditional, any class)."""
  workdir: str
  label: int | None
  trained_here: bool


def synthetic_images(generators: list[Generator], counts: np.ndarray, step: int, seed: int) -> pipeline.ArraySource:
  """`counts[k]` generated images of class k from the per-class or conditional generator."""
  images, labels = [], []
  for k, n in enumerate(counts):
    if not n:
      continue
    generator = _generator_for(generators, k)
    images.append(sample_lib.sample_images(generator.workdir, step, int(n), seed, label=k))
    labels.append(np.full(int(n), k, np.int32))
  if not images:
    return pipeline.ArraySource({"image": _object_array([]), "label": np.zeros(0, np.int32),
                                 "patient": _object_array([])})
  labels = np.concatenate(labels)
  return pipeline.ArraySource({
      "image": _object_array(list(np.concatenate(images))), "label": labels,
      "patient": _object_array([f"synthetic/class{k}/{i}" for i, k in enumerate(labels)])})


def _generator_for(generators: list[Generator], label: int) -> Generator:
  for generator in generators:
    if generator.label is None or generator.label == label:
      return generator
  raise ValueError(f"no generator for class {label}: set generator.workdirs[{label}] or "
                   f"generator.conditional_workdir")


def arm_training_source(arm: str, real, counts: np.ndarray, config, generators: list[Generator], seed: int):
  """The training examples of `arm` (real ones first, then the extra ones with domain 1)."""
  if arm == "none" or not counts.sum():
    return real
  if arm == "oversample":
    extra = oversampled_images(real, counts, seed)
  elif arm == "classical":
    extra = classical_images(real, counts, config.classical.preset, seed)
  elif arm == "synthetic":
    extra = synthetic_images(generators, counts, int(config.generator.step), SAMPLE_SEED_OFFSET + seed)
  else:
    raise ValueError(f"unknown arm {arm!r}; expected one of {ARMS}")
  return pipeline.ConcatSource([real, extra], domains=[0, 1])


# --- generators ----------------------------------------------------------------------------------

def generator_training_config(config, label: int) -> ml_collections.ConfigDict:
  """`generator.train` pointed at class `label` of the generator's data (default: the train split)."""
  g = config.generator.train.copy_and_resolve_references()
  with g.unlocked():
    g.seed = int(config.seed)
    g.data.source = config.generator.data_source or config.data.train
    g.data.split = config.generator.data_split
    g.data.label_key = config.data.get("label_key", "label")
    g.data.class_filter = [int(label)]
    for key in ("phantom_backend", "phantom_seed", "phantom_overrides", "tfds_dir", "manual_dir"):
      g.data[key] = config.data[key]
  return g


def resolve_generators(config, workdir: str, counts: np.ndarray) -> list[Generator]:
  """The generators the synthetic arm samples from; trains per-class ones here when none is given."""
  needed = [k for k, n in enumerate(counts) if n]
  conditional = config.generator.get("conditional_workdir", "")
  given = list(config.generator.get("workdirs", ()) or ())
  if conditional and given:
    raise ValueError("set either generator.workdirs (per class) or generator.conditional_workdir, not both")
  if conditional:
    return [Generator(conditional, None, False)]
  if given:
    if len(given) != int(config.data.num_classes):
      raise ValueError(f"generator.workdirs has {len(given)} entries; expected one per class "
                       f"({config.data.num_classes}), '' where extra.per_class is 0")
    missing = [k for k in needed if not given[k]]
    if missing:
      raise ValueError(f"generator.workdirs has no generator for class(es) {missing}, which "
                       f"extra.per_class asks images of")
    return [Generator(given[k], k, False) for k in needed]
  train_generator = tasks.get_runner(config.generator.train.task)  # gan, vae or vaegan
  generators = []
  for k in needed:
    gen_dir = os.path.join(workdir, "generators", f"class_{k}")
    print(f"[augment] training the class-{k} generator ({config.generator.train.task}) in {gen_dir}", flush=True)
    train_generator(generator_training_config(config, k), gen_dir)
    generators.append(Generator(gen_dir, k, True))
  return generators


def _patients(source) -> set[str]:
  return {str(p) for p in pipeline.column(source, "patient")}


def generator_data_check(config, generators: list[Generator], eval_sources: dict) -> dict:
  """Which data each generator learned from, and its patient overlap with the evaluation data.

  By default the generator's patients must be disjoint from every evaluation set (asserted with
  `splits.assert_disjoint`); with `generator.allow_eval_data` an overlap is allowed and recorded.
  """
  label_key = config.data.get("label_key", "label")
  records, eval_patients = [], {name: _patients(source) for name, source in eval_sources.items()}
  for generator in generators:
    g = gen_common.read_config(generator.workdir)
    g_label_key = g.data.get("label_key", "label")
    if g_label_key != label_key:
      raise ValueError(f"generator {generator.workdir} was trained with data.label_key={g_label_key!r}, "
                       f"but this experiment's classes are data.label_key={label_key!r}")
    source = datasets.get_source(g.data.source, g.data.split, g.data)
    class_filter = list(g.data.get("class_filter", []) or [])
    if class_filter:
      source = pipeline.filter_source(source, g_label_key, class_filter)
    seen = _patients(source)
    overlap = {name: len(seen & patients) for name, patients in eval_patients.items()}
    records.append({"workdir": os.path.abspath(generator.workdir), "label": generator.label,
                    "trained_here": generator.trained_here, "kind": g.model.get("kind", g.task),
                    "data": f"{g.data.source}:{g.data.split}", "class_filter": class_filter,
                    "num_images": len(source), "num_patients": len(seen), "overlap_patients": overlap,
                    "quality": _generator_quality(generator.workdir)})
    if not config.generator.allow_eval_data:
      for name, patients in eval_patients.items():
        splits.assert_disjoint({f"generator {generator.workdir}": seen, f"evaluation set {name!r}": patients})
  sees_eval = any(v for r in records for v in r["overlap_patients"].values())
  return {"generators": records, "sees_eval_data": bool(sees_eval),
          "allow_eval_data": bool(config.generator.allow_eval_data)}


def _generator_quality(workdir: str) -> dict | None:
  path = os.path.join(workdir, "reports", "summary.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    summary = json.load(f)
  return {key: summary.get(key) for key in ("metric", "num_steps", "initial", "final")}


# --- evaluation ----------------------------------------------------------------------------------

def _identity(example, rng):
  del rng
  return example


def _evaluate(state, eval_sets: dict, config, mesh) -> tuple[dict, dict]:
  """(metrics, logits) of `state` on every preprocessed evaluation set."""
  metrics, logits = {}, {}
  for name, source in eval_sets.items():
    z, labels = classifier.predict_logits(state, source, _identity, int(config.batch_size), mesh)
    logits[name] = (z, labels)
    metrics[name] = metrics_lib.classification_metrics(labels, classifier.logits_to_probs(z),
                                                       list(config.data.class_names))
  return metrics, logits


def _calibrate(logits: dict, n_bins: int) -> dict:
  """Temperature fitted on the 'val' logits; NLL and ECE before/after on every other set."""
  temperature = calibration.fit_temperature(*logits["val"])
  out = {"temperature": temperature, "n_bins": n_bins, "fitted_on": "val"}
  for name, (z, labels) in logits.items():
    if name == "val":
      continue
    out[name] = {
        "nll_before": calibration.nll(z, labels), "nll_after": calibration.nll(z, labels, temperature),
        "ece_before": calibration.ece(calibration.probabilities(z), labels, n_bins),
        "ece_after": calibration.ece(calibration.probabilities(z, temperature), labels, n_bins)}
  return out


def _gradcam_indices(labels: np.ndarray, count: int, num_classes: int) -> np.ndarray:
  """The first examples of each class in turn, `count` in all (a fixed, class-balanced set)."""
  per_class = [list(np.flatnonzero(labels == k)) for k in range(num_classes)]
  picks = []
  while len(picks) < count and any(per_class):
    for members in per_class:
      if members and len(picks) < count:
        picks.append(members.pop(0))
  return np.asarray(sorted(picks), np.int64)


def _gradcam_report(config, state, eval_sets: dict, arm: str, reports: str, writer) -> dict:
  """Grad-CAM overlays of a fixed class-balanced set of each test set: PNG grid + TensorBoard."""
  model = classifier.build_model(config)
  class_names = list(config.data.class_names)
  value_range = config.preprocess.value_range
  paths = {}
  for name, source in eval_sets.items():
    if name == "val":
      continue
    labels = pipeline.column(source, "label").astype(int)
    picks = _gradcam_indices(labels, int(config.gradcam.num_images), len(class_names))
    images = np.stack([np.asarray(source[int(i)]["image"]) for i in picks])
    cams, info = gradcam.grad_cam(model, jax.device_get(state.variables), images)
    probs = metrics_lib.as_class_probs(classifier.logits_to_probs(np.asarray(info["logits"])))
    display = np.stack([transforms.denormalize(image, value_range) for image in images])
    titles = [f"true {class_names[labels[i]]}\npred {class_names[p.argmax()]} {p.max():.2f}"
              for i, p in zip(picks, probs)]
    path = os.path.join(reports, f"gradcam_{arm}_{name}.png")
    figures.save_cam_grid(path, display, np.asarray(cams), titles, value_range=(0, 255))
    overlays = figures.cam_overlays(display, np.asarray(cams), value_range=(0, 255))
    writer.write_images(0, {f"gradcam/{arm}/{name}": writers.image_grid(overlays, ncols=4)[None]})
    paths[name] = path
  return paths


# --- summary and report --------------------------------------------------------------------------

def _scalar_metrics(m: dict, class_names: list[str]) -> dict:
  out = {"accuracy": m["accuracy"], "balanced_accuracy": m["balanced_accuracy"], "auc": m["auc"]}
  for name in class_names:
    c = m["per_class"][name]
    out.update({f"{name}/precision": c["ppv"], f"{name}/recall": c["sensitivity"], f"{name}/f1": c["f1"]})
  return out


def mean_std(values: list[float]) -> dict:
  """Mean and sample standard deviation (ddof=1; 0 for one seed) over seeds, NaN-aware."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  if not finite.size:
    return {"mean": float("nan"), "std": float("nan"), "n": 0}
  std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
  return {"mean": float(np.mean(finite)), "std": std, "n": int(finite.size)}


def _summarise(per_seed: dict, key_fn) -> dict:
  keys = key_fn(next(iter(per_seed.values())))
  return {k: mean_std([key_fn(run)[k] for run in per_seed.values()]) for k in keys}


def _fmt(stat: dict) -> str:
  return "n/a" if not stat["n"] else f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def format_report(results: dict) -> str:
  """The markdown report: provenance header, one table per test set, the calibration table."""
  class_names = results["class_names"]
  lines = ["# Synthetic augmentation experiment", ""]
  check = results["generator_data"]
  if check.get("sees_eval_data"):
    lines += ["**WARNING — data leakage: a generator was trained on patients of the evaluation data "
              "(generator.allow_eval_data=True); the synthetic arm's numbers are optimistic.**", ""]
  lines += [f"- Training data: {results['train']['data']} ({results['train']['size']} images, per class "
            f"{results['train']['per_class']}); extra images per class in every augmented arm: "
            f"{results['extra_per_class']} (extra.per_class={results['extra_per_class_spec']})",
            f"- Classifier: {results['classifier']}; seeds {results['seeds']}: mean ± sample std (ddof=1)"]
  for g in check.get("generators", []):
    quality = g.get("quality") or {}
    fd = (f"; {quality['metric']} {quality['initial']:.1f} → {quality['final']:.1f} after {quality['num_steps']} steps"
          if quality.get("final") is not None else "")
    where = "trained here" if g["trained_here"] else "given"
    cls = "conditional" if g["label"] is None else f"class {class_names[g['label']]}"
    overlap = ", ".join(f"{k} {v}" for k, v in g["overlap_patients"].items())
    lines.append(f"- Generator ({cls}, {g['kind']}, {where}): {g['data']} {g['class_filter']}, "
                 f"{g['num_images']} images of {g['num_patients']} patients{fd}; patients shared with "
                 f"evaluation sets: {overlap}")
  if not check.get("generators"):
    lines.append("- Generator: none (no synthetic arm)")
  elif not check.get("sees_eval_data"):
    lines.append("- The generators never saw evaluation patients (asserted).")
  for set_name, title in (("internal", "Internal test"), ("external", "External site")):
    ref = results["eval_sets"][set_name]
    lines += ["", f"## {title}: {ref['data']} (n = {ref['n']})", ""]
    header = ["arm", "train n", "accuracy", "AUC"] + [f"{c} {m}" for c in class_names for m in ("P", "R", "F1")]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm, record in results["arms"].items():
      s = record["summary"][set_name]
      cells = [arm, str(record["train_size"]), _fmt(s["accuracy"]), _fmt(s["auc"])]
      cells += [_fmt(s[f"{c}/{m}"]) for c in class_names for m in ("precision", "recall", "f1")]
      lines.append("| " + " | ".join(cells) + " |")
  lines += ["", f"## Calibration (temperature fitted on {results['eval_sets']['val']['data']} logits; "
            f"ECE with {results['calibration_bins']} bins)", "",
            "| arm | T | internal NLL before | after | internal ECE before | after | external NLL before | "
            "after | external ECE before | after |", "|" + "---|" * 10]
  for arm, record in results["arms"].items():
    c = record["summary"]["calibration"]
    cells = [arm, _fmt(c["temperature"])] + [_fmt(c[f"{s}/{m}_{w}"]) for s in ("internal", "external")
                                             for m in ("nll", "ece") for w in ("before", "after")]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", f"Figures (seed {results['seeds'][0]}): reliability_<arm>_<set>.png, gradcam_<arm>_<set>.png. "
            f"Wall time {results['wall_time_s']:.0f} s (process CPU time {results['process_cpu_time_s']:.0f} s)."]
  return "\n".join(lines) + "\n"


def _reliability_diagrams(logits: dict, temperature: float, class_names: list[str], n_bins: int, arm: str,
                          reports: str) -> None:
  """Per-class reliability of the internal and external test sets, before and after scaling."""
  for name in ("internal", "external"):
    z, y = logits[name]
    figures.reliability_diagram(os.path.join(reports, f"reliability_{arm}_{name}.png"), calibration.probabilities(z),
                                y, class_names, n_bins=n_bins,
                                calibrated_probs=calibration.probabilities(z, temperature))


def _arm_record(per_seed: dict, class_names: list[str]) -> dict:
  """Every seed's results plus their mean ± std per metric (val, internal, external, calibration)."""
  summary = {name: _summarise(per_seed, lambda r, n=name: _scalar_metrics(r["metrics"][n], class_names))
             for name in ("val", "internal", "external")}
  summary["calibration"] = _summarise(per_seed, lambda r: {
      "temperature": r["calibration"]["temperature"],
      **{f"{s}/{k}": r["calibration"][s][k] for s in ("internal", "external") for k in r["calibration"][s]}})
  train_labels = next(iter(per_seed.values()))["train_labels"]
  return {"train_size": int(sum(train_labels)), "train_per_class": train_labels, "summary": summary,
          "seeds": {str(s): r for s, r in per_seed.items()}}


# --- the job -------------------------------------------------------------------------------------

def _with_seed(config, seed: int):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.seed = int(seed)
  return config


def _materialized(config, ref: str, split: str):
  source = classifier.load_split(config, ref, split)
  if not len(source):
    raise ValueError(f"{ref}:{split} has no examples; check config.data")
  eval_pre = transforms.make_preprocess(config.preprocess, training=False)
  return pipeline.materialize(FieldsSource(source), eval_pre)


def train_and_evaluate(config, workdir: str) -> dict:
  """Task 'augment_experiment': generators (if needed), every arm × seed, reports (module docstring)."""
  t0, cpu0 = time.time(), time.process_time()
  arms = list(config.arms)
  unknown = sorted(set(arms) - set(ARMS))
  if unknown or not arms:
    raise ValueError(f"config.arms={arms}: expected a non-empty subset of {ARMS}")
  seeds = [int(s) for s in config.seeds]
  if not seeds:
    raise ValueError("config.seeds is empty; give at least one seed (three or more for mean ± std)")
  mesh = sharding.make_mesh()
  writer = writers.create_writer(workdir)
  reports = os.path.join(workdir, "reports")
  os.makedirs(reports, exist_ok=True)
  class_names = list(config.data.class_names)
  num_classes = int(config.data.num_classes)

  train_ref = config.data.train
  real = FieldsSource(classifier.load_split(config, train_ref, "train"))
  train_labels = pipeline.column(real, "label").astype(int)
  counts = extra_counts(train_labels, config.extra.per_class, num_classes)
  eval_refs = {"val": (train_ref, "val"), "internal": (train_ref, config.data.internal_split),
               "external": (config.data.external, config.data.external_split)}
  eval_raw = {name: classifier.load_split(config, ref, split) for name, (ref, split) in eval_refs.items()}
  splits.assert_disjoint({"train": _patients(real), **{name: _patients(s) for name, s in eval_raw.items()
                                                       if eval_refs[name][0] == train_ref}})
  generators = resolve_generators(config, workdir, counts) if "synthetic" in arms and counts.sum() else []
  generator_data = generator_data_check(config, generators, eval_raw)
  eval_sets = {name: _materialized(config, ref, split) for name, (ref, split) in eval_refs.items()}
  print(f"[augment] {train_ref}:train {len(real)} images {np.bincount(train_labels, minlength=num_classes).tolist()}, "
        f"extra per class {counts.tolist()}, arms {arms}, seeds {seeds}", flush=True)

  n_bins = int(config.calibration.num_bins)
  arm_records = {}
  for arm in arms:
    per_seed = {}
    for seed in seeds:
      run_config = _with_seed(config, seed)
      source = arm_training_source(arm, real, counts, run_config, generators, seed)
      run_dir = os.path.join(workdir, "arms", arm, f"seed_{seed}")
      state, meta = cxr_recipes.fit_recipe(run_config, run_dir, source, FieldsSource(eval_raw["val"]),
                                           mesh=mesh, name=f"{arm}/seed{seed}")
      metrics, logits = _evaluate(state, eval_sets, run_config, mesh)
      np.savez(os.path.join(run_dir, "logits.npz"), **{f"{name}_{part}": array for name, (z, y) in logits.items()
                                                       for part, array in (("logits", z), ("labels", y))})
      per_seed[seed] = {"metrics": metrics, "calibration": _calibrate(logits, n_bins),
                        "best_step": meta.get("best_step"),
                        "train_labels": np.bincount(pipeline.column(source, "label").astype(int),
                                                    minlength=num_classes).tolist()}
      if seed == seeds[0]:
        _reliability_diagrams(logits, per_seed[seed]["calibration"]["temperature"], class_names, n_bins, arm,
                              reports)
        _gradcam_report(run_config, state, eval_sets, arm, reports, writer)
    arm_records[arm] = _arm_record(per_seed, class_names)

  results = {
      "class_names": class_names, "seeds": seeds, "arms": arm_records,
      "train": {"data": f"{train_ref}:train", "size": len(real),
                "per_class": np.bincount(train_labels, minlength=num_classes).tolist()},
      "extra_per_class": counts.tolist(), "extra_per_class_spec": list(config.extra.per_class),
      "classifier": f"{config.model.name} ×{config.model.width_multiplier} at {config.preprocess.image_size} px, "
                    f"{config.num_epochs} epochs (head-only {config.get('head_only_epochs', 0)}), "
                    f"{config.optim.name} lr {config.optim.learning_rate} ({config.optim.schedule})",
      "eval_sets": {name: {"data": f"{ref}:{split}", "n": len(eval_sets[name])}
                    for name, (ref, split) in eval_refs.items()},
      "generator_data": generator_data, "calibration_bins": n_bins,
      "classical_preset": config.classical.preset, "wall_time_s": time.time() - t0,
      "process_cpu_time_s": time.process_time() - cpu0}
  table = format_report(results)
  with open(os.path.join(reports, "augment_results.json"), "w") as f:
    json.dump(results, f, indent=2, default=float)
  with open(os.path.join(reports, "augment_table.md"), "w") as f:
    f.write(table)
  writer.flush()
  print("\n" + table, flush=True)
  return results
