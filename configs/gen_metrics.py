"""Generative metrics (FD/FID, KID, IS, precision/recall) of generated images vs real ones.

  python main.py --config=configs/gen_metrics.py --workdir=runs/gen_metrics \
      --config.generated.folder=runs/sample/samples
  python main.py --config=configs/gen_metrics.py --workdir=runs/gen_metrics \
      --config.generated.workdir=runs/gan --config.generated.num_images=1000
  python main.py --config=configs/gen_metrics.py --workdir=runs/gen_metrics_sg2 \
      --config.generated.workdir=runs/sg2_covid --config.real.labels='(1,)'

Folder vs folder, every image of both, each resized straight to 299 (as clean-fid's
`compare_folders` and pytorch-fid do), with the real FID weights:
  python main.py --config=configs/gen_metrics.py --workdir=runs/fid_folders \
      --config.generated.folder=<generated images> --config.real.folder=<real images> \
      --config.generated.num_images=0 --config.real.max_images=0 \
      --config.real.match_generated=False --config.extractors=inception \
      --config.allow_fallback=False --config.inception.weights_path=pt_inception-2015-12-05.npz
add --config.inception.resize_mode=legacy_pytorch (pytorch-fid's numbers, records named
fid_legacy_pytorch, ...) or legacy_tensorflow (TTUR's, fid_legacy_tensorflow) to compare with
numbers published with those tools; the default 'clean' is clean-fid's (records named fid, ...).

Real set (unless real.folder): the phantom's 'covidx' CXR site, train split (a per-class generator:
--config.real.labels='(1,)'; another set: --config.data.train=<dataset> --config.data.train_split=<split>). Extractors: 'inception' (real FID; needs a local weights file,
--config.inception.weights_path=pt_inception-2015-12-05.npz, see
prepnet_jax/models/inception_v3.py for how to make it) and 'randinit'. Without the weights
file, 'inception' falls back to 'randinit' (allow_fallback=True, logged; records read
fd_randinit/kid_randinit/..., never 'fid'); set --config.allow_fallback=False to make a missing
file an error. Add 'classifier:<classifier workdir>' for fd_classifier/is_classifier.
Writes <workdir>/reports/gen_metrics.{json,md}; real statistics are cached in
<workdir>/cache (or --config.cache_dir). About 1 minute on 2 CPU cores for 1000 vs 1000
images with randinit; Inception at 299x299 is ~6 GFLOP/image (minutes on CPU, seconds on GPU).
Expected: each value printed next to its real-vs-real noise floor.
"""

import ml_collections

from configs import common


def get_config():
  c = ml_collections.ConfigDict()
  c.task = "gen_metrics"
  c.seed = 0                            # latents of a sampled generator, real subset, KID subsets

  c.generated = ml_collections.ConfigDict()
  c.generated.folder = ""               # a folder of generated PNGs (sorted, first num_images) ...
  c.generated.workdir = ""              # ... or a gan/vae/vaegan/stylegan2 run to sample from
  c.generated.step = -1                 # checkpoint step of `workdir`; -1 = latest
  c.generated.num_images = 1000         # 0 = every file of `folder`
  c.generated.label = -1                # class of a conditional generator; -1 = unconditional
  c.generated.truncation_psi = 1.0      # StyleGAN2 only (others refuse psi != 1); 1 = no truncation
  c.generated.noise_mode = "random"     # StyleGAN2 noise: 'random' (as stylegan2-ada's metrics) | 'const' | 'none'

  # The real set: split `data.train_split` of `data.train` (was real.dataset / real.split /
  # real.label_key), or a folder of images, and how it is filtered and matched.
  c.data = common.data("phantom_cxr/covidx")
  c.real = ml_collections.ConfigDict()
  c.real.folder = ""                    # a folder of real images (recursive) instead of `data.train`
  c.real.labels = ()                    # class filter, e.g. (1,) = COVID positives only
  c.real.max_images = 2000              # seeded random subset when larger; 0 = all
  c.real.match_generated = True         # resize reals to the generated size/channels first
  c.real.resize_method = "bicubic"


  c.extractors = "inception,randinit"   # comma-separated specs of feature_extractors.get_extractor
  c.allow_fallback = True               # missing Inception weights -> `fallback_extractor`, logged
  c.fallback_extractor = "randinit"
  c.inception = ml_collections.ConfigDict()
  c.inception.weights_path = ""         # .npz/.safetensors (pytorch-fid names) or Keras .h5
  c.inception.sha256 = ""               # checked when set
  # Resize to 299 (clean-fid's mode names): 'clean' (clean-fid: PIL bicubic, antialiased) |
  # 'legacy_pytorch' (pytorch-fid: torch bilinear, its 2x/255-1 input) | 'legacy_tensorflow'
  # (TTUR: TF1 resize_bilinear). A legacy mode suffixes the names: fid_legacy_pytorch, ...
  c.inception.resize_mode = "clean"
  c.randinit = ml_collections.ConfigDict()
  c.randinit.seed = 0
  c.randinit.image_size = 128
  c.randinit.widths = (32, 64, 128, 256, 512)  # feature dim = last width
  c.classifier_step = -1                # 'classifier:<workdir>' checkpoint; -1 = its best one

  c.metrics = ml_collections.ConfigDict()
  c.metrics.names = "fd,kid,pr,is"      # IS only for extractors with a classifier head
  c.metrics.kid_subsets = 100
  c.metrics.kid_subset_size = 1000
  c.metrics.pr_k = 3
  c.metrics.is_splits = 10
  c.metrics.fd_eps = 1e-6

  c.batch_size = 64
  c.cache_dir = ""                      # '' = <workdir>/cache
  return c
