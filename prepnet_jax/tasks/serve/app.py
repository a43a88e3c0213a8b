"""Task 'serve': a local, offline web page that predicts one uploaded image (Flask).

The seed-002 interface (reference/cxr_papers.md §002.2.7): upload a chest image and see the
class probabilities and a Grad-CAM heat map. Here the page also shows the original, the model
input (and the PrepNet-normalised image when an AE is configured). Everything is served by this
process: images are inline base64 PNG data URLs, the bars are HTML/CSS, there is no JavaScript
and no external resource (a Content-Security-Policy header enforces that).

Uploads are typed by content (`inference.read_input`), never by file name; each one is written
to a fresh temporary directory that is removed when the answer is ready. The model is loaded and
compiled once at startup (`Predictor.warm_up`), so an upload costs one preprocessing and one
jitted forward + Grad-CAM.
"""

from __future__ import annotations

import base64
import io
import os
import tempfile
import time

import flask
import numpy as np
from PIL import Image
from werkzeug.exceptions import RequestEntityTooLarge

from prepnet_jax.data import transforms
from prepnet_jax.eval import inference

UPLOAD_FIELD = "image"
DISPLAY_MAX_SIDE = 512  # originals are shown at most this large (encoding a 4k PNG takes long)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                           "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def png_data_url(image: np.ndarray, max_side: int | None = None) -> str:
  """uint8 H×W×C (C ∈ {1, 3}) → 'data:image/png;base64,...', shrunk to `max_side` if larger."""
  image = np.asarray(image)
  if max_side and max(image.shape[:2]) > max_side:
    scale = max_side / max(image.shape[:2])
    size = (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)))
    image = transforms.resize(image, size, "bilinear")
  array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
  return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bars(class_names: list[str], probabilities: np.ndarray) -> list[dict]:
  top = int(np.argmax(probabilities))
  return [{"name": name, "p": float(p), "percent": 100.0 * float(p), "top": k == top}
          for k, (name, p) in enumerate(zip(class_names, probabilities))]


def _view(predictor: inference.Predictor, prediction: inference.ImagePrediction) -> dict:
  return {"label": prediction.label,
          "original": png_data_url(prediction.original, DISPLAY_MAX_SIDE),
          "original_size": "×".join(str(s) for s in prediction.original.shape[:2]),
          "normalised": png_data_url(prediction.normalised) if prediction.normalised is not None else None,
          "model_input": png_data_url(prediction.model_input),
          "overlay": png_data_url(prediction.overlay),
          "bars": _bars(predictor.class_names, prediction.probabilities),
          "predicted": predictor.class_names[int(np.argmax(prediction.probabilities))]}


def create_app(predictor: inference.Predictor, max_upload_bytes: int = 64 * 2**20) -> flask.Flask:
  """The Flask app around an already loaded `predictor` (tests and benchmarks build it directly)."""
  app = flask.Flask(__name__)
  app.config["MAX_CONTENT_LENGTH"] = int(max_upload_bytes)
  limit_text = _megabytes(max_upload_bytes)
  model = predictor.describe()

  def page(template: str, status: int = 200, **context):
    return flask.render_template(template, model=model, limit=limit_text, field=UPLOAD_FIELD, **context), status

  @app.get("/")
  def index():
    return page("index.html")

  @app.post("/predict")
  def predict():
    start = time.perf_counter()
    upload = flask.request.files.get(UPLOAD_FIELD)
    if upload is None or not upload.filename:
      return page("error.html", 400, title="No file chosen",
                  message="Choose an image file (PNG, JPEG, DICOM or NIfTI) before pressing Predict.")
    with tempfile.TemporaryDirectory(prefix="prepnet_serve_") as tmp:
      path = os.path.join(tmp, "upload")  # the client's file name is shown, never used as a path
      upload.save(path)
      try:
        result = predictor.predict_file(path)
      except inference.InputError as e:
        return page("error.html", 400, title="This file cannot be used",
                    message=str(e).replace(path, upload.filename))
    views = [_view(predictor, p) for p in result.predictions]
    return page("result.html", filename=upload.filename, format=result.format, notes=result.notes,
                views=views, file_bars=_bars(predictor.class_names, result.probabilities),
                file_predicted=predictor.class_names[int(np.argmax(result.probabilities))],
                elapsed_ms=1000.0 * (time.perf_counter() - start))

  @app.errorhandler(RequestEntityTooLarge)
  def too_large(_):
    size = flask.request.content_length
    got = f"The upload was {_megabytes(size)}; " if size else ""
    return page("error.html", 413, title="File too large",
                message=f"{got}this server accepts files up to {limit_text} (config.max_upload_mb).")

  @app.after_request
  def offline_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response

  return app


def _megabytes(n: int) -> str:
  return f"{n / 2**20:.3g} MB"


def run(config, workdir: str) -> None:
  """Loads the model once, compiles it, then serves http://<host>:<port>/ until interrupted."""
  predictor = inference.Predictor.from_config(config)
  start = time.perf_counter()
  predictor.warm_up()
  calibrated = f"calibrated, T = {predictor.temperature:.3g}" if predictor.calibrated else "uncalibrated"
  print(f"[serve] model {predictor.model_name}: {predictor.served.description} ({calibrated}: "
        f"{predictor.temperature_source}) loaded and compiled in {time.perf_counter() - start:.1f}s", flush=True)
  if config.host not in LOCAL_HOSTS:
    print(f"[serve] WARNING: host={config.host} exposes this page, without authentication, to "
          "every machine that can reach this one; use 127.0.0.1 for local use", flush=True)
  app = create_app(predictor, int(float(config.max_upload_mb) * 2**20))
  print(f"[serve] open http://{config.host}:{config.port}/ (Ctrl-C stops it)", flush=True)
  app.run(host=config.host, port=int(config.port), debug=False, use_reloader=False, threaded=True)
