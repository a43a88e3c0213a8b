"""The one way to load a trained model from a workdir the project writes.

Workdirs it reads (`load_trained_model`; `load_classifier` is its classifier part):

  classifier, cxr_recipe   `config.json`, `best/` (the best-on-validation state), `checkpoints/`,
                           `reports/calibration.json` (the fitted temperature)
  two-phase cxr_recipe     `head_only/` and `finetune/`, each such a classifier workdir; the model
                           is finetune's best (older runs without `finetune/config.json`: the
                           run's config with `model.freeze_backbone` off, as the recipe trains it)
  augment_experiment       `arms/<arm>/seed_<s>/`: a classifier (or two-phase) workdir per arm and
                           seed, chosen with `Selection.arm`/`seed`, or named directly
  prepnet                  `rows/<row>/seed_<s>/`: per COVID training set the (AE, E_cov) pair,
                           served as one CT pipeline (`prepnet_autoencoder.load_prepnet_pipeline`),
                           chosen with `Selection.prepnet_row`/`seed`/`train_site`

Models and restore templates are rebuilt from each run's own config
(`models.classifier_factory`), with `pretrained_path` cleared because the weights come from the
checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, NamedTuple

import jax
import ml_collections

from prepnet_jax.eval import calibration, prepnet_autoencoder, prepnet_layout
from prepnet_jax.models import classifier_factory
from prepnet_jax.runtime import checkpointing, rundir

PROJECT_JOBS = "classifier/cxr_recipe/augment_experiment/prepnet"
CLASSIFIER_TASKS = ("classifier", "cxr_recipe", "augment_experiment")
FINETUNE, ARMS = "finetune", "arms"


class TrainedClassifier(NamedTuple):
  config: ml_collections.ConfigDict  # the run's training config
  model: Any                         # the flax module
  state: Any                         # the restored TrainState
  checkpoint: str                    # 'best' or 'step <n>'
  model_dir: str = ""                # the directory holding it (a two-phase run's finetune/)

  @property
  def variables(self) -> dict:
    return self.state.variables


def _has_checkpoint(directory: str) -> bool:
  return os.path.isdir(directory) and checkpointing.Checkpointer(directory, None).latest_step() is not None


def _run_config(workdir: str) -> ml_collections.ConfigDict:
  """`config.json` of a classifier workdir; an augmentation arm written before arms had their own
  takes the experiment's config with the arm's seed."""
  enclosing = None if os.path.isfile(os.path.join(workdir, rundir.CONFIG_FILE)) else _enclosing_run(workdir)
  if enclosing is None or not enclosing[1].arm:
    return rundir.read_config(workdir, "classifier")
  config = rundir.read_config(enclosing[0])
  config.seed = enclosing[1].seed
  return config


def _classifier_dir(workdir: str) -> tuple[str, ml_collections.ConfigDict]:
  """(directory, config) of the model of a classifier workdir: itself, or a two-phase run's finetune/."""
  config = _run_config(workdir)
  finetune = os.path.join(workdir, FINETUNE)
  if os.path.isdir(os.path.join(workdir, "best")) or not os.path.isdir(finetune):
    return workdir, config
  if os.path.isfile(os.path.join(finetune, rundir.CONFIG_FILE)):
    return finetune, rundir.read_config(finetune, "classifier")
  legacy = ml_collections.ConfigDict(config.to_dict())
  legacy.model.freeze_backbone = False  # the fine-tuning phase trains every layer
  return finetune, legacy


def load_classifier(workdir: str, step: int | None = None, *, require_best: bool = False) -> TrainedClassifier:
  """The best-on-validation state of a classifier run (step None), or `checkpoints/` step `step`.

  A two-phase recipe's top-level workdir gives its fine-tuning phase. Without a `best/`
  checkpoint, step None falls back to the latest training checkpoint unless `require_best`
  (prediction on patients uses only the selected model, never a stray state). A checkpoint whose
  files fail their checksums is a `checkpointing.CheckpointCorruptError` naming it.
  """
  model_dir, config = _classifier_dir(workdir)
  template_config = ml_collections.ConfigDict(config.to_dict())
  template_config.model.pretrained_path = ""  # the weights come from the checkpoint
  model = classifier_factory.build_classifier(template_config)
  # Schedule lengths do not change the optimizer-state structure that the restore needs.
  template = jax.eval_shape(lambda: classifier_factory.create_classifier_state(
      template_config, model, jax.random.key(0), 1, 1))
  best = os.path.join(model_dir, "best")
  use_best = step is None and _has_checkpoint(best)
  if require_best and not use_best:
    raise FileNotFoundError(f"no checkpoint in {best}; expected the best-on-validation checkpoint "
                            "that the classifier task writes after its first epoch")
  ckpt = checkpointing.Checkpointer(best if use_best else os.path.join(model_dir, "checkpoints"), None)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {best} or {ckpt.directory}; expected the workdir of a "
                            "classifier run (it writes best/ after its first epoch)")
  # The exact checkpoint asked for, verified against its checksums: a model that is served or
  # measured is never silently swapped for an older one.
  chosen = ckpt.latest_step() if use_best or step is None else step
  try:
    state, _ = ckpt.restore(template, chosen)
  except checkpointing.CheckpointCorruptError as e:
    raise checkpointing.CheckpointCorruptError(f"cannot load the trained classifier of {workdir}: {e}") from e
  which = "best" if use_best else f"step {chosen}"
  return TrainedClassifier(config, model, state, which, model_dir)


