"""Convert RSNA-MICCAI DICOM series to a BraTS 2021 cohort of NIfTI files in RAS orientation.

    python -m radiogenomics.data.convert IN OUT [--workers N] [--skip-invalid-files] [--overwrite]

IN is one patient folder (``<id>/{FLAIR,T1w,T1wCE,T2w}/*.dcm``) or a cohort
(``IN/train/<id>/...``, ``IN/test/<id>/...`` or ``IN/<id>/...``). Each series becomes
``OUT/BraTS2021_<id>/BraTS2021_<id>_{flair,t1,t1ce,t2}.nii.gz`` (numeric ids, padded to five
digits), which ``data=brats data.root=OUT`` reads as is; ``IN/train_labels.csv`` is copied to
``OUT``. A multi-volume (4D) series is written as one 4D NIfTI, as dcm2niix does (training
refuses it). Files left out of a series (not DICOM, no pixel data, a localizer...) are listed
in ``OUT/conversion_notes.csv``; series that cannot be converted are listed at the end and in
``OUT/conversion_errors.csv``, and the exit code is 1. Nothing is written under IN. An
input or output folder that cannot be used (missing, no patient, OUT inside IN, OUT already
holding files the conversion would replace: ``--overwrite``) exits with 2 before any work.
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from radiogenomics.data.case import SEQUENCES
from radiogenomics.data.cohorts.names import BRATS2021_SUFFIXES, brats2021_case, brats2021_file
from radiogenomics.data.cohorts.patient_folders import sequence_candidates
from radiogenomics.data.nifti import write_nifti
from radiogenomics.data.readers import load_volumes
from radiogenomics.data.volume import Volume
from radiogenomics.errors import CohortError, DataError, Failure
from radiogenomics.files import atomic_write

ERRORS_FILE = "conversion_errors.csv"
NOTES_FILE = "conversion_notes.csv"
LABEL_TABLES = ("train_labels.csv",)
"""Label tables of IN copied to OUT, so that training on OUT finds the labels."""


@dataclass(frozen=True)
class Note:
    """Something a converted series left out or holds that its user should know."""

    patient: str
    series: str
    note: str


@dataclass
class ConversionReport:
    """What a conversion wrote, what it left out of series and what it could not convert."""

    patients: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)

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
            lines.append(f"  {f.patient} {f.series}: {f.reason}")
        if self.notes:
            lines.append(f"{len(self.notes)} note(s) on converted series:")
            lines += [f"  {n.patient} {n.series}: {n.note}" for n in self.notes]
        return "\n".join(lines)


def find_patients(in_dir: str | Path) -> dict[str, Path]:
    """Patient folders under `in_dir` by id: a patient folder itself, or an RSNA-style cohort."""
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise CohortError(
            "input is a file, not a folder" if in_dir.exists() else "input folder does not exist",
            path=in_dir,
            hint="give a patient folder (<id>/FLAIR/...) or a cohort (train/<id>/...)",
        )
    if sequence_candidates(in_dir):
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
    with_series = {pid: f for pid, f in patients.items() if sequence_candidates(f)}
    if patients and not with_series and any(in_dir.glob("*/*.nii*")):
        raise CohortError(
            "the input holds NIfTI volumes, not DICOM series: it needs no conversion",
            path=in_dir, hint="train on it as it is (data=brats data.root=... for BraTS folders)")
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


def _stack_volumes(volumes: list[Volume]) -> tuple[np.ndarray, np.ndarray]:
    """One 3D array, or the 4D array of a multi-volume series, and its affine."""
    first = volumes[0]
    for volume in volumes[1:]:
        if volume.array.shape != first.array.shape or not np.allclose(
            volume.affine, first.affine, atol=1e-3
        ):
            raise DataError(
                f"{first.meta.get('series_layout', 'multi-volume series')}, but its volumes lie "
                "on different grids: cannot be written as one 4D image",
                hint="convert the series with dcm2niix, or keep one volume's files",
            )
    if len(volumes) == 1:
        return first.array, first.affine
    return np.stack([volume.array for volume in volumes], axis=-1), first.affine


def convert_patient(
    patient: str, folder: Path, out_dir: Path, skip_invalid_files: bool = False,
    philips_precise: bool = False,
) -> tuple[list[Path], list[Failure], list[Note]]:
    """Convert the four series of one patient; failures are returned, not raised.

    Reader options: see `radiogenomics.data.dicom.read_dicom_series`.
    """
    candidates = sequence_candidates(folder)
    series = {name: folders[0] for name, folders in candidates.items()}
    written, failures, notes = [], [], []
    for sequence in SEQUENCES:
        if sequence not in series:
            failures.append(Failure(patient, "series folder missing", sequence, str(folder)))
            continue
        if len(candidates[sequence]) > 1:  # never pick one of two series silently
            both = " and ".join(str(path) for path in candidates[sequence])
            failures.append(Failure(
                patient, f"patient {patient}: two folders of one sequence ({sequence}): {both} "
                "-> keep one (rename or move the other out of the patient folder)",
                sequence, str(folder)))
            continue
        target = brats2021_file(out_dir, patient, BRATS2021_SUFFIXES[sequence])
        try:
            options = {"skip_invalid_files": skip_invalid_files, "philips_precise": philips_precise}
            options = {key: True for key, value in options.items() if value}
            volumes = load_volumes(series[sequence], patient=patient, **options)
            array, affine = _stack_volumes(volumes)
            written.append(write_nifti(_as_stored(array), affine, target))
        except DataError as error:
            failures.append(Failure(patient, str(error), sequence, error.path or str(folder)))
            continue
        except Exception as error:  # one bad series must not stop the cohort
            message = f"unexpected {type(error).__name__}: {error}"
            failures.append(Failure(patient, message, sequence, str(series[sequence])))
            continue
        notes += [Note(patient, sequence, f"skipped {item}")
                  for item in volumes[0].meta.get("skipped", [])]
        if len(volumes) > 1:
            notes.append(Note(patient, sequence, f"{volumes[0].meta['series_layout']}: written "
                              f"as one 4D NIfTI of {len(volumes)} volumes; training takes one "
                              "3D volume per sequence"))
    if brats2021_case(patient) == patient:
        notes.append(Note(patient, "-", "id is not numeric: written as <id>/<id>_<seq>.nii.gz, "
                          "which data=brats does not read (it needs BraTS2021_XXXXX folders)"))
    return written, failures, notes


def check_output_outside(in_dir: Path, out_dir: Path) -> None:
    """Refuse an output folder inside the input: conversion never writes under IN."""
    source, target = in_dir.resolve(), out_dir.resolve()
    if target == source or source in target.parents:
        raise CohortError(
            "the output folder is inside the input folder", path=out_dir,
            hint=f"choose an output folder outside {in_dir}: the input is never written to",
        )


def _targets(in_dir: Path, out_dir: Path, patients: dict[str, Path]) -> list[Path]:
    """Every file a conversion of `patients` may write in `out_dir`."""
    targets = [out_dir / ERRORS_FILE, out_dir / NOTES_FILE]
    targets += [out_dir / name for name in LABEL_TABLES if (in_dir / name).is_file()]
    for patient in patients:
        targets += [brats2021_file(out_dir, patient, suffix)
                    for suffix in BRATS2021_SUFFIXES.values()]
    return targets


def _prepare_output(in_dir: Path, out_dir: Path, patients: dict[str, Path],
                    overwrite: bool) -> None:
    """Make `out_dir`, refusing to replace files already there unless `overwrite`.

    With `overwrite`, the files this conversion writes are removed first (so that a series
    that fails now leaves no stale file of an earlier conversion); other files are kept.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise CohortError(
            "the output path exists and is not a folder", path=out_dir,
            hint="give a new or empty folder as OUT (it is created if needed)",
        )
    existing = [path for path in _targets(in_dir, out_dir, patients)
                if path.exists() or path.is_symlink()]
    if existing and not overwrite:
        shown = ", ".join(str(path.relative_to(out_dir)) for path in existing[:4])
        more = f" and {len(existing) - 4} more" if len(existing) > 4 else ""
        raise CohortError(
            f"the output folder already holds {len(existing)} file(s) this conversion would "
            f"replace ({shown}{more})", path=out_dir,
            hint="choose a new or empty output folder, or pass --overwrite to replace the "
            "files the converter writes (other files are kept)",
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in existing:
            if path.is_dir() and not path.is_symlink():
                raise CohortError(
                    "a folder stands where the converter writes a file", path=path,
                    hint="move it out of the output folder, or choose another output folder",
                )
            path.unlink()
    except OSError as error:
        raise CohortError(
            f"cannot write to the output folder ({error.strerror or error})", path=out_dir,
            hint="choose a folder you can write to",
        ) from error


def _copy_labels(in_dir: Path, out_dir: Path) -> list[Path]:
    """Copy IN's label tables to OUT (atomically), so a cohort layout finds the labels; for
    an RSNA ``train/`` or ``test/`` folder, the tables beside it."""
    copied = []
    folders = [in_dir, in_dir.parent] if in_dir.name in ("train", "test") else [in_dir]
    for name in LABEL_TABLES:
        source = next((folder / name for folder in folders if (folder / name).is_file()), None)
        if source is not None:
            with atomic_write(out_dir / name) as temp:
                shutil.copyfile(source, temp)
            copied.append(out_dir / name)
    return copied


def convert_cohort(
    in_dir: str | Path,
    out_dir: str | Path,
    workers: int | None = None,
    progress: bool = False,
    skip_invalid_files: bool = False,
    philips_precise: bool = False,
    overwrite: bool = False,
) -> ConversionReport:
    """Convert every patient under `in_dir` into `out_dir`, `workers` patients at a time.

    Writes ``out_dir/conversion_errors.csv`` (header only when all went well) and
    ``out_dir/conversion_notes.csv`` (what was left out of series, 4D series), and copies
    ``in_dir/train_labels.csv``. `skip_invalid_files` leaves unreadable DICOM images out of
    their series (noted) instead of failing the series; `philips_precise` writes Philips
    "floating point" values (private ScaleSlope, as dcm2niix -p y) instead of displayed ones.
    A file of `out_dir` that the conversion would replace is an error (CohortError, before
    any work) unless `overwrite`, which removes those files first; other files are kept.
    """
    patients = find_patients(in_dir)
    out_dir = Path(out_dir)
    check_output_outside(Path(in_dir), out_dir)
    _prepare_output(Path(in_dir), out_dir, patients, overwrite)
    workers = max(1, workers or os.cpu_count() or 1)
    report = ConversionReport(patients=sorted(patients))
    bar = tqdm(total=len(patients), unit="patient", disable=not progress)
    if workers == 1 or len(patients) == 1:
        results = []
        for pid, folder in patients.items():
            results.append(convert_patient(pid, folder, out_dir, skip_invalid_files,
                                           philips_precise))
            bar.update()
    else:
        # spawn: forking a process that runs threads (tqdm's monitor) can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(patients)), mp_context=context) as pool:
            futures = [pool.submit(convert_patient, pid, f, out_dir, skip_invalid_files,
                                   philips_precise) for pid, f in patients.items()]
            results = []
            for future in as_completed(futures):
                results.append(future.result())
                bar.update()
    bar.close()
    for written, failures, notes in results:
        report.written.extend(written)
        report.failures.extend(failures)
        report.notes.extend(notes)
    report.written.sort()
    report.failures.sort(key=lambda f: (f.patient, f.series))
    report.notes.sort(key=lambda n: (n.patient, n.series))
    _write_errors(report.failures, out_dir / ERRORS_FILE)
    _write_notes(report.notes, out_dir / NOTES_FILE)
    _copy_labels(Path(in_dir), out_dir)
    return report


def _write_notes(notes: list[Note], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient", "series", "note"])
        writer.writerows([n.patient, n.series, n.note] for n in notes)


def _write_errors(failures: list[Failure], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient", "series", "path", "error"])
        writer.writerows([f.patient, f.series, f.path, f.reason] for f in failures)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m radiogenomics.data.convert",
        description="Convert RSNA-MICCAI DICOM series to BraTS-style NIfTI (RAS) files.",
    )
    parser.add_argument("input", type=Path, help="a patient folder or an RSNA-style cohort")
    parser.add_argument(
        "output", type=Path,
        help="folder for BraTS2021_<id>/BraTS2021_<id>_<seq>.nii.gz (read by data=brats)",
    )
    parser.add_argument(
        "--workers", type=int, default=None,
        help="patients converted in parallel (default: all cores)",
    )
    parser.add_argument(
        "--skip-invalid-files", action="store_true",
        help="leave unreadable DICOM images (truncated, undecodable) out of their series, "
        "listed in conversion_notes.csv, instead of failing the series",
    )
    parser.add_argument(
        "--philips-precise", action="store_true",
        help="Philips series: write the 'floating point' values FP = (SV*RS+RI)/(RS*SS) of the "
        "private ScaleSlope (as dcm2niix -p y) instead of the displayed SV*RS+RI",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the files an earlier conversion wrote in OUT (refused by default); "
        "other files in OUT are kept",
    )
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    try:
        report = convert_cohort(args.input, args.output, args.workers, progress=True,
                                skip_invalid_files=args.skip_invalid_files,
                                philips_precise=args.philips_precise, overwrite=args.overwrite)
    except DataError as error:  # bad input or output folder: exit 2, as train.py and predict.py
        print(f"error: {error}", file=sys.stderr)
        return 2
    return finish(report, args.output / ERRORS_FILE)


class BatchReport(Protocol):
    """What a batch job over patients reports (conversion, registration)."""

    @property
    def ok(self) -> bool: ...

    def summary(self) -> str: ...


def finish(report: BatchReport, errors: Path) -> int:
    """Print a batch job's report and where its failures went; its exit status (0: every
    patient done, 1: some failed, each named in the report and in `errors`)."""
    print(report.summary())
    if not report.ok:
        print(f"failures written to {errors}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
