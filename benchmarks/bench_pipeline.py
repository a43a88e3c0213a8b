"""Input-pipeline throughput against the train step's appetite: which one limits training?

  python benchmarks/bench_pipeline.py                        # 224² and 480², 256 files: 5 CPU-minutes
  python benchmarks/bench_pipeline.py --quick                # 64², a few files (the test runs this)
  python benchmarks/bench_pipeline.py --sizes 224 --images 1024 --threads 2,8 --processes 0,4

Two folders of files are written to a temporary directory and read back through the loader the
jobs use (`datasets.get_source('folder:<path>', 'train')` -> `image_folder.ImageFolderSource`,
`pipeline.train_dataset`, `pipeline.make_iterator` with `pipeline.LoaderOptions`):
- the built-in phantom's 'sars' CT site exported by `export_ct.export_sars_layout`
  (`COVID/`, `non-COVID/`, grayscale PNGs of its native ~128² with size jitter);
- `--images` synthetic JPEGs of `--jpeg_size`² (grayscale like chest X-rays, `--jpeg_mode RGB` for
  colour files), one patient per file, in the same class folders.
Every image is decoded, preprocessed and augmented per example: configs/classifier.py's
`preprocess` at the row's size with augmentation on (resize to size·240/224 + margin crop, hflip,
affine ±10° / 6 % / 10 %, brightness and contrast ±20 %), `transforms.make_preprocess(training=True)`.
Files sit in the page cache after the first pass: the rows time decoding and preprocessing, not
the disk.

A row: a fresh iterator with (read threads, worker processes, prefetch batches); its first batch
(the worker processes' start is in it: "first batch (s)"), warm-up batches until everything its
buffers made ahead is taken out (`--warmup`, default buffered + 1), then `--batches` batches timed
end to end -> images/s. Nothing else runs meanwhile, so this is what the loader can deliver.
Peak RSS: this process's peak so far (`resource.getrusage`, a lifetime maximum: rows run in
increasing size, the train steps last) and, with worker processes, the sum of the workers' peaks
(VmHWM from /proc, Linux only). `load` is the 1-minute load average after the row: above the CPU
count, other work shared the cores and the row's rate is low by about that factor.

The consumer: `tasks.classifier.train.train_step` on `--model` (ResNet18) at the same size and
batch, timed as benchmarks/bench_classifiers.py does (compiled ahead of time, median of `--steps`).
The summary line per size names the bottleneck: the slower of the train step and the loader at
the default `LoaderOptions()`, with the best loader setting beside it. On a CPU-only machine both
share the same cores, so a fed train step runs slower than either number alone.

What it gave (2 CPU cores, load 1.1 rising to 4 as the larger rows ran, 2026-12-06): the ResNet18
train step takes 9.5 img/s at 224² and 1.9 at 480² (batch 16); the loader at its default options
(2 threads, no worker process) delivers 359 / 237 img/s (phantom PNG / 512² JPEG) at 224² and
100 / 83 at 480²: on CPU the train step is the bottleneck by 25-53x. 2 threads beat 1 by 1.6-2x
(2 cores); 4 threads add nothing. Two worker processes help a little at 224² (407 / 270 img/s) and
cost ~2 s to start and ~260 MB each; at 480² threads alone are as fast. Rows spread by up to 2x
between runs on a shared machine: compare within one invocation.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import pathlib
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from configs import classifier as classifier_config  # noqa: E402
from prepnet_jax.data import datasets, export_ct, pipeline, transforms  # noqa: E402
from prepnet_jax.runtime import jax_settings, sharding  # noqa: E402

PHANTOM_SLICES_PER_PATIENT = 8  # the 'sars' site's (phantom/sites.py)
COLUMNS = ("size", "data", "read threads", "worker processes", "prefetch", "warm-up batches", "img/s", "ms/batch",
           "first batch (s)", "peak RSS (MB)", "workers' peak RSS (MB)", "load")


def preprocess_config(size: int):
  """configs/classifier.py's preprocessing at `size`² with every classical augmentation on."""
  p = classifier_config.get_config().preprocess
  p.image_size = size
  margin = max(1, size // 56)  # 224 -> 4 px, as the thesis' 240 -> 224 crop
  p.augment.update(crop_resize=max(round(size * 240 / 224), size + 2 * margin), crop_margin=margin,
                   hflip=True, affine_degrees=10.0, affine_translate=0.06, affine_scale=0.1,
                   brightness=0.2, contrast=0.2)
  return p


def write_jpegs(root: pathlib.Path, count: int, size: int, mode: str, seed: int = 0) -> pathlib.Path:
  """`count` smooth, noisy JPEGs (quality 90) in root/COVID and root/non-COVID, one patient each."""
  rng = np.random.default_rng(seed)
  ramp = np.linspace(40.0, 200.0, size)[None, :, None]
  for i in range(count):
    coarse = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
    pixels = 0.5 * ramp + 0.4 * np.asarray(coarse, np.float32) + rng.normal(0, 8, (size, size, 1))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    folder = root / ("COVID" if i % 2 else "non-COVID")
    folder.mkdir(parents=True, exist_ok=True)
    (image.convert("L") if mode == "L" else image).save(folder / f"patient{i:05d}.jpg", quality=90)
  return root


def worker_peak_rss_mb() -> float | None:
  """Sum of the live multiprocessing children's peak RSS (VmHWM), or None without them or /proc."""
  total, found = 0.0, False
  for child in multiprocessing.active_children():
    try:
      with open(f"/proc/{child.pid}/status") as f:
        total += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
        found = True
    except (OSError, StopIteration):
      continue
  return total if found else None


def buffered_batches(options: pipeline.LoaderOptions) -> int:
  """How many batches the loader can hold ready: its read-ahead of `prefetch_batches` batches of
  examples, and with worker processes that again per worker in each worker's output buffer."""
  if options.worker_processes:
    return 2 * options.prefetch_batches * options.worker_processes
  return options.prefetch_batches


def time_loader(source, preprocess, size: int, batch: int, options: pipeline.LoaderOptions,
                warmup: int | None, batches: int) -> dict:
  """Images/s of a fresh iterator once its buffers are drained, and how long its first batch took.

  The warm-up (default: every batch the buffers can hold, + 1) takes out what was made ahead while
  the first batch was awaited (worker processes start in seconds, then fill their buffers): from
  then on every `next` waits for new work, so the timed batches measure the production rate.
  """
  warmup = buffered_batches(options) + 1 if warmup is None else max(1, warmup)
  dataset = pipeline.train_dataset(source, preprocess, batch, seed=0)
  start = time.perf_counter()
  iterator = pipeline.make_iterator(dataset, options=options)
  try:
    next(iterator)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
      next(iterator)
    # Grain may hold more than `buffered_batches` ready (its own read-ahead): time at least twice
    # that many and keep the rate of the second half, when every `next` waits for new work.
    timed = max(batches, 2 * buffered_batches(options))
    stamps = [time.perf_counter()]
    for _ in range(timed):
      out = next(iterator)
      stamps.append(time.perf_counter())
    half = timed // 2
    elapsed = (stamps[-1] - stamps[timed - half]) * batches / half
    if out["image"].shape != (batch, size, size, 3):
      raise AssertionError(f"loader made images of shape {out['image'].shape}, expected {(batch, size, size, 3)}")
    workers_mb = worker_peak_rss_mb() if options.worker_processes else None
  finally:
    if hasattr(iterator, "close"):
      iterator.close()
  return dict(img_s=batches * batch / elapsed, ms_batch=1e3 * elapsed / batches, first_s=first,
              warmup=warmup, rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              workers_mb=workers_mb, load=os.getloadavg()[0])


def bottleneck_line(size: int, batch: int, train: dict, rows: list[dict]) -> str:
  """One sentence per data set: which side is slower and by how much."""
  default = pipeline.LoaderOptions()
  parts = []
  for data in dict.fromkeys(r["data"] for r in rows):
    mine = [r for r in rows if r["data"] == data]
    best = max(mine, key=lambda r: r["img_s"])
    base = next((r for r in mine if (r["threads"], r["processes"]) == (default.read_threads, default.worker_processes)),
                best)
    slower = "input pipeline" if base["img_s"] < train["img_s"] else "train step"
    parts.append(f"{data}: **{slower}** (loader {base['img_s']:.0f} img/s at {base['threads']} threads/"
                 f"{base['processes']} processes, best {best['img_s']:.0f} at {best['threads']}/{best['processes']}, "
                 f"vs train step {train['img_s']:.1f} img/s: loader/step = {base['img_s'] / train['img_s']:.1f}x)")
  return f"- {size}², batch {batch}: " + "; ".join(parts)


def main(argv=None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="a smoke test: 64² only, 48 files, batch 8, 1-2 threads, 3 timed batches, 1 step")
  parser.add_argument("--sizes", default=None, help="comma-separated image sizes (default 224,480; --quick 64)")
  parser.add_argument("--images", type=int, default=None, help="files per data set (default 256; --quick 48)")
  parser.add_argument("--batch", type=int, default=None, help="global batch (default 16; --quick 8)")
  parser.add_argument("--batches", type=int, default=None, help="timed batches per row (default 12; --quick 3)")
  parser.add_argument("--warmup", type=int, default=None,
                      help="untimed batches per row (default: as many as the loader buffers, + 1)")
  parser.add_argument("--threads", default=None, help="read threads to try (default 1,2,4; --quick 1,2)")
  parser.add_argument("--processes", default="0,2", help="worker processes to try")
  parser.add_argument("--prefetch", type=int, default=pipeline.LoaderOptions().prefetch_batches)
  parser.add_argument("--model", default="resnet18", help="the consumer's classifier")
  parser.add_argument("--steps", type=int, default=None, help="timed train steps (default 2; --quick 1)")
  parser.add_argument("--jpeg_size", type=int, default=512)
  parser.add_argument("--jpeg_mode", default="L", choices=("L", "RGB"))
  args = parser.parse_args(argv)
  quick = args.quick
  sizes = [int(s) for s in (args.sizes or ("64" if quick else "224,480")).split(",")]
  images = args.images or (48 if quick else 256)
  batch = args.batch or (8 if quick else 16)
  batches = args.batches or (3 if quick else 12)
  steps = args.steps or (1 if quick else 2)
  threads = [int(x) for x in (args.threads or ("1,2" if quick else "1,2,4")).split(",")]
  settings = [(t, p) for p in (int(x) for x in args.processes.split(",")) for t in threads]

  jax_settings.configure()

  start_load = os.getloadavg()
  print(f"bench_pipeline: {jax.devices()[0].device_kind} ×{len(jax.devices())}, {len(os.sched_getaffinity(0))} CPUs, "
        f"load average {tuple(round(x, 2) for x in start_load)}; batch {batch}, "
        f"{'buffered + 1' if args.warmup is None else args.warmup} warm-up + {batches} timed batches per row",
        flush=True)
  rows, train = [], {}
  with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
    tmp = pathlib.Path(tmp)
    t = time.perf_counter()
    phantom_dir = export_ct.export_sars_layout(
        tmp / "phantom_sars", num_patients=max(2, math.ceil(images / PHANTOM_SLICES_PER_PATIENT)))
    jpeg_dir = write_jpegs(tmp / "jpeg", images, args.jpeg_size, args.jpeg_mode)
    sources = {}
    for label, folder in (("phantom sars PNG ~128²", phantom_dir),
                          (f"JPEG {args.jpeg_size}² {args.jpeg_mode}", jpeg_dir)):
      source = datasets.get_source(f"folder:{folder}", "train", None)
      sources[f"{label} ({len(source)} train files)"] = source
    print(f"wrote and indexed the files in {time.perf_counter() - t:.1f} s: {', '.join(sources)}", flush=True)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    for size in sorted(sizes):
      preprocess = transforms.make_preprocess(preprocess_config(size), training=True)
      for data, source in sources.items():
        for threads, processes in settings:
          options = pipeline.LoaderOptions(threads, processes, args.prefetch)
          r = time_loader(source, preprocess, size, batch, options, args.warmup, batches)
          r.update(size=size, data=data, threads=threads, processes=processes, prefetch=args.prefetch)
          rows.append(r)
          workers = "–" if r["workers_mb"] is None else f"{r['workers_mb']:.0f}"
          print(f"| {size} | {data} | {threads} | {processes} | {args.prefetch} | {r['warmup']} | {r['img_s']:.1f} | "
                f"{r['ms_batch']:.1f} | {r['first_s']:.2f} | {r['rss_mb']:.0f} | {workers} | {r['load']:.1f} |",
                flush=True)
  # Imported here, not above: grain's spawned workers re-import this script's top level, and a
  # job's workers (main.py's top level imports absl only) do not load the models either.
  from benchmarks import bench_classifiers
  mesh = sharding.make_mesh()
  for size in sorted(sizes):
    r = bench_classifiers.bench(args.model, size, batch, steps, 1.0, mesh)
    train[size] = r
    # ms/batch = ms/step; the first call's column holds the ahead-of-time compile.
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| {size} | train step {args.model} (consumer) | – | – | – | 1 | {r['img_s']:.1f} | "
          f"{r['ms_step']:.1f} | {r['compile_s']:.2f} (compile) | {rss_mb:.0f} | – | {os.getloadavg()[0]:.1f} |",
          flush=True)
  print(f"\nBottleneck (load average {tuple(round(x, 2) for x in os.getloadavg())} at the end):")
  for size in sorted(sizes):
    print(bottleneck_line(size, batch, train[size], [r for r in rows if r["size"] == size]), flush=True)
  return rows + [dict(size=s, data=f"train step {args.model}", **{k: v for k, v in r.items() if k != "size"})
                 for s, r in train.items()]


if __name__ == "__main__":
  main()