# --- any servable model ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Selection:
  """Which model of a workdir holding several: an augmentation arm, a PrepNet row/seed/site."""
  arm: str = ""          # augment_experiment: '' = the only finished arm
  seed: int = -1         # augment_experiment / prepnet: -1 = the first of the run's seeds
  prepnet_row: str = ""  # prepnet: '' = prepnet_autoencoder.default_row ('PrepNet' if there is one)
  train_site: str = ""   # prepnet: E_cov's COVID training set ('sars', 'sars+ucsd'); '' = the first

  @classmethod
  def from_config(cls, config) -> "Selection":
    """From the predict/serve fields `arm`, `model_seed`, `prepnet_row`, `train_site`."""
    return cls(str(config.arm), int(config.model_seed), str(config.prepnet_row), str(config.train_site))


@dataclasses.dataclass
class TrainedModel:
  """What `predict` and `serve` need of a trained model."""
  kind: str                  # the job that trained it: classifier, cxr_recipe, augment_experiment, prepnet
  name: str                  # e.g. 'small_cnn', or 'PrepNet AE → vgg19_bn E_cov'
  description: str           # which model of which workdir
  model_dir: str             # its own directory (config or checkpoint, reports/calibration.json)
  config: ml_collections.ConfigDict  # its training config (data.train, preprocess)
  model: Any                 # the classifier module (E_cov of a PrepNet pipeline)
  variables: dict
  preprocess: dict           # the evaluation preprocessing of the model's (or its AE's) input
  class_names: list[str]
  temperature: float | None  # fitted on its validation split; None = not calibrated
  autoencoder: prepnet_autoencoder.PipelineStage | None = None  # a PrepNet row's AE in front of `model`

  @property
  def calibration_file(self) -> str:
    return os.path.join(self.model_dir, calibration.CALIBRATION_FILE)


def _not_a_workdir(workdir: str, why: str) -> FileNotFoundError:
  found = sorted(os.listdir(workdir))[:20] if os.path.isdir(workdir) else "nothing (no such directory)"
  return FileNotFoundError(f"{workdir} {why}; it is not a workdir of the project's {PROJECT_JOBS} "
                           f"jobs; found: {found}")


def _enclosing_run(workdir: str) -> tuple[str, Selection] | None:
  """`<run>/arms/<arm>/seed_<s>` or `<run>/rows/<row>/seed_<s>` → (<run>, the selection it names)."""
  match = re.fullmatch(r"seed_(-?\d+)", os.path.basename(workdir))
  parent = os.path.dirname(workdir)
  run = os.path.dirname(os.path.dirname(parent))
  if not match or not os.path.isfile(os.path.join(run, rundir.CONFIG_FILE)):
    return None
  seed, name, group = int(match.group(1)), os.path.basename(parent), os.path.basename(os.path.dirname(parent))
  if group == ARMS:
    return run, Selection(arm=name, seed=seed)
  if group == prepnet_layout.ROWS and rundir.read_config(run).get("task") == "prepnet":
    rows = [str(r["name"]) for r in rundir.read_config(run).rows]
    row = next((r for r in rows if prepnet_layout.row_slug(r) == name), None)
    return (run, Selection(prepnet_row=row, seed=seed)) if row else None
  return None


