"""The faithful thesis setting of PrepNet (for GPUs): 224×224, full VGG16 U-Net, VGG19 E_img and
E_cov, batch 4, the reproduced schedule's epochs 20 / 2 / 50 / 30, two datasets.

  python main.py --config=configs/prepnet_thesis.py --workdir=runs/prepnet_thesis \
      --config.ae.pretrained_path=/path/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5

ImageNet weights load from local Keras .h5 files (never downloaded). With the real datasets:
--config.data.manual_dir=/data (expects /data/sars_cov2_ct, /data/ucsd_covid_ct) and
--config.data.train='("sars_cov2_ct","ucsd_covid_ct")' --config.cov_train_sets='(("sars_cov2_ct",),("ucsd_covid_ct",))'.
Expected on the real data (thesis Table 4.3 reproduction): Within ≈ 0.81, Cross ≈ 0.49.
"""

from configs import prepnet


def get_config():
  c = prepnet.get_config()
  c.preprocess.image_size = 224
  c.data.phantom_overrides = {}    # the default phantom sizes (real datasets replace them anyway)
  c.preprocess.augment.hflip = False  # no E_cov augmentation in the reproduced schedule
  c.preprocess.augment.affine_degrees = c.preprocess.augment.affine_translate = c.preprocess.augment.affine_scale = 0.0
  c.preprocess.equalize = True      # thesis §5.3: PIL equalize before ImageNet normalisation
  c.cov_class_weights = "none"
  c.ae.width_multiplier = 1.0
  c.ae.depth = 5
  c.e_img.width_multiplier = 1.0
  c.e_cov.width_multiplier = 1.0
  for net in (c.e_img, c.e_cov):  # the thesis's plain VGG19 with the torchvision MLP head
    net.name = "vgg19"
    net.kwargs = {"head_type": "mlp", "dropout_rate": 0.5}
  c.batch_size = 4
  for optim in (c.optim.ae, c.optim.img, c.optim.cov):
    optim.learning_rate = 1e-4
  e = c.num_epochs
  e.ae_warmup, e.img_warmup, e.adversarial, e.cov = 20, 2, 50, 30
  e.ae_pretrain, e.img_pretrain = 50, 5
  e.joint, e.four_step, e.end_to_end = 20, 70, 30
  e.diag_cov, e.diag_ae = 10, 20
  c.data.train = ("phantom_ct/sars", "phantom_ct/ucsd")
  c.cov_train_sets = (("phantom_ct/sars",), ("phantom_ct/ucsd",))
  c.rows = (dict(name="PrepNet reproduction", overrides={}),)
  c.baseline_row = "PrepNet reproduction"
  return c
