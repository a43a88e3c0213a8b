"""PrepNet's networks as train states: the U-Net AE, E_img (K outputs) and E_cov (one logit).

The jitted steps take the states as arguments, and a state's module and optimizer are static
(hashed) fields: `compile_cache.build_once` builds them once per distinct setting, so every seed,
row and E_cov training set reuses the compiled steps instead of compiling them again. All three
compute in `runtime.precision.compute_dtype(config)` (bfloat16 under `config.half_precision`);
their parameters, BatchNorm statistics and outputs (the AE's image, the logits) stay float32.
"""

from __future__ import annotations

import jax.numpy as jnp

from prepnet_jax import models
from prepnet_jax.models.domain_adversarial import WithOriginHead
from prepnet_jax.models.unet import UNetVGG16AE
from prepnet_jax.runtime import compile_cache, optimizers, precision
from prepnet_jax.runtime.state import TrainState, create_train_state


def sample_input(config):
  s, c = int(config.preprocess.image_size), int(config.preprocess.channels)
  return jnp.zeros((1, s, s, c), jnp.float32)


def build_autoencoder(ae_cfg, channels: int, optim_cfg, steps_per_epoch: int, dtype=jnp.float32):
  """(module, optimizer) of the AE computing in `dtype`; call through `build_once`."""
  model = UNetVGG16AE(width_multiplier=float(ae_cfg.width_multiplier), depth=int(ae_cfg.depth),
                      upsample=ae_cfg.upsample, out_channels=channels, out_activation=ae_cfg.out_activation,
                      dtype=dtype)
  return model, optimizers.make_optimizer(optim_cfg, steps_per_epoch, steps_per_epoch)


def build_classifier(net_cfg, num_outputs: int, optim_cfg, steps_per_epoch: int, dtype=jnp.float32,
                     origin_domains: int = 0, origin_hidden: int = 64):
  """(module, optimizer) of E_img or E_cov computing in `dtype`; call through `build_once`.
  `origin_domains` > 0 adds DANN's dataset-origin head (`domain_adversarial.WithOriginHead`)."""
  kwargs = {"dtype": dtype, **dict(net_cfg.kwargs)}
  model = models.get_classifier(net_cfg.name, num_outputs, width_multiplier=float(net_cfg.width_multiplier),
                                **kwargs)
  if origin_domains:
    model = WithOriginHead(model, int(origin_domains), int(origin_hidden))
  return model, optimizers.make_optimizer(optim_cfg, steps_per_epoch, steps_per_epoch)


def make_ae_state(config, rng, steps_per_epoch: int, load_pretrained: bool = True) -> TrainState:
  ae_cfg = config.ae
  model, tx = compile_cache.build_once(build_autoencoder, ae_cfg, int(config.preprocess.channels),
                                       config.optim.ae, optimizers.schedule_steps_per_epoch(config.optim.ae, steps_per_epoch),
                                       precision.compute_dtype(config))
  state = create_train_state(model, tx, rng, sample_input(config))
  if load_pretrained and ae_cfg.pretrained_path:
    variables = models.load_pretrained("unet_vgg16", state.variables, ae_cfg.pretrained_path,
                                       sha256=ae_cfg.pretrained_sha256 or None)
    state = state.replace(params=variables["params"], opt_state=tx.init(variables["params"]))
  return state


def make_classifier_state(config, net_cfg, num_outputs: int, rng, steps_per_epoch: int, optim_cfg,
                          load_pretrained: bool = True, origin_domains: int = 0,
                          origin_hidden: int = 64) -> TrainState:
  model, tx = compile_cache.build_once(build_classifier, net_cfg, int(num_outputs), optim_cfg,
                                       optimizers.schedule_steps_per_epoch(optim_cfg, steps_per_epoch),
                                       precision.compute_dtype(config), int(origin_domains), int(origin_hidden))
  state = create_train_state(model, tx, rng, sample_input(config))
  if load_pretrained and net_cfg.pretrained_path:
    if origin_domains:
      raise ValueError(f"{net_cfg.name}: pretrained weights and the DANN origin head are not combined here")
    variables = models.load_pretrained(net_cfg.name, state.variables, net_cfg.pretrained_path,
                                       sha256=net_cfg.pretrained_sha256 or None)
    state = state.replace(params=variables["params"], batch_stats=variables.get("batch_stats", state.batch_stats),
                          opt_state=tx.init(variables["params"]))
  return state
