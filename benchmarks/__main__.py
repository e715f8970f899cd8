"""Run the benchmark suite: one table, every figure beside its baseline from the same run.

    python -m benchmarks [--quick] [--only reading,prepare,...] [--models cnn3d,vgg16]
                         [--json PATH] [--workdir DIR]

Sections, in this order (--only picks some):
  reading   DICOM series reading, slices/s: ours vs naive pydicom, MONAI LoadImage
            (PydicomReader) and SimpleITK when installed
  prepare   cohort preparation (DICOM to cache), patients/s with 1 and with all workers,
            and the time projected for 585 patients x 4 x ~110 slices of 512x512
  loading   volumes/s of prepared cases: our cache vs MONAI PersistentDataset (same
            preprocessing) vs preprocessing from the DICOM files
  datawait  share of cnn3d's training-step time spent waiting for data from the cache
  models    training samples/s and peak memory of each model at its default input
  predict   seconds per patient for cnn3d, from DICOM files to probability

The results, with the machine (cores, versions, device, git commit, load average), go to
benchmarks/results/<time>.json (or --json PATH). --quick runs small data and few repeats
(models at batch 2) to check that the suite works, in about a minute on an idle machine;
its figures are not the ones to report.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
import warnings
from pathlib import Path

from benchmarks.suite import FULL, QUICK, RESULTS_DIR, SECTIONS, run_suite, table


def _names(text: str, known: tuple[str, ...], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose among "
            f"{', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    from benchmarks.models import MODELS

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small data and few repeats: checks the suite, not the figures")
    parser.add_argument("--only", type=lambda t: _names(t, tuple(SECTIONS), "section"),
                        default=list(SECTIONS), metavar="SECTIONS",
                        help=f"comma-separated sections among {','.join(SECTIONS)}")
    parser.add_argument("--models", type=lambda t: _names(t, MODELS, "model"), default=None,
                        metavar="MODELS", help="comma-separated models of the models section "
                        f"(default: {','.join(MODELS)})")
    parser.add_argument("--json", type=Path, default=None,
                        help="where to write the results (default: benchmarks/results/"
                        "<time>.json)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the generated cohorts here and reuse them in later runs "
                        "(default: a temporary folder, removed)")
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    # Lightning sets its own loggers' level when imported, not that of these children
    for name in ("radiogenomics", "lightning.pytorch.utilities.rank_zero",
                 "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sizes = QUICK if args.quick else FULL
    record = run_suite(args.only, sizes, args.workdir, args.models)
    record["quick"] = args.quick
    path = args.json
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS_DIR / f"{stamp}{'-quick' if args.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")

    print(table(record))
    for name, error in record["errors"].items():
        print(f"\n[{name}] failed:\n{error}", file=sys.stderr)
    print(f"\n{'quick run: ' if args.quick else ''}{len(record['rows'])} rows in "
          f"{record['elapsed_s']:.0f} s; results in {path}")
    return 1 if record["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
