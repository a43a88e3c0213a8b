"""Throughput of the built-in phantom: every default site of both modalities.

    python benchmarks/bench_phantom.py                     # one process
    python benchmarks/bench_phantom.py --processes 2       # sites spread over 2 cores
    python benchmarks/bench_phantom.py --grid /tmp/sheet   # also /tmp/sheet_ct.png, /tmp/sheet_cxr.png

Budget: all six default sites (946 CT slices, 700 X-rays) in <= 60 s on 2 cores. Measured
on a 2-core machine shared with other jobs: ~13 CPU-seconds in all (CT ~330 slices/s, CXR
~70 images/s per core); 32 s wall in one process at load average 12, so a few seconds idle.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prepnet_jax.data import phantom  # noqa: E402


def _time_site(job: tuple[str, str, dict]) -> tuple[str, str, tuple, float, float]:
  modality, site, overrides = job
  start, cpu = time.perf_counter(), time.process_time()
  images = phantom.generate_site(modality, site, **overrides)["image"]
  return modality, site, images.shape, time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--processes", type=int, default=1, help="worker processes (sites run in parallel)")
  parser.add_argument("--num_patients", type=int, default=None, help="override every site's patient count")
  parser.add_argument("--grid", default=None, help="write contact sheets <GRID>_ct.png and <GRID>_cxr.png")
  args = parser.parse_args()
  overrides = {} if args.num_patients is None else {"num_patients": args.num_patients}
  jobs = [("ct", s, overrides) for s in phantom.CT_SITES] + [("cxr", s, overrides) for s in phantom.CXR_SITES]
  start = time.perf_counter()
  if args.processes > 1:
    with ProcessPoolExecutor(args.processes) as pool:
      results = list(pool.map(_time_site, jobs))
  else:
    results = [_time_site(job) for job in jobs]
  total = time.perf_counter() - start

  print(f"{'modality':<8} {'site':<10} {'images':>6} {'shape':>14} {'wall s':>7} {'cpu s':>6} {'img/s':>7}")
  per_modality = {"ct": [0, 0.0], "cxr": [0, 0.0]}
  for modality, site, shape, wall, cpu in results:
    per_modality[modality][0] += shape[0]
    per_modality[modality][1] += cpu
    print(f"{modality:<8} {site:<10} {shape[0]:>6} {'x'.join(map(str, shape[1:])):>14} {wall:>7.2f} {cpu:>6.2f} "
          f"{shape[0] / wall:>7.1f}")
  (ct_n, ct_cpu), (cxr_n, cxr_cpu) = per_modality["ct"], per_modality["cxr"]
  print(f"CT slices/s (per core, cpu time): {ct_n / ct_cpu:.1f}   CXR images/s (per core): {cxr_n / cxr_cpu:.1f}")
  print(f"total: {ct_n + cxr_n} images in {total:.1f} s wall with {args.processes} process(es)")

  start = time.perf_counter()
  volumes = phantom.generate_volumes("mosmed", **overrides)
  seconds = time.perf_counter() - start
  print(f"mosmed volumes (NIfTI export): {len(volumes)} in {seconds:.1f} s ({len(volumes) / seconds:.1f} volumes/s)")

  if args.grid:
    for modality in ("ct", "cxr"):
      path = f"{args.grid}_{modality}.png"
      phantom.contact_sheet(modality, path)
      print(f"wrote {path}")


if __name__ == "__main__":
  main()
