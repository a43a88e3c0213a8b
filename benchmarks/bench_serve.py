"""Latency of one upload to the web page (task 'serve'): Flask test client and real HTTP.

  python benchmarks/bench_serve.py                                   # resnet18 ×0.25 and resnet50, 224²
  python benchmarks/bench_serve.py --models small_cnn:1.0 --uploads 50
  python benchmarks/bench_serve.py --model_workdir runs/cls          # a trained classifier run

Each upload is a 224×224 PNG chest X-ray of the phantom, posted as multipart form data, and is
answered with the full result page (read by content, preprocess, jitted forward + Grad-CAM,
four base64 PNGs). After one warm-up request (which compiles), `--uploads` requests are timed
through Flask's test client and through real HTTP on 127.0.0.1 (werkzeug's threaded server);
mean / p50 / p95 in ms. Without --model_workdir, a randomly initialised classifier of each
`name:width` in --models is saved to a temporary run directory (latency does not depend on the
weights).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from configs import classifier as classifier_config  # noqa: E402
from prepnet_jax.eval import inference  # noqa: E402
from prepnet_jax.data import phantom, transforms  # noqa: E402
from prepnet_jax.tasks.serve import app as serve_app  # noqa: E402
from prepnet_jax.runtime import checkpointing  # noqa: E402
from prepnet_jax.models import classifier_factory  # noqa: E402


def save_random_classifier(workdir: str, name: str, width: float, size: int) -> None:
  """A classifier run directory (config.json + best/) holding an initialised model."""
  config = classifier_config.get_config()
  config.data.train = "phantom_cxr/covidx"
  config.model.name, config.model.width_multiplier = name, width
  config.preprocess.image_size = size
  state = classifier_factory.create_classifier_state(config, classifier_factory.build_classifier(config), jax.random.key(0), 1, 1)
  checkpointing.Checkpointer(os.path.join(workdir, "best"), 1).save(1, jax.device_get(state), {})
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f, default=str)


def upload_png(size: int) -> bytes:
  image = phantom.generate_site("cxr", "covidx", seed=1, num_patients=2)["image"][0]
  buffer = io.BytesIO()
  Image.fromarray(transforms.resize(image, (size, size))).save(buffer, format="PNG")
  return buffer.getvalue()


def multipart(content: bytes, filename: str) -> tuple[bytes, str]:
  boundary = uuid.uuid4().hex
  body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{serve_app.UPLOAD_FIELD}\"; "
          f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
  body += content + f"\r\n--{boundary}--\r\n".encode()
  return body, f"multipart/form-data; boundary={boundary}"


def timed(post, uploads: int) -> dict:
  post()  # warm-up: the first request pays for any compilation left
  seconds = []
  for _ in range(uploads):
    start = time.perf_counter()
    post()
    seconds.append(time.perf_counter() - start)
  ms = 1000.0 * np.asarray(seconds)
  return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
          "p95_ms": float(np.percentile(ms, 95)), "n": uploads}


def bench(model_workdir: str, content: bytes, uploads: int) -> dict:
  start = time.perf_counter()
  predictor = inference.Predictor(model_workdir)
  predictor.warm_up()
  startup_s = time.perf_counter() - start
  app = serve_app.create_app(predictor)
  client = app.test_client()

  def post_test_client():
    response = client.post("/predict", data={serve_app.UPLOAD_FIELD: (io.BytesIO(content), "cxr.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]

  server = make_server("127.0.0.1", 0, app, threaded=True)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  body, content_type = multipart(content, "cxr.png")
  url = f"http://127.0.0.1:{server.server_port}/predict"

  def post_http():
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
      assert response.status == 200
      response.read()

  try:
    results = {"test_client": timed(post_test_client, uploads), "http": timed(post_http, uploads)}
  finally:
    server.shutdown()
    thread.join()
  return {"model": predictor.model_name, "width": predictor.config.model.get("width_multiplier"),
          "image_size": predictor.image_size, "startup_s": startup_s, **results}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_workdir", default="", help="a classifier run; default: random models")
  parser.add_argument("--models", default="resnet18:0.25,resnet50:1.0", help="name:width list")
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--uploads", type=int, default=20)
  args = parser.parse_args()
  logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access-log line per request
  content = upload_png(args.image_size)
  print(f"JAX devices: {jax.devices()}; upload: {args.image_size}² PNG, {len(content)} bytes")
  rows = []
  if args.model_workdir:
    rows.append(bench(args.model_workdir, content, args.uploads))
  else:
    for spec in args.models.split(","):
      name, _, width = spec.partition(":")
      with tempfile.TemporaryDirectory(prefix="bench_serve_") as workdir:
        save_random_classifier(workdir, name, float(width or 1.0), args.image_size)
        rows.append(bench(workdir, content, args.uploads))
  print(f"\n| model | input | startup s | test client mean / p50 / p95 ms | HTTP mean / p50 / p95 ms |")
  print("|---|---|---|---|---|")
  for r in rows:
    tc, http = r["test_client"], r["http"]
    print(f"| {r['model']} ×{r['width']} | {r['image_size']}² | {r['startup_s']:.1f} | "
          f"{tc['mean_ms']:.0f} / {tc['p50_ms']:.0f} / {tc['p95_ms']:.0f} | "
          f"{http['mean_ms']:.0f} / {http['p50_ms']:.0f} / {http['p95_ms']:.0f} |")


if __name__ == "__main__":
  main()
