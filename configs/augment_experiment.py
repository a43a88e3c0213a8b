"""Real vs. + classical / + oversampled / + GAN-generated chest X-rays, over 3 seeds (seeds 001, 003, 004).

  python main.py --config=configs/augment_experiment.py --workdir=runs/augment_experiment

Trains per-class DCGANs on the COVIDx training split (only the classes that receive extra
images: by default COVID, filled up to the non-COVID count), then the same classifier in four
arms — real only, + classical (ImageDataGenerator preset B), + oversampling (seed 004's
rebalancing control), + synthetic — for seeds 0, 1, 2, and evaluates each on the internal
COVIDx test split and the external 'ulm' site (accuracy, per-class P/R/F1, AUC, mean ± std),
with temperature scaling (NLL, 15-bin ECE, reliability diagrams) and Grad-CAM overlays.
Reports: <workdir>/reports/augment_table.md, augment_results.json, reliability_*.png,
gradcam_*.png. CPU default: small CNN ×0.25 at 32 px, 8 epochs, a 32-px DCGAN for 300 steps;
222 s of CPU time (8.5 min wall on a 2-core machine shared with other jobs, of which it got
43 %). Measured: internal accuracy 0.88–0.91 in every arm; COVID recall 0.70 ± 0.20 (none),
0.67 ± 0.12 (classical), 0.70 ± 0.00 (oversample), 0.77 ± 0.06 (synthetic) — the internal test
split holds 10 COVID images, so no difference is beyond noise; on the external site every arm
calls almost every image COVID (accuracy ≈ 0.33, AUC 0.48–0.61): no arm fixes the site shift,
and a temperature fitted on COVIDx validation logits does not help there.

Options:
- given generators: --config.generator.workdirs='("", "runs/dcgan")' (one workdir per class,
  '' where no image is needed; e.g. configs/dcgan.py, configs/gan.py, configs/vae.py runs, or
  per-class StyleGAN2 runs: '("runs/sg2_noncovid", "runs/sg2_covid")') or a conditional one:
  --config.generator.conditional_workdir=runs/cgan (or runs/sg2_cond);
- per-class StyleGAN2 generators trained here instead of DCGANs (preset 'small', 32 px, 4 kimg
  each; data.class_filter is set per class): --config=configs/augment_experiment.py:generator=stylegan2
  (with a recipe: :cxr_resnet34,generator=stylegan2); StyleGAN2's truncation and noise when
  sampling: --config.generator.truncation_psi=0.7 --config.generator.noise_mode=const;
- N and the class mix: --config.extra.per_class='(0, 312)' (numbers per class; -1 = fill the
  class up to the largest one; seed 004 added 10000 of each: '(10000, 10000)');
- seed 004's leaky setup (generator trained on the external site):
  --config.generator.data_train=phantom_cxr/ulm --config.generator.data_train_split=all
  --config.generator.allow_eval_data=True (the report then opens with a leakage warning);
- a paper's classifier recipe instead of the small CNN: configs/augment_experiment.py:<recipe>
  with <recipe> one of cxr_deepcovid, cxr_resnet34, cxr_resnet50_onecycle, cxr_covidnet, ...
  (its 'cpu' preset; head-only phases and early stopping carry over).
"""

import importlib

import ml_collections

from configs import classifier

# Per-class generators this experiment can train itself (a conditional CGAN is given as
# generator.conditional_workdir instead).
GENERATORS = ("dcgan", "gan", "wgan", "wgan_gp", "vae", "vaegan", "stylegan2")


def generator_config(name: str) -> ml_collections.ConfigDict:
  """The per-class generator trained here: StyleGAN2 'small' (4 kimg), or the named GAN-family /
  VAE / VAE-GAN config at 32 px (300 steps, the DCGAN default's length)."""
  if name not in GENERATORS:
    raise ValueError(f"generator={name!r}; expected one of {GENERATORS}")
  g = importlib.import_module(f"configs.{name}").get_config()
  if name == "stylegan2":
    g.total_kimg = 4.0
    g.snapshot_kimg = 4.0
    g.eval.num_generated = 200
    return g
  g.preprocess.image_size = 32
  g.num_steps = 300
  g.save_every = 300
  g.sample_every = 100
  g.log_every_steps = 50
  g.fd.num_fake = 200
  return g


def get_config(spec=None):
  """`spec`: '<recipe>', 'generator=<dcgan|stylegan2>' or both, comma-separated."""
  parts = [p for p in (spec or "").split(",") if p]
  generator = next((p.partition("=")[2] for p in parts if p.startswith("generator=")), "dcgan")
  recipe = next((p for p in parts if not p.startswith("generator=")), None)
  return experiment(recipe, generator=generator)


def experiment(recipe: str | None = None, preset: str | None = None, generator: str = "dcgan"):
  """The experiment around classifier recipe `recipe` (configs/<recipe>.py at its `preset`;
  None = the small CNN below) with per-class `generator`s trained here when none is given."""
  if recipe:
    c = importlib.import_module(f"configs.{recipe}").get_config(preset)
  else:
    c = classifier.get_config()
    c.data.class_names = ["non-COVID", "COVID"]
    c.preprocess.image_size = 32
    c.preprocess.channels = 3
    c.preprocess.grayscale = True
    c.preprocess.equalize = False
    c.model.name = "small_cnn"
    c.model.width_multiplier = 0.25
    c.optim.learning_rate = 3e-3
    c.batch_size = 32
    c.num_epochs = 8
    c.log_every_steps = 50
    c.data.train = "phantom_cxr/covidx"
  c.task = "augment_experiment"
  c.seeds = (0, 1, 2)
  c.arms = ("none", "classical", "oversample", "synthetic")
  c.data.phantom_backend = "memory"    # the phantom in memory (~20 s to generate; supports split 'all')
  c.data.test_split = "test"           # the internal test set: this split of data.train
  c.data.eval = ("phantom_cxr/ulm",)   # the external "local hospital" site, never trained on
  c.data.eval_split = "all"

  c.extra = ml_collections.ConfigDict()
  c.extra.per_class = (0,) * (int(c.data.num_classes) - 1) + (-1,)  # COVID (last class) up to the largest class

  c.classical = ml_collections.ConfigDict()
  c.classical.preset = "B"              # classical_augment.PRESETS: 'A' (severe) or 'B' (mild, adopted)

  c.generator = ml_collections.ConfigDict()
  c.generator.workdirs = ()             # one generator workdir per class ('' = none needed)
  c.generator.conditional_workdir = ""  # or one conditional generator (e.g. a CGAN run)
  c.generator.step = -1                 # checkpoint to sample (-1 = latest)
  c.generator.truncation_psi = 1.0      # StyleGAN2 only (w towards w_avg); 1 = the full distribution
  c.generator.noise_mode = "random"     # StyleGAN2 per-layer noise: 'random' (as in training) | 'const' | 'none'
  c.generator.data_train = ""           # generators trained here: '' = data.train
  c.generator.data_train_split = "train"
  c.generator.allow_eval_data = False   # True: a generator may have seen evaluation patients
  c.generator.train = generator_config(generator)                # generators trained here when none is given (gan, vae, vaegan or stylegan2 config)
  # One switch for both the arms' classifiers and the generators trained here.
  c.generator.train.half_precision = c.get_ref("half_precision")

  c.calibration = ml_collections.ConfigDict()
  c.calibration.num_bins = 15
  c.gradcam = ml_collections.ConfigDict()
  c.gradcam.num_images = 8
  return c
