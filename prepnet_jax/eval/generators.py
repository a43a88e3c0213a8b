"""A trained generator, whatever trained it: one interface for the sampling job, the generative
metrics and the augmentation experiment.

`load_generator(workdir, step)` reads `<workdir>/config.json`, dispatches on its `task`
('gan': GAN, CGAN, DCGAN, WGAN, WGAN-GP; 'vae'; 'vaegan'; 'stylegan2') and restores the
generator's weights only (the checkpoint's `generator` / `vae` / `decoder` / `g` network, read
without a template, so no discriminator or optimizer is built). The `TrainedGenerator` it
returns says what it can make:

  num_classes  > 0 for a conditional model (CGAN, conditional StyleGAN2), which takes a label;
  classes      the labels it produces: every class of a conditional model, the one class of an
               unconditional run trained with `data.class_filter=[k]` (one generator per class),
               () for an unconditional run over several classes (its images have no label);
  generate(num, seed, label, truncation_psi, noise_mode) → uint8 (N, H, W, C), the same images
               for the same arguments; generate_from_seeds(seeds, ...) gives one image per seed
               (stylegan2-ada's `generate.py --seeds`), image i from latent seed i alone.

Truncation (`truncation_psi` < 1) exists for StyleGAN2 only: w ← w_avg + ψ (w − w_avg), the
tracked average w of the training run (ψ = 0 maps every latent to w_avg). The other models have
no w space, and clipping or resampling their z would be a different trick under the same name,
so ψ ≠ 1 is a ValueError for them. `noise_mode` ('const' | 'random' | 'none') is StyleGAN2's
per-layer noise: 'const' uses the run's fixed noise buffers (deterministic per latent), 'random'
draws it from the seed (one draw per chunk of `batch_size` images), 'none' leaves it out; the
other models have no noise inputs and accept any of the three. Images come from G_ema for
StyleGAN2 and from G's EMA weights for a GAN that kept them (`ema_decay` > 0).

The per-family sampling functions (`gan_images`, `vae_images`, `vaegan_images`,
`stylegan2_images`) and the chunked, device-sharded generation (`generate_in_chunks`) are also
what the training tasks draw their sample grids and Fréchet-distance fakes with.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from prepnet_jax.data import datasets, pipeline, transforms
from prepnet_jax.models import gan as gan_models, stylegan2_hparams, vae as vae_models, vaegan as vaegan_models
from prepnet_jax.models.stylegan2 import NOISE_MODES
from prepnet_jax.runtime import checkpointing, precision, rundir, sharding, writers
from prepnet_jax.runtime.state import TrainState

TASKS = ("gan", "vae", "vaegan", "stylegan2")
NETWORK = {"gan": "generator", "vae": "vae", "vaegan": "decoder", "stylegan2": "g"}  # in the saved state


# --- sampling functions, shared with the training tasks -----------------------------------------

def gan_images(net: TrainState, z, labels, conditional: bool):
  """G of a GAN-family run in inference mode (BatchNorm running statistics; EMA weights when kept)."""
  params = net.params if net.ema_params is None else net.ema_params
  return net.apply_fn(net.variables_with(params), z, labels if conditional else None, train=False)


def vae_images(net: TrainState, z, labels=None):
  del labels  # unconditional
  return net.apply_fn(net.variables, z, method="generate")


def vaegan_images(net: TrainState, z, labels=None):
  del labels  # unconditional
  return net.apply_fn(net.variables, z, train=False)


@functools.partial(jax.jit, static_argnames=("generator", "truncation_psi", "noise_mode"))
def stylegan2_images(generator, params, buffers, z, labels, noise_key, truncation_psi: float = 1.0,
                     noise_mode: str = "random"):
  """StyleGAN2 G (`models.stylegan2.Generator`) on latents z and integer labels → [−1, 1]."""
  c = jax.nn.one_hot(labels, generator.c_dim) if generator.c_dim else None
  return generator.apply({"params": params, "buffers": buffers}, z, c, truncation_psi, noise_mode,
                         rngs={"noise": noise_key})


# --- latents, labels, chunks ---------------------------------------------------------------------

def latents(seed: int, num: int, latent_dim: int) -> np.ndarray:
  """z ~ N(0, I) of shape (num, latent_dim) from one seed."""
  return np.asarray(jax.random.normal(jax.random.key(seed), (num, latent_dim), jnp.float32))


def seed_latents(seeds: Sequence[int], latent_dim: int) -> np.ndarray:
  """One z per seed: row i depends on seeds[i] only."""
  return np.stack([latents(int(s), 1, latent_dim)[0] for s in seeds]) if len(seeds) else \
      np.zeros((0, latent_dim), np.float32)


def grid_labels(num: int, num_classes: int, ncols: int = 1) -> np.ndarray:
  """Labels of `num` samples: classes in turn, one class per row of an `ncols`-wide grid."""
  if not num_classes:
    return np.zeros(num, np.int32)
  return ((np.arange(num) // ncols) % num_classes).astype(np.int32)


def generate_in_chunks(fn: Callable[[jax.Array, jax.Array, int], jax.Array], z: np.ndarray, labels: np.ndarray,
                       mesh, batch_size: int = 256) -> np.ndarray:
  """fn(z_chunk, label_chunk, start) over chunks of `batch_size` split across the devices;
  float32 images. Every process passes the same `z`; `device_put` keeps each process's shards
  and the result is gathered back to every process. Chunks are padded to a multiple of the
  device count (the padding rows are dropped)."""
  devices = mesh.devices.size
  chunk = -(-batch_size // devices) * devices
  data = sharding.data_sharding(mesh)
  out = []
  for start in range(0, len(z), chunk):
    zb, lb = z[start:start + chunk], labels[start:start + chunk]
    valid = len(zb)
    pad = (-valid) % devices
    zb = jax.device_put(np.concatenate([zb, np.zeros((pad, zb.shape[1]), zb.dtype)]), data)
    lb = jax.device_put(np.concatenate([lb, np.zeros((pad,), lb.dtype)]).astype(np.int32), data)
    images = multihost_utils.process_allgather(fn(zb, lb, start), tiled=True)
    out.append(np.asarray(images)[:valid])
  return np.concatenate(out)


# --- what a run can generate, from its config.json -----------------------------------------------

@dataclasses.dataclass(frozen=True)
class GeneratorInfo:
  """A generator run as its config describes it (no weights loaded)."""
  workdir: str
  task: str
  kind: str
  num_classes: int                  # 0 = unconditional
  classes: tuple[int, ...]          # the labels its images carry (see module docstring)
  class_filter: tuple[int, ...]     # the labels it was trained on (() = all)
  image_size: int
  channels: int
  latent_dim: int
  config: ml_collections.ConfigDict  # the run's resolved config

  @property
  def data(self) -> ml_collections.ConfigDict:
    return self.config.data

  @property
  def training_data(self) -> str:
    return f"{self.data.train}:{self.data.train_split}"


def read_generator_info(workdir: str) -> GeneratorInfo:
  config = rundir.read_config(workdir, "generator training")
  task = config.get("task")
  if task not in TASKS:
    raise ValueError(f"{workdir}/config.json has task={task!r}; a generator run is one of {TASKS}")
  trained_on = tuple(datasets.class_filter(config.data))
  if task == "stylegan2":
    hp = stylegan2_hparams.resolve_hparams(config, num_devices=1)  # G's shape does not depend on devices
    kind, num_classes, size, channels, latent_dim = "stylegan2", hp.c_dim, hp.resolution, hp.channels, hp.z_dim
  else:
    kind, latent_dim = config.model.kind, int(config.model.latent_dim)
    num_classes = int(config.model.num_classes) if task == "gan" else 0
    size, channels = int(config.preprocess.image_size), int(config.preprocess.channels)
  classes = tuple(range(num_classes)) if num_classes else (trained_on if len(trained_on) == 1 else ())
  return GeneratorInfo(os.path.abspath(workdir), task, kind, num_classes, classes, trained_on, size, channels,
                       latent_dim, config)


class LabelledImages:
  """The examples of `source` as {'image', 'label'}, `label` the int32 of `label_key`: what a
  generator run learns from (a class, so it pickles into grain worker processes)."""

  def __init__(self, source, label_key: str):
    self.source, self.label_key = source, label_key

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> dict:
    example = self.source[i]
    return {"image": example["image"], "label": np.int32(example[self.label_key])}

  def column(self, key: str) -> np.ndarray:
    """`label` (and other fields) of every example, read without decoding images."""
    if key == "label":
      return pipeline.column(self.source, self.label_key).astype(np.int32)
    return pipeline.column(self.source, key)


def training_set(data_cfg, preprocess_cfg, image_size: int, channels: int) -> tuple[LabelledImages, Any]:
  """(source, preprocess) of a generator run's training images: `data.train`/`train_split`/
  `class_filter` as `LabelledImages`, and the deterministic preprocessing to float32
  (image_size, image_size, channels) images in [−1, 1]. Nothing is read yet."""
  source = LabelledImages(datasets.training_source(data_cfg), data_cfg.label_key)
  preprocess = transforms.make_preprocess(
      {**preprocess_cfg.to_dict(), "image_size": int(image_size), "channels": int(channels)}, training=False)
  return source, preprocess


def uint8_batches(source, preprocess, batch_size: int = 64,
                  options: pipeline.LoaderOptions | None = None) -> Iterator[np.ndarray]:
  """Every image of `source` in order, preprocessed to [−1, 1], as uint8 batches of up to
  `batch_size` (`pipeline.eval_batches`: each process reads its share of a batch, then every
  process gets the whole batch): the real side of a metric without the whole set in memory.
  """
  processes = jax.process_count()
  batch_size = -(-int(batch_size) // processes) * processes
  for batch, _ in pipeline.eval_batches(source, preprocess, batch_size, options):
    images, valid = writers.to_uint8(batch["image"], value_range=(-1.0, 1.0)), batch["valid"]
    if processes > 1:
      images = np.asarray(multihost_utils.process_allgather(images, tiled=True))
      valid = np.asarray(multihost_utils.process_allgather(valid, tiled=True))
    yield images[np.asarray(valid, bool)]


def training_images(info: GeneratorInfo, num: int, seed: int = 0) -> np.ndarray:
  """uint8 images of the run's own training data (`data.train`/`train_split`/`class_filter`), at
  its resolution and channels: the reals to set beside its fakes. A conditional run's are drawn
  class by class (a block of `num // num_classes` per class, as the sampling job's grid). Only
  the `num` drawn images are read."""
  source, preprocess = training_set(info.data, info.config.preprocess, info.image_size, info.channels)
  rng = np.random.default_rng(seed)
  if info.num_classes:
    labels = pipeline.column(source, "label")
    per_class = max(1, num // info.num_classes)
    picks = np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:per_class]
                            for k in range(info.num_classes)])
  else:
    picks = rng.permutation(len(source))[:num]
  real = pipeline.materialize(pipeline.SubsetSource(source, [int(i) for i in picks]), preprocess, seed=seed)
  return writers.to_uint8(real.column("image"), value_range=(-1.0, 1.0))


# --- a trained generator -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TrainedGenerator(GeneratorInfo):
  """A generator run's weights at one checkpoint `step`, ready to sample (module docstring)."""
  step: int = 0
  sample_fn: Callable[..., jax.Array] | None = None  # (z, labels, start, seed, psi, noise_mode) → [−1, 1]
  mesh: Any = None

  def labels_for(self, num: int, label: int | None) -> np.ndarray:
    """Labels of `num` images: `label`, or every class in turn for a conditional model."""
    if self.num_classes:
      if label is None:
        return grid_labels(num, self.num_classes)
      if not 0 <= int(label) < self.num_classes:
        raise ValueError(f"label={label} is not a class of this model (0..{self.num_classes - 1})")
      return np.full(num, int(label), np.int32)
    if label is not None and self.classes != (int(label),):
      raise ValueError(f"label={label} asked of an unconditional model trained on "
                       f"class_filter={list(self.class_filter) or 'all classes'}; pass label=None")
    return np.zeros(num, np.int32)

  def check_options(self, truncation_psi: float, noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
      raise ValueError(f"noise_mode={noise_mode!r}; expected one of {NOISE_MODES}")
    if self.task != "stylegan2" and float(truncation_psi) != 1.0:
      raise ValueError(f"truncation_psi={truncation_psi} applies to StyleGAN2 only (w-space truncation "
                       f"towards w_avg); the {self.kind} of task {self.task!r} has no w space: use 1.0")

  def images(self, z: np.ndarray, labels: np.ndarray, seed: int, truncation_psi: float, noise_mode: str,
             batch_size: int) -> np.ndarray:
    self.check_options(truncation_psi, noise_mode)
    fn = functools.partial(self.sample_fn, seed=int(seed), truncation_psi=float(truncation_psi),
                           noise_mode=noise_mode)
    return writers.to_uint8(generate_in_chunks(fn, z, labels, self.mesh, batch_size), value_range=(-1.0, 1.0))

  def generate(self, num: int, seed: int = 0, label: int | None = None, truncation_psi: float = 1.0,
               noise_mode: str = "const", batch_size: int = 256) -> np.ndarray:
    """uint8 (num, H, W, C) from z ~ N(0, I) of `seed` (same seed, same images)."""
    if num < 1:
      raise ValueError(f"num_images must be positive, got {num}")
    labels = self.labels_for(num, label)
    return self.images(latents(seed, num, self.latent_dim), labels, seed, truncation_psi, noise_mode, batch_size)

  def generate_from_seeds(self, seeds: Sequence[int], label: int | None = None, truncation_psi: float = 1.0,
                          noise_mode: str = "const", batch_size: int = 256) -> np.ndarray:
    """uint8 (len(seeds), H, W, C): image i from latent seed seeds[i] alone (noise_mode 'random'
    draws the noise of each chunk from its first seed)."""
    seeds = [int(s) for s in seeds]
    if not seeds:
      raise ValueError("seeds is empty; give at least one seed")
    labels = self.labels_for(len(seeds), label)
    return self.images(seed_latents(seeds, self.latent_dim), labels, seeds[0], truncation_psi, noise_mode,
                       batch_size)


def _network(tree: dict, task: str, workdir: str, apply_fn) -> TrainState:
  """The generator network's `TrainState` (weights only) out of a restored state tree."""
  if NETWORK[task] not in tree:
    raise ValueError(f"the checkpoint of {workdir} (task {task!r}) has no '{NETWORK[task]}' network; "
                     f"found {sorted(tree)}")
  net = tree[NETWORK[task]]
  return TrainState(step=net["step"], params=net["params"], batch_stats=net.get("batch_stats") or {},
                    opt_state=None, rng=None, apply_fn=apply_fn, tx=None, ema_params=net.get("ema_params"))


def load_generator(workdir: str, step: int | None = None) -> TrainedGenerator:
  """The generator of checkpoint `step` (None or < 0 = latest) of run `workdir`."""
  info = read_generator_info(workdir)
  step = None if step is None or int(step) < 0 else int(step)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), None)
  step = ckpt.latest_step() if step is None else step
  tree, meta = ckpt.restore_tree(step)
  config, mesh = info.config, sharding.make_mesh()
  dtype = precision.compute_dtype(config)  # the run's own precision, as it drew its snapshots
  if info.task == "stylegan2":
    hp = stylegan2_hparams.hparams_from_meta(meta["hparams"]) if "hparams" in meta else \
        stylegan2_hparams.resolve_hparams(config)
    generator = stylegan2_hparams.build_generator(hp, dtype)
    net = sharding.replicate(_network(tree, "stylegan2", workdir, generator.apply), mesh)

    def sample(z, labels, start, *, seed, truncation_psi, noise_mode):
      noise_key = jax.random.fold_in(jax.random.PRNGKey(seed), start)
      return stylegan2_images(generator, net.ema_params, net.batch_stats, z, labels, noise_key,
                              truncation_psi, noise_mode)
  else:
    size, channels = info.image_size, info.channels
    if info.task == "gan":
      module = gan_models.build_generator(config.model, size, channels, dtype)
    elif info.task == "vae":
      module = vae_models.build_vae(config.model, size, channels, dtype)
    else:
      module = vaegan_models.build_vaegan(config.model, size, channels, dtype)[1]
    net = sharding.replicate(_network(tree, info.task, workdir, module.apply), mesh)
    jitted = _jitted_sampler(info.task, bool(info.num_classes))

    def sample(z, labels, start, *, seed, truncation_psi, noise_mode):
      del start, seed, truncation_psi, noise_mode  # no noise inputs; ψ is checked before
      return jitted(net, z, labels)
  return TrainedGenerator(**{f.name: getattr(info, f.name) for f in dataclasses.fields(GeneratorInfo)},
                          step=int(step), sample_fn=sample, mesh=mesh)


@functools.lru_cache(maxsize=None)
def _jitted_sampler(task: str, conditional: bool):
  """One jitted sampler per family, so loading a run again (or another of the same shapes) does
  not recompile."""
  if task == "gan":
    return jax.jit(functools.partial(gan_images, conditional=conditional))
  return jax.jit(vae_images if task == "vae" else vaegan_images)