def load_trained_model(workdir: str, selection: Selection = Selection()) -> TrainedModel:
  """The servable model of any workdir the project's classifier-producing jobs write.

  A workdir holding several models (an augmentation experiment, a PrepNet run) is narrowed by
  `selection`; its sub-directories `arms/<arm>/seed_<s>` and `rows/<row>/seed_<s>` are accepted
  too. Anything else gets an error that names what is missing and what was found.
  """
  workdir = os.path.normpath(workdir)
  if os.path.isfile(os.path.join(workdir, rundir.CONFIG_FILE)):
    config = rundir.read_config(workdir)
    task = config.get("task")
  else:
    enclosing = _enclosing_run(workdir)
    if enclosing is None:
      raise _not_a_workdir(workdir, "has no config.json")
    run, named = enclosing
    if named.prepnet_row:
      return _prepnet_model(run, dataclasses.replace(selection, prepnet_row=named.prepnet_row, seed=named.seed))
    config, task = None, "augment_experiment"  # an arm written before arms had their own config.json
  if task == "prepnet":
    return _prepnet_model(workdir, selection)
  if selection.train_site:
    raise ValueError(f"config.train_site={selection.train_site!r} selects a PrepNet E_cov, but {workdir} "
                     f"is a workdir of task {task!r}; leave it empty")
  if task == "augment_experiment" and os.path.isdir(os.path.join(workdir, ARMS)):
    return load_trained_model(_arm_dir(workdir, config, selection), dataclasses.replace(selection, arm=""))
  if selection.arm:
    raise ValueError(f"config.arm={selection.arm!r} selects an augmentation arm, but {workdir} is a "
                     f"workdir of task {task!r} with one model; leave it empty")
  if task not in CLASSIFIER_TASKS:
    raise _not_a_workdir(workdir, f"is a workdir of task {task!r}, which trains no classifier")
  classifier = load_classifier(workdir, require_best=True)
  kind = "cxr_recipe (two-phase: the fine-tuning phase)" if classifier.model_dir != workdir else task
  return TrainedModel(
      kind=kind, name=classifier.config.model.name,
      description=f"{classifier.config.model.name} of {kind} in {classifier.model_dir}",
      model_dir=classifier.model_dir, config=classifier.config, model=classifier.model,
      variables=classifier.variables, preprocess=classifier.config.preprocess.to_dict(),
      class_names=[str(c) for c in classifier.config.data.class_names],
      temperature=calibration.read_temperature(classifier.model_dir))


def finished_arms(workdir: str) -> dict[str, list[int]]:
  """{arm: [seeds]} of an augmentation experiment whose classifiers have a best checkpoint."""
  root, found = os.path.join(workdir, ARMS), {}
  for arm in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    for entry in os.listdir(os.path.join(root, arm)):
      run = os.path.join(root, arm, entry)
      match = re.fullmatch(r"seed_(-?\d+)", entry)
      if match and any(os.path.isdir(os.path.join(run, *p, "best")) for p in ((), (FINETUNE,))):
        found.setdefault(arm, []).append(int(match.group(1)))
  return {arm: sorted(seeds) for arm, seeds in found.items()}


def _arm_dir(workdir: str, config, selection: Selection) -> str:
  available = finished_arms(workdir)
  if not available:
    raise FileNotFoundError(f"{workdir} is an augment_experiment workdir without a trained arm yet "
                            f"(no arms/<arm>/seed_<s>/best); run or finish the job first")
  arm = selection.arm or (next(iter(available)) if len(available) == 1 else "")
  if arm not in available:
    what = f"config.arm={selection.arm!r} has no trained classifier" if selection.arm else "choose an arm"
    raise ValueError(f"{workdir} is an augment_experiment workdir; {what}: trained arms and seeds "
                     f"{available} (--config.arm=<arm> --config.model_seed=<s>, or give "
                     f"{os.path.join(workdir, ARMS)}/<arm>/seed_<s> as the model workdir)")
  seeds = available[arm]
  run_seeds = [int(s) for s in config.seeds if int(s) in seeds] or seeds
  seed = run_seeds[0] if selection.seed == -1 else int(selection.seed)
  if seed not in seeds:
    raise ValueError(f"config.model_seed={seed}: arm {arm!r} of {workdir} has trained seeds {seeds}")
  return os.path.join(workdir, ARMS, arm, f"seed_{seed}")


def _prepnet_model(workdir: str, selection: Selection) -> TrainedModel:
  if selection.arm:
    raise ValueError(f"config.arm={selection.arm!r} selects an augmentation arm, but {workdir} is a "
                     "prepnet workdir; choose with prepnet_row, model_seed and train_site")
  p = prepnet_autoencoder.load_prepnet_pipeline(workdir, selection.prepnet_row, selection.seed,
                                                selection.train_site)
  return TrainedModel(kind="prepnet", name=p.name, description=p.description, model_dir=p.model_dir,
                      config=p.config, model=p.cov_model, variables=p.cov_variables,
                      preprocess=p.config.preprocess.to_dict(),
                      class_names=[str(c) for c in p.config.data.class_names],
                      temperature=calibration.read_temperature(p.model_dir), autoencoder=p.stage)
