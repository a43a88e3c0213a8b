"""End to end in a real headless browser: Debian's Chromium uploads an image through the page
served on 127.0.0.1 and reads the same probabilities as the predict job wrote.

Needs `chromium` and `chromium-driver` (apt); `scripts/install_test_deps.sh` (called by the
README's test command) installs them. Without them this test fails (it does not skip), so a
missing browser is never mistaken for a passing interface.
"""

from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest
from test_predict import make_model_workdir, png_bytes, predict_config
from werkzeug.serving import make_server

from prepnet_jax.data import datasets
from prepnet_jax.eval import inference
from prepnet_jax.tasks.predict import job as predict
from prepnet_jax.tasks.serve import app as serve_app

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = "/tmp/prepnet_serve_screenshot.png"


def _browser(user_data_dir: str):
  if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.fail(f"the browser test needs {CHROMIUM} and {CHROMEDRIVER}: run "
                "`apt-get update && apt-get install -y chromium chromium-driver` (scripts/install_test_deps.sh does this)")
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", "--disable-sync",
               "--window-size=1280,1100", f"--user-data-dir={user_data_dir}"):
    options.add_argument(flag)
  return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def server(tmp_path):
  """The app on a free 127.0.0.1 port in a thread: (url, model workdir)."""
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  make_model_workdir(str(model_dir), **{"data.train": "phantom_cxr/covidx"})
  predictor = inference.Predictor(str(model_dir))
  predictor.warm_up()
  httpd = make_server("127.0.0.1", 0, serve_app.create_app(predictor), threaded=True)
  thread = threading.Thread(target=httpd.serve_forever, daemon=True)
  thread.start()
  yield f"http://127.0.0.1:{httpd.server_port}/", model_dir
  httpd.shutdown()
  thread.join(timeout=10)


def test_browser_upload_shows_the_predict_job_probabilities(server, tmp_path):
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support import expected_conditions
  from selenium.webdriver.support.ui import WebDriverWait

  url, model_dir = server
  image = datasets.get_source("phantom_cxr/covidx", "all", {"phantom_overrides": {"num_patients": 4}})[0]["image"]
  upload = tmp_path / "chest x-ray.png"
  upload.write_bytes(png_bytes(image))
  predict.run(predict_config(model_dir, str(upload)), str(tmp_path / "job"))
  with open(tmp_path / "job" / "predictions" / "chest_x-ray.json") as f:
    job = json.load(f)["probabilities"]

  profile = tmp_path / "chromium-profile"
  driver = _browser(str(profile))
  try:
    driver.get(url)
    assert "COVID-19 chest image classifier" in driver.page_source
    driver.find_element(By.ID, "image").send_keys(str(upload))
    driver.find_element(By.ID, "submit").click()
    WebDriverWait(driver, 60).until(expected_conditions.presence_of_element_located((By.ID, "file-probabilities")))
    cells = driver.find_elements(By.CSS_SELECTOR, "#file-probabilities td.prob")
    shown = {c.get_attribute("data-class"): float(c.get_attribute("data-probability")) for c in cells}
    verdict = driver.find_element(By.ID, "verdict").text
    images = driver.find_elements(By.CSS_SELECTOR, "figure img")
    loaded = [driver.execute_script("return arguments[0].naturalWidth", img) for img in images]
    driver.save_screenshot(SCREENSHOT)
  finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
  assert list(shown) == list(job)
  np.testing.assert_allclose(list(shown.values()), list(job.values()), atol=1e-6)
  assert max(job, key=job.get) in verdict
  assert loaded == [image.shape[1], 32, 32]  # original, model input, Grad-CAM: all decoded
  assert os.path.getsize(SCREENSHOT) > 10_000
