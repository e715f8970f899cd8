"""Registration accuracy on moved synthetic patients, against their ground-truth transforms.

    python benchmarks/registration.py [--patients 10] [--size 96] [--n4] [--json FILE]

Generates a `realistic` synthetic cohort (heads rotated up to 15 degrees and shifted up to
2 cm in the scanner, 2 degrees / 2 mm of motion between series; `data/synthetic/pose.py`),
registers each patient's four DICOM series to the template (`radiogenomics.data.register`)
and compares each series' estimated template -> native transform with the manifest's:

- target registration error (TRE): distance, in the series' world, between the atlas brain
  voxels (every 4th along each axis) mapped by the true and by the estimated transform; a
  patient's TRE is its mean over the voxels and its four series;
- brain-mask Dice: the atlas brain mask carried onto T1wCE's native voxels by the estimated
  transform against the same mask carried by the true one;
- the same two figures for the identity (no registration: scanner world taken as template
  space), and the seconds per patient (reading excluded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from radiogenomics.data.case import SEQUENCES
from radiogenomics.data.register import read_series, register_series
from radiogenomics.data.synthetic import generate_cohort
from radiogenomics.data.template import brain_points, load_template
from radiogenomics.data.template_space import resample


def tre_mm(true: np.ndarray, estimate: np.ndarray, points: np.ndarray) -> float:
    """Mean distance (mm) between `points` mapped by two 4x4 transforms."""
    return float(np.linalg.norm((points @ (true - estimate).T)[:, :3], axis=1).mean())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks."""
    return float(2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1))


def native_mask(shape: tuple[int, ...], affine: np.ndarray, native_from_template: np.ndarray
                ) -> np.ndarray:
    """The atlas brain mask on a native grid, through `native_from_template`."""
    _, mask = load_template()
    return resample(mask.array, mask.affine, shape, affine,
                    np.linalg.inv(native_from_template), order=0) > 0


def run(cohort: Path, n4: bool = False, affine_only: bool = False) -> dict:
    """Register every patient of a moved synthetic `cohort`; per-patient and median figures."""
    manifest = json.loads((cohort / "cohort.json").read_text())
    points, rows = brain_points(), []
    for case in manifest["cases"]:
        truth = {s: np.array(m) for s, m in case["native_from_template"].items()}
        series = read_series(cohort / "rsna" / case["split"] / case["id"], case["id"])
        start = time.perf_counter()
        result = register_series(series, case["id"], n4, affine_only=affine_only)
        seconds = time.perf_counter() - start
        estimate = {s: g.native_from_template for s, g in result.series.items()}
        fixed = series["T1wCE"]
        true_mask = native_mask(fixed.array.shape, fixed.affine, truth["T1wCE"])
        rows.append({
            "id": case["id"], "seconds": seconds,
            "tre_mm": statistics.fmean(tre_mm(truth[s], estimate[s], points) for s in SEQUENCES),
            "identity_tre_mm": statistics.fmean(tre_mm(truth[s], np.eye(4), points)
                                                for s in SEQUENCES),
            "brain_dice": dice(true_mask, native_mask(fixed.array.shape, fixed.affine,
                                                      estimate["T1wCE"])),
            "identity_brain_dice": dice(true_mask, native_mask(fixed.array.shape, fixed.affine,
                                                               np.eye(4))),
        })
    summary = {f"{key}_median": statistics.median(r[key] for r in rows) for key in (
        "tre_mm", "brain_dice", "identity_tre_mm", "identity_brain_dice")}
    return {**summary, "tre_mm_max": max(r["tre_mm"] for r in rows),
            "seconds_per_patient": statistics.fmean(r["seconds"] for r in rows),
            "patients": len(rows), "n4": n4, "affine_only": affine_only, "patients_detail": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--size", type=int, default=96,
                        help="synthetic NIfTI grid size (96: 2 mm voxels, DICOM ~1.8 x 2-5 mm)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n4", action="store_true", help="N4 bias correction first")
    parser.add_argument("--affine-only", action="store_true",
                        help="plain affine to the template (no B-spline refinement)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        cohort = generate_cohort(Path(folder) / "moved", patients=args.patients, seed=args.seed,
                                 format="both", test_patients=0, preset="realistic",
                                 size=args.size)
        results = run(cohort, args.n4, args.affine_only)
    for row in results["patients_detail"]:
        print(f"{row['id']}: TRE {row['tre_mm']:.2f} mm (identity {row['identity_tre_mm']:.1f}),"
              f" brain Dice {row['brain_dice']:.3f} (identity "
              f"{row['identity_brain_dice']:.3f}), {row['seconds']:.1f} s")
    print(f"median TRE {results['tre_mm_median']:.2f} mm (identity "
          f"{results['identity_tre_mm_median']:.1f} mm), brain Dice "
          f"{results['brain_dice_median']:.3f} (identity "
          f"{results['identity_brain_dice_median']:.3f}), {results['seconds_per_patient']:.1f} s "
          f"per patient, {results['patients']} patients")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
