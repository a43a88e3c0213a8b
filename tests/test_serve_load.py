"""Serve under load (issue #17, items 6 and 7): bounded concurrent predictions, the decoded-pixel
limit read from the header, a per-request time limit, a reason on every failure, no server path or
library version in any answer, `Cache-Control: no-store` everywhere, and a peak memory bound.

The in-process tests drive the Flask app with a predictor held at a gate, so a slow prediction is
certain rather than timed. The load test starts `main.py --config=configs/serve.py` (waitress) on
127.0.0.1 in a subprocess and sends one burst of 18 concurrent uploads: 8000×8000 PNGs (80 KB on
disk, 64 Mpx decoded), 3000×3000 PNGs, phantom CT PNGs and a CT DICOM with a non-numeric
WindowCenter, against 2 prediction slots and a 0.5 s queue wait (so some are told to come back)."""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import io
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import psutil
import pytest
from PIL import Image
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from test_predict import make_model_workdir, phantom_ct_images, png_bytes

from helpers import REPO
from prepnet_jax.data import export_ct, phantom
from prepnet_jax.eval import inference
from prepnet_jax.tasks.predict import job as predict
from prepnet_jax.tasks.serve import app as serve_app

# Peak RSS of the serving process over startup and the burst. Measured on 2 shared CPU cores:
# 0.51–0.63 GB (idle after startup 0.45 GB); with the pixel limit raised and 8 slots, 4 uploads of
# 8000×8000 and 6 of 3000×3000 px peaked at 1.9 GB (one 8000² decode adds ≈ 1 GB). Bound: the
# measured 0.63 GB + 30 %.
PEAK_RSS_BOUND_MB = 820
HUGE_REASON = "huge.png: image is 8000×8000 = 64000000 px; at most 25000000 pixels are decoded (config.max_pixels)"
LEAKS = ("/work", "/tmp", "Python/", "Werkzeug/", "waitress/", "Traceback", "prepnet_serve_")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
  workdir = str(tmp_path_factory.mktemp("model"))
  make_model_workdir(workdir)
  return workdir


