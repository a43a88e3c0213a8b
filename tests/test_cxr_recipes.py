"""The chest-X-ray recipe configs (seeds 001-004): settings, one real step each, early stopping,
the frozen-backbone and the two-phase recipes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_config, set_fields
from prepnet_jax import tasks
from prepnet_jax.data import pipeline
from prepnet_jax.eval import classify
from prepnet_jax.models import classifier_factory
from prepnet_jax.runtime import checkpointing, optimizers, rundir
from prepnet_jax.tasks.classifier import recipes as cxr_recipes, train as classifier

RECIPES = ("cxr_covidnet", "cxr_resnet50_kth", "cxr_deepcovid", "cxr_resnet18_exp", "cxr_resnet34",
           "cxr_vgg16_step", "cxr_resnet50_onecycle")
TINY_CXR = {"num_patients": 48, "image_size": 32, "class_probs": (0.35, 0.25, 0.4)}

# Learning rate at (epoch, step-in-epoch) with 10 steps per epoch, for the 'paper' preset.
PAPER_SCHEDULES = {
    "cxr_covidnet": {(0, 0): 2e-5, (15, 9): 2e-5},                     # plateau: stepped by validation
    "cxr_resnet50_kth": {(0, 0): 2e-5, (15, 9): 2e-5},
    "cxr_deepcovid": {(6, 9): 1e-3, (7, 0): 1e-4, (14, 0): 1e-5},      # StepLR(7, 0.1)
    "cxr_resnet18_exp": {(0, 9): 0.01, (1, 0): 0.009, (2, 5): 0.0081},  # ExponentialLR(0.9) per epoch
    "cxr_resnet34": {(0, 9): 0.01, (1, 0): 0.009, (2, 5): 0.0081},
    "cxr_vgg16_step": {(1, 9): 0.005, (2, 0): 0.0045, (4, 0): 0.00405},  # StepLR(2, 0.9)
    "cxr_resnet50_onecycle": {(0, 0): 1e-3, (7, 5): 6e-3, (30, 0): 1e-7},  # one-cycle over 30 epochs
}


def tiny(name: str, preset=None, **overrides):
  c = load_config(name) if preset is None else _load_preset(name, preset)
  c.data.phantom_backend = "memory"
  c.data.phantom_overrides = dict(TINY_CXR)
  crop = c.preprocess.augment.crop_resize  # keep the recipe's resize-then-crop ratio at 32 px
  c.preprocess.augment.crop_resize = round(crop * 32 / c.preprocess.image_size) if crop else 0
  c.preprocess.image_size = 32
  c.log_every_steps = 1
  return set_fields(c, overrides)


def _load_preset(name, preset):
  import importlib
  return importlib.import_module(f"configs.{name}").get_config(preset)


def test_recipe_tasks_are_registered():
  """'classifier' where `fit` is the whole recipe, 'cxr_recipe' for early stopping / two phases."""
  for name in RECIPES:
    config = load_config(name)
    assert tasks.get_runner(config.task) is not None, name
  assert tasks.TASKS["cxr_recipe"] == "prepnet_jax.tasks.classifier.recipes"


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_config_has_the_papers_schedule(name):
  paper = _load_preset(name, "paper")
  assert paper.preset == "paper" and load_config(name).preset == "cpu"
  steps_per_epoch, epochs = 10, int(paper.num_epochs)
  schedule = optimizers.make_schedule(paper.optim, steps_per_epoch, steps_per_epoch * epochs)
  for (epoch, step), lr in PAPER_SCHEDULES[name].items():
    value = schedule(epoch * steps_per_epoch + step) if callable(schedule) else schedule
    assert float(value) == pytest.approx(lr, rel=1e-4, abs=1e-9), (epoch, step)
  # The paper preset's model builds at the paper's resolution (shapes only, nothing computed).
  model = classifier_factory.build_classifier(paper)
  size = paper.preprocess.image_size
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False))
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, size, size, 3)), train=False), shapes)
  assert logits.shape == (1, classifier_factory.num_outputs(paper))


def test_paper_settings_of_each_study():
  covidnet = _load_preset("cxr_covidnet", "paper")
  assert (covidnet.data.label_key, tuple(covidnet.data.balance), list(covidnet.class_weights)) == \
      ("label3", (2, 0.3), [1.0, 1.0, 6.0])
  assert (covidnet.optim.name, covidnet.optim.plateau_factor, covidnet.optim.plateau_patience,
          covidnet.batch_size, covidnet.preprocess.value_range) == ("adam", 0.7, 5, 8, "unit")
  deepcovid = _load_preset("cxr_deepcovid", "paper")
  assert deepcovid.model.freeze_backbone and deepcovid.optim.name == "sgd" and deepcovid.optim.momentum == 0.9
  assert (deepcovid.batch_size, deepcovid.num_epochs, deepcovid.preprocess.image_size) == (20, 50, 224)
  resnet34 = _load_preset("cxr_resnet34", "paper")
  assert (resnet34.model.name, resnet34.early_stopping_patience, resnet34.preprocess.image_size) == ("resnet34", 3, 384)
  vgg = _load_preset("cxr_vgg16_step", "paper")
  assert (vgg.model.name, vgg.model.dropout_rate, vgg.batch_size, vgg.num_epochs) == ("vgg16_bn", 0.3, 8, 17)
  ulm = _load_preset("cxr_resnet50_onecycle", "paper")
  assert (ulm.head_only_epochs, ulm.head_only_learning_rate, ulm.num_epochs, ulm.batch_size) == (5, 1e-3, 30, 16)
  head = cxr_recipes.head_only_config(ulm)
  assert head.model.freeze_backbone and head.optim.schedule == "constant" and head.num_epochs == 5
  assert not cxr_recipes.finetune_config(ulm).model.freeze_backbone


@pytest.mark.parametrize("name,width", [("cxr_covidnet", 0.0625), ("cxr_resnet50_kth", 0.0625),
                                        ("cxr_resnet34", 0.0625), ("cxr_vgg16_step", 0.0625)])
def test_recipe_takes_one_real_step(name, width):
  """One batch of the recipe's own pipeline (balance, class weights) through its optimizer."""
  config = tiny(name, **{"model.width_multiplier": width})
  train = classify.load_split(config, config.data.train, "train")
  source, preprocess = classifier.training_inputs(config, train)
  balance = tuple(config.data.balance)
  dataset = pipeline.train_dataset(source, preprocess, int(config.batch_size), seed=0,
                                   balance=("label", balance[0], balance[1]) if balance else None)
  batch = dataset[0]
  if name in ("cxr_covidnet", "cxr_resnet50_kth"):
    assert (batch["label"] == 2).sum() == 2 and len(batch["label"]) == 8  # 25 % COVID, as the KTH code
  weights = config.class_weights
  class_weights = None if weights == "none" else jnp.asarray(
      pipeline.class_weights(pipeline.column(source, "label"), int(config.data.num_classes), weights))
  state = classifier_factory.create_classifier_state(config, classifier_factory.build_classifier(config), jax.random.key(0), 10, 10)
  before = jax.device_get(state.params)
  state, scalars = classifier.train_step(state, {"image": batch["image"], "label": batch["label"]},
                                              class_weights)
  assert np.isfinite(float(scalars["loss"]))
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, jax.device_get(state.params))
  assert all(jax.tree.leaves(changed["head"])) and any(jax.tree.leaves(changed["backbone"]))
  assert optimizers.current_learning_rate(jax.device_get(state.opt_state)) == pytest.approx(config.optim.learning_rate)


