"""Task 'serve': a local, offline web page that predicts one uploaded image (Flask).

The seed-002 interface (reference/cxr_papers.md §002.2.7): upload a chest image and see the
class probabilities and a Grad-CAM heat map. Here the page also shows the original, the model
input (and the PrepNet-normalised image when an AE is configured). Everything is served by this
process: images are inline base64 PNG data URLs, the bars are HTML/CSS, there is no JavaScript
and no external resource (a Content-Security-Policy header enforces that).

Uploads are typed by content (`readers.read_input`), never by file name; each one is written
to a fresh temporary directory that is removed when its prediction has ended. The model is
loaded and compiled once at startup (`Predictor.warm_up`), so an upload costs one preprocessing
and one jitted forward + Grad-CAM.

Under load (issue #17): the upload limit counts compressed bytes; the decoded size is limited by
the readers' header stage (`readers.header_size_problem`: sides, pixels and voxels read from the
header, config.min_side/max_side/max_pixels/max_voxels, the limits predict and training use). It is
asked before an upload takes a prediction slot, so a file refused from its header neither waits in
the queue nor holds a slot; the 400 page gives the reason `read_input` would give. At most
`max_concurrent` predictions run at once (`PredictionSlots`); a request waits up to
`queue_timeout_s` for a slot, then gets 503 with Retry-After. A prediction runs in a worker thread
and the request waits for it up to `request_timeout_s` (then 503 with the reason). A jitted model
call cannot be interrupted, so a late prediction keeps its slot until it really ends and its upload
is removed then: the slots bound the decoded images and model calls in memory, not only the
requests still waiting. Every failure is a page with a reason (an unexpected exception names its
type; the traceback goes to the server's log only); no page or header shows a server path or a
library version, and every response carries `Cache-Control: no-store`. `run` serves the app with
waitress (a production WSGI server); config.server='dev' uses Flask's development server, for
tests only.
"""

from __future__ import annotations

import base64
import concurrent.futures
import io
import math
import os
import re
import shutil
import tempfile
import threading
import time
from typing import Callable, Sequence, TypeVar

import flask
import numpy as np
from PIL import Image
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.serving import WSGIRequestHandler

from prepnet_jax.data import readers, transforms
from prepnet_jax.eval import inference

UPLOAD_FIELD = "image"
DISPLAY_MAX_SIDE = 512  # originals are shown at most this large (encoding a 4k PNG takes long)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                           "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SERVERS = ("waitress", "dev")
# The Server header of both servers: no library name or version (werkzeug would send
# 'Werkzeug/x Python/y').
SERVER_NAME = "prepnet_jax"
# An absolute path left in a message after the known ones were replaced (a library's own text).
_ABSOLUTE_PATH = re.compile(r"(?<![\w.<>/-])/(?:[^\s/'\"<>:,;()]+/)+[^\s/'\"<>:,;()]*")
T = TypeVar("T")


# --- bounded, timed predictions ------------------------------------------------------------------

class ServerBusy(Exception):
  """Every prediction slot stayed taken for the whole queue timeout."""


class PredictionTimeout(Exception):
  """A prediction ran past the request time limit (it goes on, holding its slot, until it ends)."""


class PredictionSlots:
  """At most `capacity` predictions at once, each waited for at most `timeout_s`.

  `run(work, cleanup)` waits up to `queue_timeout_s` for a free slot (else ServerBusy), runs
  `work` in a daemon thread and returns its result or raises its exception, or raises
  PredictionTimeout after `timeout_s`. The slot is freed, and `cleanup` called, when `work`
  has really ended, also after a timeout: Python cannot stop a thread inside a jitted call, so
  the slot count is the number of predictions that hold memory and cores, answered or not.
  """

  def __init__(self, capacity: int, queue_timeout_s: float, timeout_s: float):
    self.capacity, self.queue_timeout_s, self.timeout_s = int(capacity), float(queue_timeout_s), float(timeout_s)
    self._free = threading.BoundedSemaphore(self.capacity)
    self._lock = threading.Lock()
    self._running = 0

  @property
  def running(self) -> int:
    """Predictions holding a slot now (including timed-out ones that have not ended yet)."""
    with self._lock:
      return self._running

  def _end(self, cleanup: Callable[[], None]) -> None:
    try:
      cleanup()
    finally:
      with self._lock:
        self._running -= 1
      self._free.release()

  def run(self, work: Callable[[], T], cleanup: Callable[[], None]) -> T:
    if not self._free.acquire(timeout=self.queue_timeout_s):
      cleanup()
      raise ServerBusy()
    with self._lock:
      self._running += 1
    future: concurrent.futures.Future = concurrent.futures.Future()

    def worker():
      result = error = None
      try:
        result = work()
      except BaseException as e:  # handed to the waiting request, which answers with a reason
        error = e
      finally:
        # Before the answer: a request that sees it finds the slot free and the upload removed.
        self._end(cleanup)
      if error is None:
        future.set_result(result)
      else:
        future.set_exception(error)

    try:
      threading.Thread(target=worker, name="prepnet-serve-prediction", daemon=True).start()
    except BaseException:  # no thread (resource limits): the slot must not leak
      self._end(cleanup)
      raise
    try:
      return future.result(timeout=self.timeout_s)
    except concurrent.futures.TimeoutError:
      raise PredictionTimeout() from None


