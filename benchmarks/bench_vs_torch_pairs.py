"""The rows of bench_vs_torch.py: each network as the project trains it and as PyTorch eager would.

A `Pair` holds both sides of one row: the project's own state constructor and jitted train step
(the ones the jobs call) and the torch.nn twin from torch_reference*.py with an eager step of
the same loss, optimizer settings and batch. See bench_vs_torch.py for what is compared and how.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import dcgan as dcgan_config
from configs import prepnet as prepnet_config
from configs import stylegan2 as stylegan2_config
from prepnet_jax import models
from prepnet_jax.data import diffaugment
from prepnet_jax.losses import stylegan2 as sg2_losses
from prepnet_jax.models import prepnet_networks, stylegan2_hparams, vgg
from prepnet_jax.runtime import sharding
from prepnet_jax.runtime.state import create_train_state
from prepnet_jax.tasks.classifier import train as classifier
from prepnet_jax.tasks.generative import gan as gan_task
from prepnet_jax.tasks.prepnet import steps as prepnet_steps
from prepnet_jax.tasks.stylegan2 import steps as sg2_steps

try:
  import torch
  import torch.nn.functional as F

  from benchmarks import torch_reference as ref
  from benchmarks import torch_reference_stylegan2 as ref_sg2
except ImportError:  # bench_vs_torch.py --jax-only, or its install message
  torch = None


@dataclasses.dataclass
class Pair:
  """One network on both sides. `jax_init()` -> state; `jax_params(state)` -> what is trained;
  `jax_step(mesh)` -> fn(state) -> state (data placed once); `torch_build()` -> modules;
  `torch_step(modules, memory_format)` -> fn() running one eager step."""
  images: int
  jax_init: Callable[[], Any]
  jax_params: Callable[[Any], Any]
  jax_step: Callable[[Any], Callable[[Any], Any]]
  torch_build: Callable[[], tuple]
  torch_step: Callable[[tuple, Any], Callable[[], None]]


def parse_row(spec: str) -> tuple[str, float, int, int]:
  """'vgg19_bn_gap_w0.125@48x32' -> ('vgg19_bn_gap', 0.125, 48, 32)."""
  match = re.fullmatch(r"([a-z0-9_]+?)(?:_w([0-9.]+))?@(\d+)x(\d+)", spec.strip())
  if not match:
    raise ValueError(f"row {spec!r}: expected <network>[_w<width>]@<size>x<batch>, e.g. resnet18@224x16")
  name, width, size, batch = match.groups()
  return name, float(width or 1.0), int(size), int(batch)


def random_images(batch: int, size: int, channels: int, low=None) -> np.ndarray:
  rng = np.random.default_rng(0)
  shape = (batch, size, size, channels)
  return (rng.uniform(-1, 1, shape) if low is not None else rng.normal(size=shape)).astype(np.float32)


def torch_images(images: np.ndarray, memory_format) -> "torch.Tensor":
  return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


def convnet(modules: tuple, memory_format) -> tuple:
  return tuple(m.to(memory_format=memory_format).train() for m in modules)


# --- classifiers ---------------------------------------------------------------------------------

def classifier_pair(name: str, width: float, size: int, batch: int) -> Pair:
  family = re.fullmatch(r"(resnet(?:18|34|50)|vgg(?:16|19)(?:_bn)?|covidnet)(_gap)?", name)
  if not family:
    raise ValueError(f"unknown network {name!r}")
  base, gap = family.group(1), bool(family.group(2))
  outputs = 3 if base == "covidnet" else 1
  kwargs = {"width_multiplier": width}
  if base.startswith("vgg"):
    kwargs.update(head_type="gap" if gap else "mlp", dropout_rate=0.2 if gap else 0.5)
  model = models.get_classifier(base, outputs, **kwargs)
  images = random_images(batch, size, 3)
  num_labels = 2 if outputs == 1 else outputs
  labels = np.random.default_rng(1).integers(0, num_labels, batch).astype(np.int32)

  def jax_init():
    return create_train_state(model, optax.adamw(1e-4), jax.random.key(0), jnp.zeros((1, size, size, 3)))

  def jax_step(mesh):
    data = sharding.shard_batch({"image": images, "label": labels}, mesh)
    return lambda state: classifier.train_step(state, data, None)[0]

  def torch_build():
    if base.startswith("resnet"):
      return (ref.resnet(int(base[6:]), outputs, width),)
    if base == "covidnet":
      return (ref.TorchCOVIDNet(outputs, size, width, faithful_bug=True),)
    return (ref.TorchVGG(int(base[3:5]), base.endswith("_bn"), outputs, width, "gap" if gap else "mlp",
                         kwargs["dropout_rate"]),)

  def torch_step(modules, memory_format):
    (net,) = convnet(modules, memory_format)
    x, y = torch_images(images, memory_format), torch.from_numpy(labels).long()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-4, fused=True)

    def step():
      logits = net(x)
      if outputs == 1:
        loss = F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
        preds = (logits[:, 0] > 0).long()
      else:
        loss = F.cross_entropy(logits, y)
        preds = logits.argmax(-1)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      (preds == y).float().mean()  # the JAX step returns the batch accuracy too
    return step

  return Pair(batch, jax_init, lambda s: s.params, jax_step, torch_build, torch_step)


# --- PrepNet's U-Net auto-encoder ----------------------------------------------------------------

def unet_pair(width: float, size: int, batch: int) -> Pair:
  config = prepnet_config.get_config()
  config.preprocess.image_size, config.batch_size = size, batch
  if width != 1.0:
    config.ae.width_multiplier = width
  ae, optim = config.ae, config.optim.ae
  channels = int(config.preprocess.channels)
  images = random_images(batch, size, channels)

  def jax_step(mesh):
    data = sharding.shard_batch({"image": images}, mesh)
    return lambda state: prepnet_steps.ae_rec_step(state, data, rec=config.losses.rec)[0]

  def torch_build():
    return (ref.TorchUNetAE(channels, int(ae.depth), ae.upsample, float(ae.width_multiplier)),)

  def torch_step(modules, memory_format):
    (net,) = convnet(modules, memory_format)
    x = torch_images(images, memory_format)
    opt = torch.optim.AdamW(net.parameters(), lr=optim.learning_rate, betas=(optim.b1, optim.b2),
                            eps=optim.eps, weight_decay=optim.weight_decay, fused=True)

    def step():
      loss = (x - net(x)).abs().mean()
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
    return step

  return Pair(batch, lambda: prepnet_networks.make_ae_state(config, jax.random.key(0), 1),
              lambda s: s.params, jax_step, torch_build, torch_step)


# --- DCGAN ---------------------------------------------------------------------------------------

def torch_adam(params, optim):
  return torch.optim.Adam(params, lr=optim.learning_rate, betas=(optim.b1, optim.b2), eps=optim.eps,
                          weight_decay=optim.weight_decay, fused=True)


def set_trainable(module, flag: bool) -> None:
  for p in module.parameters():
    p.requires_grad_(flag)


def dcgan_pair(width: float, size: int, batch: int) -> Pair:
  config = dcgan_config.get_config()
  config.preprocess.image_size, config.batch_size = size, batch
  if width != 1.0:
    config.model.width_multiplier = width
  channels, latent = int(config.preprocess.channels), int(config.model.latent_dim)
  images = random_images(batch, size, channels, low=-1)
  family = gan_task.make_family(config, sharding.make_mesh())

  def jax_step(mesh):
    data = sharding.shard_batch({"image": images[:, None], "label": np.zeros((batch, 1), np.int32)}, mesh)
    return lambda state: family.train_step(state, data)[0]

  def torch_build():
    w = vgg.scaled(int(config.model.dcgan_width), float(config.model.width_multiplier))
    return (ref.TorchDCGANGenerator(size, channels, w, latent),
            ref.TorchDCGANDiscriminator(size, channels, w))

  def torch_step(modules, memory_format):
    g, d = convnet(modules, memory_format)
    reals = torch_images(images, memory_format)
    g_opt, d_opt = torch_adam(g.parameters(), config.optim.g), torch_adam(d.parameters(), config.optim.d)
    ones, zeros = torch.ones(batch), torch.zeros(batch)

    def step():
      with torch.no_grad():
        fakes = g(torch.randn(batch, latent))
      real_out, fake_out = d(reals), d(fakes)
      d_loss = 0.5 * (F.binary_cross_entropy_with_logits(real_out, ones) +
                      F.binary_cross_entropy_with_logits(fake_out, zeros))
      d_opt.zero_grad(set_to_none=True)
      d_loss.backward()
      d_opt.step()
      set_trainable(d, False)
      g_loss = F.binary_cross_entropy_with_logits(d(g(torch.randn(batch, latent))), ones)
      g_opt.zero_grad(set_to_none=True)
      g_loss.backward()
      g_opt.step()
      set_trainable(d, True)
    return step

  return Pair(batch, lambda: family.init_state(jax.random.key(0)),
              lambda s: (s.generator.params, s.critic.params), jax_step, torch_build, torch_step)


# --- StyleGAN2 -----------------------------------------------------------------------------------

def stylegan2_pair(preset: str, size: int, batch: int) -> Pair:
  config = stylegan2_config.get_config()
  config.preset, config.preprocess.image_size, config.batch_size = preset, size, batch
  config.diffaugment.policy = ""
  hp = stylegan2_hparams.resolve_hparams(config)
  setup = sg2_steps.make_setup(hp, diffaugment.DiffAugment(""), sharding.make_mesh())
  images = random_images(batch, size, hp.channels, low=-1)

  def jax_step(mesh):
    data = sharding.shard_batch({"image": images, "label": np.zeros(batch, np.int32)}, mesh)

    def step(state):
      state, _ = sg2_steps.g_step_jit(setup, state, data, "main")
      state, _ = sg2_steps.d_step_jit(setup, state, data, "main")
      return sg2_steps.ema_step_jit(setup, state)
    return step

  def torch_build():
    return ref_sg2.TorchStyleGAN2Generator(hp), ref_sg2.TorchStyleGAN2Discriminator(hp)

  def torch_step(modules, memory_format):
    g, d = convnet(modules, memory_format)
    reals = torch_images(images, memory_format)

    def adam(params, interval):
      lr, b1, b2 = sg2_losses.lazy_regularization_adam(hp.lr, *hp.betas, interval)
      return torch.optim.Adam(params, lr=lr, betas=(b1, b2), eps=hp.eps, fused=True)
    g_opt = adam(g.parameters(), hp.g_reg_interval if hp.g_lazy else None)
    d_opt = adam(d.parameters(), hp.d_reg_interval if hp.d_lazy else None)
    g_params = list(g.parameters())
    ema = [p.detach().clone() for p in g_params]
    rng, counter = np.random.default_rng(0), [0]
    mix_index = torch.arange(g.num_ws)[None, :, None]

    def mapped_latents():
      """Style mixing as the project: both mappings always run, one cutoff per batch."""
      ws = g.mapping(torch.randn(batch, hp.z_dim), update_w_avg=True)
      ws2 = g.mapping(torch.randn(batch, hp.z_dim))
      mixing = rng.uniform() < hp.style_mixing_prob
      cutoff = int(rng.integers(1, g.num_ws)) if mixing else g.num_ws
      return torch.where(mix_index < cutoff, ws, ws2)

    def step():
      set_trainable(d, False)
      g_loss = F.softplus(-d(g.synthesize(mapped_latents()))).mean()
      g_opt.zero_grad(set_to_none=True)
      g_loss.backward()
      g_opt.step()
      set_trainable(d, True)
      with torch.no_grad():
        fakes = g.synthesize(mapped_latents())
      d_loss = F.softplus(d(fakes)).mean() + F.softplus(-d(reals)).mean()
      d_opt.zero_grad(set_to_none=True)
      d_loss.backward()
      d_opt.step()
      beta = float(sg2_losses.ema_beta(batch, counter[0] * batch, hp.ema_kimg, hp.ema_rampup))
      counter[0] += 1
      with torch.no_grad():
        torch._foreach_lerp_(ema, g_params, 1.0 - beta)
    return step

  return Pair(batch, lambda: sg2_steps.create_state(setup, 0), lambda s: (s.g.params, s.d.params),
              jax_step, torch_build, torch_step)


def make_pair(spec: str) -> Pair:
  name, width, size, batch = parse_row(spec)
  if name == "unet_ae":
    return unet_pair(width, size, batch)
  if name == "dcgan":
    return dcgan_pair(width, size, batch)
  if name.startswith("stylegan2_"):
    if width != 1.0:
      raise ValueError(f"row {spec!r}: StyleGAN2 widths come from its preset, not _w")
    return stylegan2_pair(name[len("stylegan2_"):], size, batch)
  return classifier_pair(name, width, size, batch)


# --- parameter counts ----------------------------------------------------------------------------

def count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def torch_count(modules) -> int:
  return int(sum(p.numel() for m in modules for p in m.parameters()))


def param_counts(spec: str) -> tuple[int, int]:
  """(JAX, torch) trainable parameters of a row, without allocating either network."""
  pair = make_pair(spec)
  with torch.device("meta"):
    modules = pair.torch_build()
  return count(pair.jax_params(jax.eval_shape(pair.jax_init))), torch_count(modules)