def test_deepcovid_trains_only_the_head(tmp_path):
  config = tiny("cxr_deepcovid", num_epochs=1, **{"model.width_multiplier": 0.125})
  train = classify.load_split(config, config.data.train, "train")
  val = classify.load_split(config, config.data.train, "val")
  state, meta = cxr_recipes.fit_recipe(config, str(tmp_path), train, val)
  init = classifier_factory.create_classifier_state(config, classifier_factory.build_classifier(config), jax.random.key(0), 1, 1)
  trained = jax.device_get(state)
  backbone_same = jax.tree.map(np.array_equal, jax.device_get(init.params["backbone"]), trained.params["backbone"])
  assert all(jax.tree.leaves(backbone_same)), "a frozen backbone parameter moved"
  assert not np.array_equal(init.params["head"]["predictions"]["kernel"], trained.params["head"]["predictions"]["kernel"])
  # torch train() semantics: the frozen backbone's BatchNorm statistics still adapt.
  stats_same = jax.tree.map(np.array_equal, jax.device_get(init.batch_stats), trained.batch_stats)
  assert not all(jax.tree.leaves(stats_same))
  assert trained.params["head"]["predictions"]["kernel"].shape[-1] == 2  # Linear(512 → 2) + softmax
  assert meta["history"][0]["lr"] == pytest.approx(1e-3)