@pytest.fixture(scope="module")
def uploads(tmp_path_factory) -> dict[str, bytes]:
  """name → file content: small-on-disk huge images, large allowed ones, good ones, a broken DICOM."""
  folder = tmp_path_factory.mktemp("uploads")
  buffer = io.BytesIO()
  Image.linear_gradient("L").resize((8000, 8000)).save(buffer, format="PNG", optimize=True)
  files = {"huge.png": buffer.getvalue()}
  noise = np.random.default_rng(0).integers(0, 256, (375, 375), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(noise).resize((3000, 3000), Image.NEAREST).save(buffer, format="PNG")
  files["large.png"] = buffer.getvalue()
  for k, image in enumerate(phantom_ct_images(3)):
    files[f"ct{k}.png"] = png_bytes(image)
  hu = phantom_ct_images(1)[0][..., 0].astype(np.uint16) * 8  # any CT slice: the window is the point
  predict.write_dicom(folder / "good.dcm", hu, "CT", intercept=-1024.0, window=(40, 400))
  import pydicom
  ds = pydicom.dcmread(folder / "good.dcm")
  # A value pydicom refuses to write through its API: set the raw bytes, as a broken scanner does.
  ds[0x00281050] = RawDataElement(Tag(0x00281050), "DS", 4, b"abc ", 0, False, True)
  ds.save_as(folder / "bad_window.dcm")
  files["bad_window.dcm"] = (folder / "bad_window.dcm").read_bytes()
  assert len(files["huge.png"]) < 200_000
  return files


def _check_clean(status: int, headers, body: str) -> None:
  """Every answer: no-store, a reason when it is an error, nothing that names the server's insides."""
  assert headers.get("Cache-Control") == "no-store", (status, dict(headers))
  assert headers.get("Server", "prepnet_jax") == "prepnet_jax", dict(headers)
  # Inline PNGs are base64, whose alphabet can spell '/tmp' by chance: they are not text.
  text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", body) + "\n".join(f"{k}: {v}" for k, v in headers.items())
  assert not [leak for leak in LEAKS if leak in text], (status, [leak for leak in LEAKS if leak in text], body[-2000:])
  if status >= 400:
    assert re.search(r'<div class="error" id="error">\s*<h2>[^<]+</h2>\s*<p>[^<]{20,}</p>', body), body[-2000:]


def _probabilities(html: str) -> np.ndarray:
  return np.asarray([float(p) for p in re.findall(r'data-probability="([0-9.]+)"', html)])


def _check_broken_dicom(status: int, body: str) -> None:
  """The non-numeric WindowCenter of a CT slice (whose header window is not used): a prediction
  with a warning naming the value."""
  assert status == 200, body[-2000:]
  warnings = re.search(r'<div class="warning" id="reading-warnings">(.*?)</div>', body, re.S)
  assert warnings and "WindowCenter = &#39;abc&#39; is not a number" in warnings.group(1), body[-3000:]


# --- in process: the slot accounting, the time limit, unexpected failures ---------------------------

@pytest.fixture(scope="module")
def predictor(model_dir) -> inference.Predictor:
  served = inference.Predictor(model_dir)
  served.warm_up()
  return served


class _Gated:
  """The predictor, whose predictions wait for `gate` (or fail with `error`)."""

  def __init__(self, predictor: inference.Predictor, error: Exception | None = None):
    self.predictor, self.error = predictor, error
    self.gate, self.started = threading.Event(), threading.Event()

  def __getattr__(self, name):
    return getattr(self.predictor, name)

  def predict_file(self, path):
    self.started.set()
    if self.error is not None:
      raise self.error
    assert self.gate.wait(60)
    return self.predictor.predict_file(path)


@pytest.fixture
def temp_root(tmp_path, monkeypatch):
  """Uploads may only use `tmp_path/tmp` as temporary storage (checked empty by the tests)."""
  root = tmp_path / "tmp"
  root.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(root))
  return root


def _post(client, content: bytes, name: str):
  response = client.post("/predict", data={"image": (io.BytesIO(content), name)}, content_type="multipart/form-data")
  return response.status_code, response.headers, response.get_data(as_text=True)


def _wait_until(condition, seconds: float = 30.0) -> None:
  end = time.monotonic() + seconds
  while not condition():
    assert time.monotonic() < end, "timed out"
    time.sleep(0.02)


def test_a_late_prediction_is_answered_503_and_holds_its_slot_until_it_ends(predictor, uploads, temp_root):
  gated = _Gated(predictor)
  app = serve_app.create_app(gated, max_concurrent=1, queue_timeout_s=0.3, request_timeout_s=0.5)
  slots = app.extensions["prediction_slots"]
  client = app.test_client()

  status, headers, body = _post(client, uploads["ct0.png"], "slow.png")
  assert status == 503 and headers["Retry-After"] == "1", body
  assert "Prediction took too long" in body and "within 0.5 s (config.request_timeout_s)" in body
  _check_clean(status, headers, body)
  assert slots.running == 1 and os.listdir(temp_root)  # still running: slot and upload kept

  start = time.monotonic()
  status, headers, body = _post(client, uploads["ct1.png"], "next.png")
  assert status == 503 and headers["Retry-After"] == "1" and time.monotonic() - start >= 0.3
  assert "Server busy" in body and "config.max_concurrent" in body and "next.png was not read" in body
  _check_clean(status, headers, body)

  # A file refused from its header is answered without a slot: the only one is still taken, and
  # waiting for it would have ended in 503.
  status, headers, body = _post(client, uploads["huge.png"], "huge.png")
  assert status == 400 and HUGE_REASON in body, body[-1500:]
  _check_clean(status, headers, body)
  assert slots.running == 1 and len(os.listdir(temp_root)) == 1  # the late prediction's upload only

  gated.gate.set()  # the late prediction ends: its slot and its upload are freed
  _wait_until(lambda: slots.running == 0)
  _wait_until(lambda: not os.listdir(temp_root))
  status, headers, body = _post(client, uploads["ct1.png"], "next.png")
  assert status == 200, body
  _check_clean(status, headers, body)
  (temp_root / "direct.png").write_bytes(uploads["ct1.png"])
  np.testing.assert_allclose(_probabilities(body), predictor.predict_file(str(temp_root / "direct.png")).probabilities,
                             atol=1e-6)
  os.remove(temp_root / "direct.png")
  assert os.listdir(temp_root) == []


