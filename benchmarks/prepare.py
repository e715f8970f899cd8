"""Cohort preparation (DICOM → cache) with 1 and with all workers, and cached vs raw loading.

    python benchmarks/prepare.py [--patients 12] [--size 96] [--json out.json]

Makes a synthetic RSNA-layout DICOM cohort (four series per patient), prepares the
preprocessing cache of all four sequences with one worker and then with every core, and
projects the time for the full RSNA cohort (585 patients x 4 series x ~110 slices of
512x512) by scaling the measured per-patient time with the number of pixels read.
Then compares loading a prepared case from the cache with preprocessing it from its files.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.case import SEQUENCES
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.synthetic import generate_cohort
from radiogenomics.data.transforms import PreprocessConfig

RSNA_PATIENTS = 585
RSNA_PIXELS_PER_PATIENT = 4 * 110 * 512 * 512


def pixels_read(case: dict) -> int:
    """Pixels stored in the DICOM series of a case (rows x columns x files)."""
    from radiogenomics.data.readers import load_volume

    return sum(load_volume(case["images"][s]).array.size for s in SEQUENCES)


def time_prepare(cases: list[dict], cache_dir: Path, config: PreprocessConfig,
                 workers: int) -> float:
    cache = PreprocessCache(cache_dir, config)
    start = time.perf_counter()
    report = cache.prepare(cases, workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    if report.failed:
        raise RuntimeError(report.summary())
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    config = PreprocessConfig(sequences=SEQUENCES, spacing=(2.0, 2.0, 2.0),
                              spatial_size=(64, 64, 64))
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_cohort(Path(tmp) / "cohort", patients=args.patients, test_patients=0,
                               format="dicom", size=args.size)
        cases = load_cohort("synthetic", root, split="train").cases
        one = time_prepare(cases, Path(tmp) / "cache1", config, workers=1)
        many = time_prepare(cases, Path(tmp) / "cacheN", config, workers=cores)
        per_patient_pixels = float(np.mean([pixels_read(c) for c in cases[:3]]))

        cache = PreprocessCache(Path(tmp) / "cacheN", config)
        start = time.perf_counter()
        for case in cases:
            np.array(cache.load(case)["image"], dtype=np.float32)
        cached = len(cases) / (time.perf_counter() - start)
        sample = cases[: min(4, len(cases))]
        start = time.perf_counter()
        for case in sample:
            cache.compute(case)
        raw = len(sample) / (time.perf_counter() - start)

    rate_one, rate_many = len(cases) / one, len(cases) / many
    scale = RSNA_PIXELS_PER_PATIENT / per_patient_pixels
    projected_min = RSNA_PATIENTS * scale / rate_many / 60
    rows = [
        ("prepare, 1 worker", f"{rate_one:.2f} patients/s", "baseline"),
        (f"prepare, {cores} workers", f"{rate_many:.2f} patients/s",
         f"{rate_many / rate_one:.2f}x 1 worker"),
        ("projected RSNA (585 x 4 x 110 x 512²)", f"{projected_min:.0f} min",
         f"{cores} workers, scaled by pixels read"),
        ("load from cache", f"{cached:.1f} volumes/s", f"{cached / raw:.0f}x from files"),
        ("preprocess from files", f"{raw:.2f} volumes/s", "baseline"),
    ]
    print(f"{'measure':<40} {'value':>20}  compared")
    for name, value, note in rows:
        print(f"{name:<40} {value:>20}  {note}")
    if args.json:
        args.json.write_text(json.dumps({
            "patients": len(cases), "pixels_per_patient": per_patient_pixels,
            "prepare_patients_per_s": {"1": rate_one, str(cores): rate_many},
            "projected_rsna_minutes": projected_min,
            "cache_volumes_per_s": cached, "raw_volumes_per_s": raw}, indent=1))


if __name__ == "__main__":
    main()
