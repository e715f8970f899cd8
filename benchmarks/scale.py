"""Convert and cache preparation at the real cohort's size, beside the floor of the same files.

    python benchmarks/scale.py [--patients 8] [--workers 1,2] [--workdir DIR] [--json out.json]

Generates `--patients` synthetic patients with ``preset=fullsize`` (four DICOM series each at
the real cohort's matrix and slice counts: ~600 files, ~150 MB per patient), then times, with
1 and 2 worker processes:

- the floor: reading every file's bytes, and pydicom decoding every file (``dcmread`` +
  ``pixel_array``), split over the same number of processes;
- ``radiogenomics convert`` (DICOM to NIfTI, every series);
- cache preparation (all four sequences at 2 mm, 64^3: the DICOM read, resampling,
  cropping and the float16 cache entry);

each in a fresh process, whose peak resident memory (the largest of its processes: the
per-worker peak) is read from the operating system. The files were just written, so they are
read from the page cache in every measurement alike (a cold disk adds its own read time to
each). The table projects the time for the RSNA training cohort (585 patients, 119 GB) from
the measured MB/s on 2 cores, and on 16 cores from the 1-worker rate and the 2-worker
parallel efficiency (a projection, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RSNA_PATIENTS = 585
RSNA_BYTES = 137e9 * 585 / 672
"""The training part of the 137 GB RSNA cohort (585 of its 672 patients)."""


_PEAK = """
import resource
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
result["peak_mb"] = max(own, workers) / 1024
print(json.dumps(result))
"""
"""Appended to each timed snippet: the largest peak resident memory of its processes (the
process itself when it works alone, else the largest of its pool's workers, which the pool
has joined by then)."""


def _child(code: str) -> dict[str, Any]:
    """Run `code` (which leaves its figures in `result`) in a fresh Python; its figures and
    peak memory per worker."""
    out = subprocess.run([sys.executable, "-c", code + _PEAK], capture_output=True,
                         text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


_FLOOR = """
import json, sys, time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
files = json.load(open({files!r}))
def read(chunk):
    n = 0
    for f in chunk:
        with open(f, "rb") as fh:
            n += len(fh.read())
    return n
def decode(chunk):
    import pydicom
    n = 0
    for f in chunk:
        n += pydicom.dcmread(f).pixel_array.nbytes
    return n
job = {{"read": read, "decode": decode}}[{what!r}]
chunks = [files[i::{workers}] for i in range({workers})]
start = time.perf_counter()
if {workers} == 1:
    job(files)
else:
    with ProcessPoolExecutor({workers}, mp_context=get_context("fork")) as pool:
        list(pool.map(job, chunks))
result = {{"seconds": time.perf_counter() - start}}
"""

_CONVERT = """
import json, shutil, time, logging
logging.disable(logging.WARNING)
from radiogenomics.data.convert import convert_cohort
shutil.rmtree({out!r}, ignore_errors=True)
start = time.perf_counter()
report = convert_cohort({cohort!r}, {out!r}, workers={workers})
result = {{"seconds": time.perf_counter() - start, "failed": len(report.failures),
          "series": len(report.written)}}
