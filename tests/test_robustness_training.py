"""Folder training reads the robustness corpus (tests/test_robustness_predict.py) by predict's rules
(issue #17): indexing a class folder that holds every bad case next to good files raises nothing,
every image-named entry predict accepts is a training example, and every one predict refuses
(truncated, lying headers, odd sizes, a FIFO, a broken link...) is skipped with the same reason."""

from __future__ import annotations

import numpy as np
from PIL import Image

from prepnet_jax.data import readers
from prepnet_jax.data.image_folder import IMAGE_EXTENSIONS, ImageFolderSource
from test_robustness_predict import build_corpus


def test_a_class_folder_holding_the_corpus_is_indexed_as_predict_reads_it(tmp_path):
  cases = build_corpus(tmp_path / "COVID")
  (tmp_path / "non-COVID").mkdir()
  rng = np.random.default_rng(0)
  for i in range(3):
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(tmp_path / "non-COVID" / f"n{i}.png")

  source = ImageFolderSource(tmp_path, class_names=("non-COVID", "COVID"), read_options=readers.ReadOptions())

  skipped = dict(source.skipped)
  indexed = set(source.files)
  named_like_images = {n: e for n, e in cases.items()
                       if n.lower().endswith(IMAGE_EXTENSIONS) and not any(p.startswith(".") for p in n.split("/"))}
  checked = {"ok": 0, "failed": 0}
  for name, expect in named_like_images.items():
    relative, path = f"COVID/{name}", str(tmp_path / "COVID" / name)
    if expect.status == "ok":
      assert relative in indexed, (name, skipped.get(path))
      checked["ok"] += 1
    elif expect.status == "failed":
      assert relative not in indexed, name
      assert path in skipped, name
      assert all(text in skipped[path] for text in expect.texts), (name, skipped[path], expect.texts)
      checked["failed"] += 1
  assert {f"non-COVID/n{i}.png" for i in range(3)} <= indexed
  # The corpus exercises both sides, FIFOs and broken links included.
  assert checked["ok"] >= 10 and checked["failed"] >= 20, checked
  assert any("FIFO" in reason for reason in skipped.values())
  assert any("link" in reason for reason in skipped.values())
