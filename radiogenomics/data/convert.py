"""Convert RSNA-MICCAI DICOM series to BraTS-style NIfTI files in RAS orientation.

    python -m radiogenomics.data.convert IN OUT [--workers N]

IN is one patient folder (``<id>/{FLAIR,T1w,T1wCE,T2w}/*.dcm``) or a cohort
(``IN/train/<id>/...``, ``IN/test/<id>/...`` or ``IN/<id>/...``). Each series becomes
``OUT/<id>/<id>_{flair,t1,t1ce,t2}.nii.gz``; series that cannot be converted are listed at
the end and in ``OUT/conversion_errors.csv``, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from radiogenomics.data.case import SEQUENCES, canonical_sequence
from radiogenomics.data.errors import CohortError, DataError
from radiogenomics.data.nifti import write_nifti
from radiogenomics.data.readers import load_volume

BRATS_SUFFIXES: dict[str, str] = {"FLAIR": "flair", "T1w": "t1", "T1wCE": "t1ce", "T2w": "t2"}
ERRORS_FILE = "conversion_errors.csv"


@dataclass(frozen=True)
class Failure:
    """A series that could not be converted, and why."""

    patient: str
    series: str
    path: str
    error: str


@dataclass
class ConversionReport:
    """What a conversion wrote and what it could not convert."""

    patients: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        """A human-readable account: counts, then one line per failed series."""
        failed = sorted({f.patient for f in self.failures})
        lines = [
            f"converted {len(self.written)} series of {len(self.patients)} patient(s); "
            f"{len(self.failures)} series failed in {len(failed)} patient(s)"
        ]
        for f in sorted(self.failures, key=lambda f: (f.patient, f.series)):
            lines.append(f"  {f.patient} {f.series}: {f.error}")
        return "\n".join(lines)


def _sequence_folders(folder: Path) -> dict[str, Path]:
    """Sub-folders of a patient folder that name a known sequence, by canonical name."""
    found = {}
    for child in sorted(folder.iterdir()):
        if child.is_dir():
            try:
                found[canonical_sequence(child.name)] = child
            except KeyError:
                continue
    return found


def find_patients(in_dir: str | Path) -> dict[str, Path]:
    """Patient folders under `in_dir` by id: a patient folder itself, or an RSNA-style cohort."""
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise CohortError(
            "input folder does not exist", path=in_dir,
            hint="give a patient folder (<id>/FLAIR/...) or a cohort (train/<id>/...)",
        )
    if _sequence_folders(in_dir):
        return {in_dir.name: in_dir}
    splits = [in_dir / s for s in ("train", "test") if (in_dir / s).is_dir()] or [in_dir]
    patients: dict[str, Path] = {}
    for split in splits:
        for folder in sorted(p for p in split.iterdir() if p.is_dir()):
            if folder.name in patients:
                raise CohortError(
                    f"patient {folder.name} appears twice ({patients[folder.name]})",
                    path=folder, hint="each patient id must be unique across train/ and test/",
                )
            patients[folder.name] = folder
    if not patients:
        raise CohortError(
            "no patient folders found", path=in_dir,
            hint="expected <id>/{FLAIR,T1w,T1wCE,T2w}/ or train/<id>/... below the input folder",
        )
    return patients


def _as_stored(array: np.ndarray) -> np.ndarray:
    """int16 when every voxel is an integer that fits (half the file size), else float32."""
    if array.size and np.abs(array).max() <= np.iinfo(np.int16).max:
        as_int = array.astype(np.int16)
        if np.array_equal(as_int, array):
            return as_int
    return np.asarray(array, dtype=np.float32)


def convert_patient(patient: str, folder: Path, out_dir: Path) -> tuple[list[Path], list[Failure]]:
    """Convert the four series of one patient; failures are returned, not raised."""
    series = _sequence_folders(folder)
    written, failures = [], []
    for sequence in SEQUENCES:
        if sequence not in series:
            failures.append(Failure(patient, sequence, str(folder), "series folder missing"))
            continue
        target = out_dir / patient / f"{patient}_{BRATS_SUFFIXES[sequence]}.nii.gz"
        try:
            volume = load_volume(series[sequence], patient=patient)
            written.append(write_nifti(_as_stored(volume.array), volume.affine, target))
        except DataError as error:
            failures.append(Failure(patient, sequence, error.path or str(folder), str(error)))
        except Exception as error:  # one bad series must not stop the cohort
            message = f"unexpected {type(error).__name__}: {error}"
            failures.append(Failure(patient, sequence, str(series[sequence]), message))
    return written, failures


def convert_cohort(
    in_dir: str | Path, out_dir: str | Path, workers: int | None = None, progress: bool = False
) -> ConversionReport:
    """Convert every patient under `in_dir` into `out_dir`, `workers` patients at a time.

    Writes ``out_dir/conversion_errors.csv`` (header only when all went well).
    """
    patients = find_patients(in_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, workers or os.cpu_count() or 1)
    report = ConversionReport(patients=sorted(patients))
    bar = tqdm(total=len(patients), unit="patient", disable=not progress)
    if workers == 1 or len(patients) == 1:
        results = []
        for pid, folder in patients.items():
            results.append(convert_patient(pid, folder, out_dir))
            bar.update()
    else:
        # spawn: forking a process that runs threads (tqdm's monitor) can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(patients)), mp_context=context) as pool:
            futures = [pool.submit(convert_patient, pid, f, out_dir) for pid, f in patients.items()]
            results = []
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
    bar.close()
    for written, failures in results:
        report.written.extend(written)
        report.failures.extend(failures)
    report.written.sort()
    report.failures.sort(key=lambda f: (f.patient, f.series))
    _write_errors(report.failures, out_dir / ERRORS_FILE)
    return report


def _write_errors(failures: list[Failure], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient", "series", "path", "error"])
        writer.writerows([f.patient, f.series, f.path, f.error] for f in failures)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m radiogenomics.data.convert",
        description="Convert RSNA-MICCAI DICOM series to BraTS-style NIfTI (RAS) files.",
    )
    parser.add_argument("input", type=Path, help="a patient folder or an RSNA-style cohort")
    parser.add_argument("output", type=Path, help="folder for <id>/<id>_<seq>.nii.gz")
    parser.add_argument(
        "--workers", type=int, default=None,
        help="patients converted in parallel (default: all cores)",
    )
    args = parser.parse_args(argv)
    try:
        report = convert_cohort(args.input, args.output, args.workers, progress=True)
    except CohortError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    if not report.ok:
        print(f"failures written to {args.output / ERRORS_FILE}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
