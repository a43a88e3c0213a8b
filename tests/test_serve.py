"""The web page through Flask's test client: a good upload shows the predictor's probabilities
and four images; oversized, non-image, truncated and missing uploads get helpful pages; uploads
are typed by content and leave no file behind."""

from __future__ import annotations

import base64
import io
import os
import re
import tempfile

import numpy as np
import pytest
from PIL import Image
from test_predict import make_model_workdir, phantom_ct_images, png_bytes

from prepnet_jax.eval import inference
from prepnet_jax.tasks.serve import app as serve_app

LIMIT = 2 * 2**20  # above a phantom NIfTI volume (0.6 MB)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("model")
  make_model_workdir(str(workdir))
  predictor = inference.Predictor(str(workdir))
  app = serve_app.create_app(predictor, max_upload_bytes=LIMIT)
  app.testing = True
  return app, predictor


@pytest.fixture
def client(served, tmp_path, monkeypatch):
  """A test client whose uploads may only use `tmp_path/tmp` as temporary storage."""
  temp_root = tmp_path / "tmp"
  temp_root.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
  yield served[0].test_client()
  assert os.listdir(temp_root) == [], "an upload left files behind"


def _upload(client, content: bytes, name: str):
  return client.post("/predict", data={"image": (io.BytesIO(content), name)},
                     content_type="multipart/form-data")


def _page_probabilities(html: str) -> dict[str, float]:
  return {m.group(1): float(m.group(2))
          for m in re.finditer(r'data-class="([^"]+)" data-probability="([0-9.]+)"', html)}


def _data_url_images(html: str) -> list[np.ndarray]:
  return [np.asarray(Image.open(io.BytesIO(base64.b64decode(m))))
          for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_index_page_has_the_form_and_needs_nothing_from_outside(client):
  response = client.get("/")
  html = response.get_data(as_text=True)
  assert response.status_code == 200
  assert 'enctype="multipart/form-data"' in html and 'type="file"' in html and 'name="image"' in html
  assert "up to 2 MB" in html  # the upload limit is stated
  assert '<span id="calibration"' in html and ">uncalibrated</span>" in html  # no calibration.json
  assert not re.search(r"https?://|<script|<link", html)
  assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_good_upload_shows_the_predictor_probabilities_and_four_images(client, served, tmp_path):
  predictor = served[1]
  image = phantom_ct_images(1)[0]
  content = png_bytes(image)
  response = _upload(client, content, "patient 7.png")
  html = response.get_data(as_text=True)
  assert response.status_code == 200, html
  (tmp_path / "same.png").write_bytes(content)
  expected = predictor.predict_file(str(tmp_path / "same.png")).probabilities
  shown = _page_probabilities(html)
  assert list(shown) == predictor.class_names
  np.testing.assert_allclose(list(shown.values()), expected, atol=1e-6)
  assert re.search(rf"Predicted class: <strong>{predictor.class_names[int(np.argmax(expected))]}</strong>", html)
  original, model_input, overlay = _data_url_images(html)
  np.testing.assert_array_equal(original, image[..., 0])
  assert model_input.shape[:2] == (32, 32) and overlay.shape == (32, 32, 3)
  assert "patient 7.png" in html


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
def test_medical_formats_are_typed_by_content_not_by_name(client, tmp_path, kind):
  from prepnet_jax.data import export_ct, phantom
  from prepnet_jax.tasks.predict import job as predict
  study = phantom.generate_volumes("mosmed", seed=2, num_patients=1)[0]
  if kind == "dicom":
    hu = np.clip(study["volume_hu"][len(study["volume_hu"]) // 2].astype(np.int32) + 1024, 0, 4095)
    predict.write_dicom(tmp_path / "x", hu.astype(np.uint16), "CT", intercept=-1024.0, window=(-600, 1500))
  else:
    export_ct.volume_to_nifti(study["volume_hu"], study["spacing"]).to_filename(str(tmp_path / "x.nii.gz"))
    os.rename(tmp_path / "x.nii.gz", tmp_path / "x")
  response = _upload(client, (tmp_path / "x").read_bytes(), "photo.jpg")
  html = response.get_data(as_text=True)
  assert response.status_code == 200, html
  assert f"({kind}, answered in" in html
  slices = len(re.findall(r"<h2>slice \d+:", html))
  assert slices == (3 if kind == "nifti" else 0)
  assert len(_data_url_images(html)) == 3 * max(slices, 1)


def test_oversized_upload_gets_a_413_page_naming_the_limit(client):
  response = _upload(client, b"\0" * (LIMIT + 1), "huge.png")
  html = response.get_data(as_text=True)
  assert response.status_code == 413
  assert "File too large" in html and "up to 2 MB" in html and "config.max_upload_mb" in html


@pytest.mark.parametrize("content, name, message", [
    (b"just some text, not pixels\n", "notes.png", "not an image"),
    (None, "cut.png", "truncated"),
], ids=["text_named_png", "truncated_png"])
def test_bad_uploads_get_a_400_page_with_the_reason(client, content, name, message):
  if content is None:
    content = png_bytes(phantom_ct_images(1)[0])[:300]  # a truncated PNG
  response = _upload(client, content, name)
  html = response.get_data(as_text=True)
  assert response.status_code == 400
  assert "This file cannot be used" in html and message in html and name in html
  assert "prepnet_serve_" not in html  # the temporary path is not leaked
  assert 'type="file"' in html  # the form is offered again


def test_submitting_without_a_file_explains_what_to_do(client):
  response = client.post("/predict", data={}, content_type="multipart/form-data")
  assert response.status_code == 400
  assert "No file chosen" in response.get_data(as_text=True)
