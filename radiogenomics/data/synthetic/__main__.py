"""Command line: ``python -m radiogenomics.data.synthetic --out DIR --patients N --seed S``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from radiogenomics.errors import CohortError, RadiogenomicsError

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
                        help="default: strong MGMT signal; realistic: as hard as the real task, "
                             "the head moved in the scanner")
    parser.add_argument("--size", type=int, default=96,
                        help="voxels from left to right of the NIfTI grid (96: 2 mm, 96x116x96)")
    parser.add_argument("--mgmt-signal", type=float, default=None,
                        help="strength of the MGMT imaging correlate (overrides the preset)")
    parser.add_argument("--mgmt-label-noise", type=float, default=None,
                        help="fraction of MGMT labels flipped (overrides the preset)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing synthetic cohort of other settings (a folder "
                        "holding anything else is never replaced)")
    return parser.parse_args(argv)


COHORT_ENTRIES = frozenset({"cohort.json", "rsna", "brats"})
"""What the generator writes at the top of a cohort folder."""


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an --out that is a file, or a folder holding anything but a synthetic cohort.

    Such a folder is the user's: it is never written into nor replaced, even with
    ``--overwrite`` (which only replaces a folder holding nothing but a synthetic cohort of
    other settings).
    """
    hint = "give --out a new or empty folder (it is created)"
    if out.is_symlink() and not out.exists():
        raise CohortError("--out is a broken symbolic link", path=out, hint=hint)
    if not out.exists():
        return
    if not out.is_dir():
        raise CohortError("--out exists and is not a folder", path=out, hint=hint)
    entries = {entry.name for entry in out.iterdir()}
    if entries and "cohort.json" not in entries:
        raise CohortError(
            "--out holds files that are not a synthetic cohort (no cohort.json): it is never "
            "written into or replaced, even with --overwrite", path=out, hint=hint)
    foreign = sorted(entries - COHORT_ENTRIES)
    if foreign and overwrite:
        raise CohortError(
            f"--out holds a synthetic cohort and other files ({', '.join(foreign[:5])}): it is "
            "never replaced, even with --overwrite", path=out,
            hint=f"move those files out of it, or {hint}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        check_out(Path(args.out).expanduser(), args.overwrite)
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
    except (RadiogenomicsError, ValueError) as error:  # one message, no traceback
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"synthetic cohort ready in {out} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
