"""A local web page: upload one chest image, see probabilities and Grad-CAM (task 'serve').

  python main.py --config=configs/serve.py --workdir=runs/serve --config.model_workdir=runs/cls
  # then open http://127.0.0.1:8080 (offline page: no JavaScript, no CDN)

`model_workdir` takes every workdir `predict` takes (classifier, two-phase recipe, augmentation
arm with `arm`/`model_seed`, PrepNet run with `prepnet_row`/`model_seed`/`train_site`); the page
says "calibrated, T = …" with the temperature fitted by the training job, or "uncalibrated".

Reads the model once at startup (a warm-up prediction compiles it), then answers each upload
(PNG/JPEG, DICOM or NIfTI, type checked by content) with the original image, the model input
(and the PrepNet-normalised image for a PrepNet run or with prepnet_workdir), the class
probabilities as bars and the Grad-CAM overlay, in well under a second on CPU
(benchmarks/bench_serve.py). Uploads are
kept in a temporary directory only while they are processed. The reading and model fields are
those of configs/predict.py.
"""

from configs import predict as predict_config


def get_config():
  c = predict_config.get_config()
  c.task = "serve"
  del c["inputs"]
  del c["data"]["phantom_seed"]
  c.host = "127.0.0.1"          # local only; '0.0.0.0' exposes the page to the network
  c.port = 8080
  c.max_upload_mb = 64.0        # larger uploads get a 413 page naming the limit
  return c
