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

Served by waitress, a production WSGI server (`server='waitress'`, `threads` connections at
once); `--config.server=dev` uses Flask's development server and is for tests only. Under load
(prepnet_jax/tasks/serve/app.py): an upload is sized from its header before decoding, with the
reading limits of configs/predict.py (`min_side`/`max_side`, `max_pixels` per image or DICOM
frame, `max_voxels` per volume; a 400 page gives the reason); at most
`max_concurrent` predictions run at once, a request waits up to `queue_timeout_s` for one, then
gets 503 with Retry-After; a prediction not done within `request_timeout_s` is answered 503 (it
cannot be interrupted: it finishes in the background and keeps its slot until then). Every
response has `Cache-Control: no-store` and no server path or library version. Measured on 2
shared CPU cores with the tiny test model (tests/test_serve_load.py): the server idles at 0.45 GB
RSS and peaks at 0.51–0.63 GB under 18 concurrent uploads (four 8000×8000 PNGs refused from the
header, eight 3000×3000 PNGs decoded two at a time); with the pixel limit raised and 8 slots, 4 such
8000×8000 and 6 3000×3000 uploads peaked at 1.9 GB.
"""

from configs import predict as predict_config


def get_config():
  c = predict_config.get_config()
  c.task = "serve"
  del c["inputs"], c["inputs_file"]
  del c["data"]["phantom_seed"]
  c.host = "127.0.0.1"          # local only; '0.0.0.0' exposes the page to the network
  c.port = 8080                 # 0: a free port (the log line names it)
  c.server = "waitress"         # 'waitress' (production WSGI server) or 'dev' (Flask's, tests only)
  c.threads = 8                 # waitress threads: requests received and answered (or waiting) at once
  c.max_upload_mb = 64.0        # larger uploads get a 413 page naming the limit
  c.max_concurrent = 2          # predictions at once (each holds a decoded image and a model call)
  c.queue_timeout_s = 10.0      # wait this long for a free prediction, then 503 + Retry-After
  c.request_timeout_s = 60.0    # a prediction not done by then is answered 503 (it ends in the background)
  return c
