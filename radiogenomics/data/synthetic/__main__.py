"""Command line: ``python -m radiogenomics.data.synthetic --out DIR --patients N --seed S``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from .cohort import FORMATS, generate_cohort
from .settings import PRESETS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m radiogenomics.data.synthetic",
        description="Write a synthetic brain-tumour MRI cohort (RSNA DICOM and/or BraTS NIfTI).",
    )
    parser.add_argument("--out", required=True, help="output folder (created atomically)")
    parser.add_argument("--patients", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=sorted(FORMATS), default="both",
                        help="dicom: rsna/ only, nifti: brats/ only, both: both")
    parser.add_argument("--test-patients", type=int, default=None,
                        help="how many of the last patients go to rsna/test (default: 20%%)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default",
                        help="default: strong MGMT signal; realistic: as hard as the real task")
    parser.add_argument("--size", type=int, default=96,
                        help="voxels from left to right of the NIfTI grid (96: 2 mm, 96x116x96)")
    parser.add_argument("--mgmt-signal", type=float, default=None,
                        help="strength of the MGMT imaging correlate (overrides the preset)")
    parser.add_argument("--mgmt-label-noise", type=float, default=None,
                        help="fraction of MGMT labels flipped (overrides the preset)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing folder that holds something else")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    out = generate_cohort(
        args.out,
        patients=args.patients,
        seed=args.seed,
        format=args.format,
        test_patients=args.test_patients,
        preset=args.preset,
        size=args.size,
        mgmt_signal=args.mgmt_signal,
        mgmt_label_noise=args.mgmt_label_noise,
        workers=args.workers,
        overwrite=args.overwrite,
    )
    print(f"synthetic cohort ready in {out} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