"""

_PREPARE = """
import json, shutil, time, torch
from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.case import SEQUENCES
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.transforms import PreprocessConfig
torch.set_num_threads(1)
cases = list(load_cohort("rsna", {cohort!r}))
config = PreprocessConfig(sequences=SEQUENCES, spacing=(2.0, 2.0, 2.0), spatial_size=(64, 64, 64))
shutil.rmtree({out!r}, ignore_errors=True)
cache = PreprocessCache({out!r}, config)
start = time.perf_counter()
report = cache.prepare(cases, workers={workers}, progress=False)
seconds = time.perf_counter() - start
size = sum(p.stat().st_size for p in __import__("pathlib").Path({out!r}).rglob("*") if p.is_file())
result = {{"seconds": seconds, "failed": len(report.failed), "cache_bytes": size}}
"""


def dicom_files(cohort: Path) -> list[str]:
    return sorted(str(p) for p in cohort.rglob("*.dcm"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from radiogenomics.data.synthetic import generate_cohort

    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        start = time.perf_counter()
        root = generate_cohort(Path(tmp) / "cohort", patients=args.patients, test_patients=0,
                               format="dicom", preset="fullsize")
        cohort = root / "rsna" / "train"
        generate_s = time.perf_counter() - start
        files = dicom_files(cohort)
        total = sum(Path(f).stat().st_size for f in files)
        listing = Path(tmp) / "files.json"
        listing.write_text(json.dumps(files))
        results: dict[str, Any] = {
            "patients": args.patients, "files": len(files), "bytes": total,
            "generate_s": generate_s, "cpus": os.cpu_count(), "runs": []}
        for count in workers:
            for name, code in (
                    ("read bytes (floor)", _FLOOR.format(files=str(listing), what="read",
                                                         workers=count)),
                    ("pydicom decode (floor)", _FLOOR.format(files=str(listing),
                                                             what="decode", workers=count)),
                    ("convert to NIfTI", _CONVERT.format(cohort=str(root / "rsna"),
                                                         out=f"{tmp}/nifti", workers=count)),
                    ("cache preparation", _PREPARE.format(cohort=str(root / "rsna"),
                                                          out=f"{tmp}/cache", workers=count))):
                run = _child(code)
                if run.get("failed"):
                    raise RuntimeError(f"{name}: {run['failed']} failure(s): figures void")
                run.update(name=name, workers=count)
                results["runs"].append(run)
                print(f"  {name} with {count} worker(s): {run['seconds']:.1f} s", flush=True)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def report(results: dict[str, Any]) -> None:
    """The table, the ratios to the floor and the projection to the RSNA cohort."""
    mb, files = results["bytes"] / 1e6, results["files"]
    runs = {(r["name"], r["workers"]): r for r in results["runs"]}
    print(f"\n{results['patients']} full-size patients: {files} files, {mb:.0f} MB "
          f"({mb / results['patients']:.0f} MB/patient), {results['cpus']} cores")
    print(f"{'step':<24} {'workers':>7} {'files/s':>9} {'MB/s':>8} {'x floor':>8} "
          f"{'peak MB/worker':>15}")
    for (name, count), run in runs.items():
        floor = (runs[("read bytes (floor)", count)]["seconds"]
                 + runs[("pydicom decode (floor)", count)]["seconds"])
        ratio = "" if "floor" in name else f"{run['seconds'] / floor:8.2f}"
        peak = f"{run['peak_mb']:15.0f}" if run.get("peak_mb") else f"{'-':>15}"
        print(f"{name:<24} {count:>7} {files / run['seconds']:>9.0f} "
              f"{mb / run['seconds']:>8.1f} {ratio:>8} {peak}")
        run["files_per_s"], run["mb_per_s"] = files / run["seconds"], mb / run["seconds"]
        if "floor" not in name:
            run["x_floor"] = run["seconds"] / floor
    prepare = runs.get(("cache preparation", 1))
    if prepare and prepare.get("cache_bytes"):
        print(f"cache size: {prepare['cache_bytes'] / results['patients'] / 1e6:.1f} MB/patient")
    print(f"\nprojected for the RSNA training cohort ({RSNA_PATIENTS} patients, "
          f"{RSNA_BYTES / 1e9:.0f} GB):")
    results["projection_min"] = {}
    for name in ("convert to NIfTI", "cache preparation"):
        one = runs.get((name, 1))
        two = runs.get((name, 2))
        if not one:
            continue
        rate1 = one["mb_per_s"] * 1e6
        line = f"  {name:<20} 1 core {RSNA_BYTES / rate1 / 60:6.0f} min"
        projection = {"1": RSNA_BYTES / rate1 / 60}
        if two:
            rate2 = two["mb_per_s"] * 1e6
            efficiency = rate2 / rate1 / 2
            projection["2"] = RSNA_BYTES / rate2 / 60
            projection["16"] = RSNA_BYTES / (rate1 * 16 * efficiency) / 60
            line += (f"; 2 cores {projection['2']:6.0f} min (measured rate); 16 cores "
                     f"{projection['16']:5.1f} min (1-worker rate x 16 x {efficiency:.2f} "
                     f"efficiency)")
        print(line)
        results["projection_min"][name] = projection


if __name__ == "__main__":
    main()