# --- the page ------------------------------------------------------------------------------------

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


def _result_context(predictor: inference.Predictor, path: str) -> dict:
  """Everything the result page shows; runs in a prediction slot (it holds the decoded image)."""
  result = predictor.predict_file(path)
  return dict(format=result.format, notes=result.notes, warnings=result.warnings,
              views=[_view(predictor, p) for p in result.predictions],
              file_bars=_bars(predictor.class_names, result.probabilities),
              file_predicted=predictor.class_names[int(np.argmax(result.probabilities))])


class _Scrubber:
  """Replaces server paths in text shown to clients: the model's directories by '<model_workdir>'
  (or '<path>'), the upload's temporary path by the client's file name, and any other absolute
  path by '<path>'."""

  def __init__(self, model_workdir: str, hidden_paths: Sequence[str]):
    self.known: dict[str, str] = {}
    for path, name in [(model_workdir, "<model_workdir>")] + [(p, "<path>") for p in hidden_paths if p]:
      given = path.rstrip("/")
      forms = {os.path.abspath(path), os.path.realpath(path)}
      if "/" in given:  # the given form only with a '/': a bare '.' or 'cls' also matches ordinary text
        forms.add(given)
      self.known.update((form, name) for form in forms if form != "/")

  def __call__(self, text, extra: dict[str, str] | None = None):
    if not isinstance(text, str):
      return text
    for path, name in sorted({**self.known, **(extra or {})}.items(), key=lambda kv: -len(kv[0])):
      text = text.replace(path, name)
    return _ABSOLUTE_PATH.sub("<path>", text)


def create_app(predictor: inference.Predictor, max_upload_bytes: int = 64 * 2**20, max_concurrent: int = 2,
               queue_timeout_s: float = 10.0, request_timeout_s: float = 60.0,
               hidden_paths: Sequence[str] = ()) -> flask.Flask:
  """The Flask app around an already loaded `predictor` (tests and benchmarks build it directly;
  the defaults are those of configs/serve.py). `hidden_paths`: server paths besides the model
  workdir that pages must not show (run passes config.prepnet_workdir)."""
  app = flask.Flask(__name__)
  app.config["MAX_CONTENT_LENGTH"] = int(max_upload_bytes)
  slots = PredictionSlots(max_concurrent, queue_timeout_s, request_timeout_s)
  app.extensions["prediction_slots"] = slots
  limit_text = _megabytes(max_upload_bytes)
  pixel_text = f"{predictor.options.max_pixels / 1e6:g} megapixels"
  scrub = _Scrubber(predictor.model_workdir, hidden_paths)
  model = {key: scrub(value) for key, value in predictor.describe().items()}
  retry_after = str(max(1, math.ceil(queue_timeout_s)))

  def page(template: str, status: int = 200, headers: dict | None = None, **context):
    html = flask.render_template(template, model=model, limit=limit_text, pixel_limit=pixel_text,
                                 field=UPLOAD_FIELD, **context)
    return html, status, headers or {}

  def busy(title: str, message: str):
    return page("error.html", 503, {"Retry-After": retry_after}, title=title, message=message)

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
    name = upload.filename
    tmp = tempfile.mkdtemp(prefix="prepnet_serve_")
    path = os.path.join(tmp, "upload")  # the client's file name is shown, never used as a path

    def remove():
      shutil.rmtree(tmp, ignore_errors=True)

    def unusable(e: readers.InputError):
      return page("error.html", 400, title="This file cannot be used", message=scrub(str(e), {path: name}))

    try:
      upload.save(path)
      refused = readers.header_size_problem(path, predictor.options)
    except BaseException:
      remove()
      raise
    if refused is not None:  # refused from its header alone: no slot taken, no wait in the queue
      remove()
      return unusable(readers.InputError(path, refused))
    try:
      context = slots.run(lambda: _result_context(predictor, path), remove)
    except ServerBusy:
      return busy("Server busy", f"{slots.capacity} prediction(s) were running for the whole "
                  f"{queue_timeout_s:g} s this request may wait (config.max_concurrent, "
                  f"config.queue_timeout_s); {name} was not read. Try again in a few seconds.")
    except PredictionTimeout:
      return busy("Prediction took too long", f"{name} was not answered within {request_timeout_s:g} s "
                  "(config.request_timeout_s); the server is busy or the file is very large. "
                  "Try again later or with a smaller image.")
    except readers.InputError as e:
      return unusable(e)
    except MemoryError:
      return busy("Not enough memory", f"the server ran out of memory while reading {name}; "
                  "try again later or with a smaller image.")
    except Exception as e:  # a reason instead of a bare 500; the traceback goes to the server log
      app.logger.exception("prediction of upload %r failed", name)
      return page("error.html", 500, title="Prediction failed",
                  message=f"{name}: the server could not process this file ({type(e).__name__}); "
                  "the details are in the server's log.")
    for key in ("notes", "warnings"):
      context[key] = [scrub(text, {path: name}) for text in context[key]]
    return page("result.html", filename=name, elapsed_ms=1000.0 * (time.perf_counter() - start), **context)

  @app.errorhandler(RequestEntityTooLarge)
  def too_large(_):
    size = flask.request.content_length
    got = f"The upload was {_megabytes(size)}; " if size else ""
    return page("error.html", 413, title="File too large",
                message=f"{got}this server accepts files up to {limit_text} (config.max_upload_mb).")

  @app.errorhandler(HTTPException)
  def http_error(e: HTTPException):
    if e.code is None or e.code < 400:  # routing redirects (a missing trailing slash) stay as they are
      return e
    kept = {k: v for k, v in e.get_headers() if k.lower() != "content-type"}  # e.g. Allow on a 405
    return page("error.html", e.code, kept, title=f"{e.code} {e.name}", message=e.description or "")

  @app.errorhandler(Exception)
  def internal_error(e: Exception):
    app.logger.exception("request failed")
    return page("error.html", 500, title="Internal error",
                message=f"the server could not answer this request ({type(e).__name__}); "
                "the details are in the server's log.")

  @app.after_request
  def offline_headers(response):
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "no-store"  # results are patient data: never cached
    return response

  return app