def test_an_unexpected_failure_is_a_page_with_a_reason_and_no_server_path(predictor, uploads, temp_root):
  failing = _Gated(predictor, RuntimeError(f"cannot map {temp_root}/x with libfoo/1.2.3 from /work/lib/foo.so"))
  client = serve_app.create_app(failing).test_client()
  status, headers, body = _post(client, uploads["ct0.png"], "scan.png")
  assert status == 500 and "Prediction failed" in body and "scan.png" in body and "RuntimeError" in body
  assert "libfoo" not in body  # the exception's text stays in the server log
  _check_clean(status, headers, body)
  assert client.application.extensions["prediction_slots"].running == 0 and os.listdir(temp_root) == []
  for path in ("/", "/nowhere"):
    response = client.get(path)
    _check_clean(response.status_code, response.headers, response.get_data(as_text=True))
  assert client.get("/nowhere").status_code == 404


def test_the_reading_limits_refuse_from_the_header_with_the_reason(predictor, uploads, temp_root, tmp_path):
  study = phantom.generate_volumes("mosmed", seed=2, num_patients=1)[0]
  export_ct.volume_to_nifti(study["volume_hu"], study["spacing"]).to_filename(str(tmp_path / "v.nii.gz"))
  strict = copy.copy(predictor)  # the same model, with config.max_pixels = 1600 and max_voxels = 10⁴
  strict.options = dataclasses.replace(predictor.options, max_pixels=40 * 40, max_voxels=10_000)
  client = serve_app.create_app(strict).test_client()
  assert "up to 64 MB and 0.0016 megapixels" in client.get("/").get_data(as_text=True)
  for content, name, expected in (
      ((tmp_path / "v.nii.gz").read_bytes(), "volume.nii.gz", "(config.max_voxels)"),
      (uploads["bad_window.dcm"], "slice.dcm", "48×48 = 2304 px; at most 1600 pixels are decoded (config.max_pixels)"),
      (uploads["ct0.png"], "slice.png", "48×48 = 2304 px; at most 1600 pixels are decoded (config.max_pixels)")):
    status, headers, body = _post(client, content, name)
    assert status == 400 and "This file cannot be used" in body and f"<p>{name}: " in body, body[-1500:]
    assert expected in body, body[-1500:]
    _check_clean(status, headers, body)
  assert os.listdir(temp_root) == []


# --- a real server under a burst of uploads ------------------------------------------------------