def test_seed004_head_only_phase_then_full_finetune(tmp_path):
  """The two-phase mechanism of seed 004 with its optimizers, on a small CNN to keep the test fast
  (the ResNet50 takes its real step in test_recipe_takes_one_real_step[cxr_resnet50_kth])."""
  config = tiny("cxr_resnet50_onecycle", num_epochs=1, head_only_epochs=1,
                **{"model.name": "small_cnn", "model.width_multiplier": 0.25})
  train = classify.load_split(config, config.data.train, "train")
  val = classify.load_split(config, config.data.train, "val")
  state, meta = cxr_recipes.fit_recipe(config, str(tmp_path), train, val)
  # The model lives in finetune/, which (like head_only/) is a classifier workdir with its own config.
  assert meta["model_dir"] == str(tmp_path / "finetune")
  assert rundir.read_config(str(tmp_path / "finetune")).model.freeze_backbone is False
  assert rundir.read_config(str(tmp_path / "head_only")).optim.schedule == "constant"
  template = lambda c: jax.device_get(classifier_factory.create_classifier_state(c, classifier_factory.build_classifier(c), jax.random.key(0), 1, 1))
  init = template(cxr_recipes.head_only_config(config))
  head_state, _ = checkpointing.Checkpointer(str(tmp_path / "head_only" / "best"), 1).restore(init)
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(np.array_equal, a, b)))
  assert same(init.params["backbone"], head_state.params["backbone"])
  assert not same(init.params["head"], head_state.params["head"])
  assert meta["head_only"]["history"][0]["lr"] == pytest.approx(1e-3)  # constant lr, backbone frozen
  # Phase 2 starts from phase 1's best weights (its step-0 checkpoint) and then moves the backbone.
  start, _ = checkpointing.Checkpointer(str(tmp_path / "finetune" / "checkpoints")).restore(
      template(cxr_recipes.finetune_config(config)), step=0)
  assert same(start.params, head_state.params) and same(start.batch_stats, head_state.batch_stats)
  assert not same(jax.device_get(state.params["backbone"]), head_state.params["backbone"])
  steps = pipeline.steps_per_epoch(train, int(config.batch_size))
  onecycle = optimizers.make_schedule(config.optim, steps, steps)
  # The recorded lr is the one of the epoch's last update (optax: schedule(count) before the step).
  assert meta["history"][0]["lr"] == pytest.approx(float(onecycle(steps - 1)), rel=1e-5)


def test_stopping_epoch_is_patience_epochs_after_the_first_best():
  history = [{"epoch": e + 1, "val_accuracy": v} for e, v in enumerate([0.5, 0.6, 0.55, 0.6, 0.58, 0.7])]
  assert cxr_recipes.stopping_epoch(history[:4], "val_accuracy", 3) is None
  assert cxr_recipes.stopping_epoch(history[:5], "val_accuracy", 3) == 5  # best epoch 2 (first 0.6)
  assert cxr_recipes.stopping_epoch(history, "val_accuracy", 3) is None   # improved at epoch 6
  undefined = [{"epoch": e, "val_accuracy": float("nan")} for e in (1, 2)]  # like `fit`: epoch 1 is best
  assert cxr_recipes.stopping_epoch(undefined, "val_accuracy", 1) == 2


def test_early_stopping_halts_and_a_rerun_does_not_train(tmp_path, capsys):
  # lr 0 and BatchNorm momentum 1: the validation accuracy can never improve after epoch 1.
  config = tiny("cxr_resnet18_exp", num_epochs=6, early_stopping_patience=1,
                **{"optim.learning_rate": 0.0, "model.width_multiplier": 0.125,
                   "model.kwargs": {"bn_momentum": 1.0}})
  train = classify.load_split(config, config.data.train, "train")
  val = classify.load_split(config, config.data.train, "val")
  _, meta = cxr_recipes.fit_recipe(config, str(tmp_path), train, val)
  assert meta["early_stopping"]["stopped_at_epoch"] == 2 and len(meta["history"]) == 2
  steps = pipeline.steps_per_epoch(train, int(config.batch_size))
  assert checkpointing.Checkpointer(str(tmp_path / "checkpoints")).latest_step() == 2 * steps
  capsys.readouterr()
  _, again = cxr_recipes.fit_recipe(config, str(tmp_path), train, val)
  out = capsys.readouterr().out
  assert again["early_stopping"]["stopped_at_epoch"] == 2 and "steps/s" not in out
  with pytest.raises(ValueError, match="optim.schedule='onecycle'"):
    cxr_recipes.fit_recipe(tiny("cxr_resnet18_exp", **{"optim.schedule": "onecycle"}), str(tmp_path / "x"),
                           train, val)