def _megabytes(n: int) -> str:
  return f"{n / 2**20:.3g} MB"


class _DevRequestHandler(WSGIRequestHandler):
  """Flask's development server without its 'Werkzeug/x Python/y' Server header."""

  def version_string(self) -> str:
    return SERVER_NAME


def _check_fields(config) -> None:
  if config.server not in SERVERS:
    raise ValueError(f"config.server={config.server!r}: expected one of {SERVERS} "
                     "('waitress' to serve, 'dev' for tests only)")
  for field in ("max_concurrent", "threads"):
    if not (isinstance(config[field], int) and config[field] >= 1):
      raise ValueError(f"config.{field}={config[field]!r}: expected an integer >= 1")
  for field in ("queue_timeout_s", "request_timeout_s", "max_upload_mb"):
    if not float(config[field]) >= 0 or not math.isfinite(float(config[field])):
      raise ValueError(f"config.{field}={config[field]!r}: expected a finite number >= 0")


def run(config, workdir: str) -> None:
  """Loads the model once, compiles it, then serves http://<host>:<port>/ until interrupted."""
  _check_fields(config)
  predictor = inference.Predictor.from_config(config)
  start = time.perf_counter()
  predictor.warm_up()
  calibrated = f"calibrated, T = {predictor.temperature:.3g}" if predictor.calibrated else "uncalibrated"
  print(f"[serve] model {predictor.model_name}: {predictor.served.description} ({calibrated}: "
        f"{predictor.temperature_source}) loaded and compiled in {time.perf_counter() - start:.1f}s", flush=True)
  if config.host not in LOCAL_HOSTS:
    print(f"[serve] WARNING: host={config.host} exposes this page, without authentication, to "
          "every machine that can reach this one; use 127.0.0.1 for local use", flush=True)
  max_upload_bytes = int(float(config.max_upload_mb) * 2**20)
  app = create_app(predictor, max_upload_bytes, int(config.max_concurrent), float(config.queue_timeout_s),
                   float(config.request_timeout_s), hidden_paths=[config.prepnet_workdir])
  limits = (f"{config.max_concurrent} prediction(s) at once, queue {float(config.queue_timeout_s):g} s, "
            f"time limit {float(config.request_timeout_s):g} s")
  if config.server == "waitress":
    import waitress  # only the served job needs it; the test client and benchmarks do not
    # Bodies over twice the app's limit are refused by waitress before they are received (a plain
    # 413); smaller ones reach the app, whose 413 page names the limit.
    server = waitress.create_server(app, host=config.host, port=int(config.port), threads=int(config.threads),
                                    ident=SERVER_NAME, max_request_body_size=2 * max_upload_bytes + 2**20)
    print(f"[serve] waitress, {config.threads} threads, {limits}: open "
          f"http://{config.host}:{server.effective_port}/ (Ctrl-C stops it)", flush=True)
    try:
      server.run()
    except KeyboardInterrupt:
      pass
    finally:
      server.close()
  else:
    from werkzeug.serving import make_server
    httpd = make_server(config.host, int(config.port), app, threaded=True, request_handler=_DevRequestHandler)
    print(f"[serve] Flask development server (tests only), {limits}: open "
          f"http://{config.host}:{httpd.server_port}/ (Ctrl-C stops it)", flush=True)
    try:
      httpd.serve_forever()
    except KeyboardInterrupt:
      pass
    finally:
      httpd.server_close()