class _Server:
  """`main.py --config=configs/serve.py` in a subprocess, its output kept for failure messages."""

  def __init__(self, model_dir: str, workdir: str, *overrides: str):
    command = [sys.executable, os.path.join(REPO, "main.py"), f"--config={os.path.join(REPO, 'configs', 'serve.py')}",
               f"--workdir={workdir}", f"--config.model_workdir={model_dir}", "--config.port=0", *overrides]
    self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=dict(os.environ, PYTHONPATH=REPO))
    self.lines: list[str] = []
    self.url = None
    started = threading.Event()

    def read():
      for line in self.process.stdout:
        self.lines.append(line)
        found = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
        if found:
          self.url = found.group(1)
          started.set()
      started.set()

    threading.Thread(target=read, daemon=True).start()
    started.wait(180)
    assert self.url, "the server did not start:\n" + "".join(self.lines[-40:])

  def post(self, content: bytes, name: str) -> tuple[int, dict, str]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(self.url + "predict", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
      with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as e:
      return e.code, dict(e.headers), e.read().decode()

  def peak_rss_mb(self) -> float:
    """The kernel's high-water mark of the server's resident memory (it misses no spike)."""
    with open(f"/proc/{self.process.pid}/status") as f:
      return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024

  def stop(self) -> None:
    self.process.terminate()
    try:
      self.process.wait(20)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()


def test_concurrent_uploads_to_waitress_stay_bounded_and_answer_each_with_a_reason(model_dir, uploads, tmp_path):
  server = _Server(model_dir, str(tmp_path / "serve"), "--config.server=waitress", "--config.max_concurrent=2",
                   "--config.queue_timeout_s=0.5")
  try:
    assert "[serve] waitress, 8 threads, 2 prediction(s) at once" in "".join(server.lines)
    memory = psutil.Process(server.process.pid)
    idle_mb = memory.memory_info().rss / 2**20
    # One at a time first: the answers the burst must reproduce.
    single = {}
    for name in ("ct0.png", "ct1.png", "ct2.png", "bad_window.dcm", "huge.png"):
      single[name] = server.post(uploads[name], name)
      _check_clean(*single[name])
    for name in ("ct0.png", "ct1.png", "ct2.png"):
      assert single[name][0] == 200, single[name][2][-1500:]
    _check_broken_dicom(single["bad_window.dcm"][0], single["bad_window.dcm"][2])
    assert single["huge.png"][0] == 400 and HUGE_REASON in single["huge.png"][2], single["huge.png"][2][-1500:]

    names = ["huge.png"] * 4 + ["large.png"] * 8 + ["ct0.png", "ct1.png", "ct2.png", "ct0.png"] + ["bad_window.dcm"] * 2
    sampled, done = [0], threading.Event()

    def sample():
      while not done.is_set():
        sampled[0] = max(sampled[0], memory.memory_info().rss)
        time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    barrier = threading.Barrier(len(names))

    def send(name):
      barrier.wait()
      start = time.monotonic()
      return (*server.post(uploads[name], name), time.monotonic() - start)

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
      answers = list(pool.map(send, names))
    done.set()
    sampler.join()
    statuses = [answer[0] for answer in answers]
    for name, (status, headers, body, seconds) in zip(names, answers):
      _check_clean(status, headers, body)
      if status == 503:  # over capacity: told when to come back, and why
        assert headers["Retry-After"] == "1" and "Server busy" in body and name in body
      elif name == "huge.png":
        assert status == 400 and HUGE_REASON in body, body[-1500:]
      elif name == "bad_window.dcm":
        _check_broken_dicom(status, body)
        assert status == single[name][0]
      else:
        assert status == 200, body[-1500:]
        if name != "large.png":
          np.testing.assert_allclose(_probabilities(body), _probabilities(single[name][2]), atol=1e-6)
    # 14 predictions against 2 slots and a 0.5 s wait: 8 of 3000² px alone take longer than that.
    assert statuses.count(503) >= 1, statuses
    assert any(status == 200 for name, status in zip(names, statuses) if name == "large.png"), statuses

    # The slots were all released: one at a time, every good upload is answered again, the same.
    for name in ("ct0.png", "ct1.png", "ct2.png"):
      status, headers, body = server.post(uploads[name], name)
      assert status == 200
      np.testing.assert_allclose(_probabilities(body), _probabilities(single[name][2]), atol=1e-6)
    peak_mb = max(sampled[0] / 2**20, server.peak_rss_mb())
    print(f"serve under load: idle RSS {idle_mb:.0f} MB, peak RSS {peak_mb:.0f} MB "
          f"(bound {PEAK_RSS_BOUND_MB} MB); {list(zip(names, statuses))}")
    assert peak_mb < PEAK_RSS_BOUND_MB, (idle_mb, peak_mb)
  finally:
    server.stop()
  assert server.process.returncode is not None
