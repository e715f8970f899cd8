"""Register RSNA-layout DICOM patients to template space: BraTS-layout NIfTI + transforms.

    python -m radiogenomics register IN OUT [--n4] [--skull-strip] [--affine-only] [--overwrite]
    python -m radiogenomics.data.register IN OUT ...

For each patient (IN: one patient folder ``<id>/{FLAIR,T1w,T1wCE,T2w}/*.dcm`` or a cohort):
FLAIR, T1w and T2w are registered rigidly to T1wCE, and T1wCE affinely to the MNI152 T1
(`template.py`; the affine is refined by a smooth B-spline stage, of which the affine part
over the atlas brain is kept: `registration.refined_affine`; ``--affine-only`` skips it);
each series is resampled once, through its own composed transform, onto the template grid
(1 mm, 240x240x155) and written as
``OUT/BraTS2021_<id>/BraTS2021_<id>_{flair,t1,t1ce,t2}.nii.gz``. Beside them,
``registration/`` holds ``registration.json`` and one ITK ``.tfm`` per series (template ->
native: `template_space.to_native` brings any output back onto the DICOM voxels) and the
atlas brain mask carried back onto each series' native grid (``<series>_brain_mask.nii.gz``).
``--n4`` corrects each series' bias field first (N4); ``--skull-strip`` multiplies the
template-space images by the atlas brain mask. Patients that cannot be registered are one
line each, in ``OUT/registration_errors.csv`` too, and the exit code is 1; nothing is ever
written under IN.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from radiogenomics.data.case import SEQUENCES
from radiogenomics.data.cohorts.names import BRATS2021_SUFFIXES, brats2021_file
from radiogenomics.data.cohorts.patient_folders import duplicate_problem, sequence_folders
from radiogenomics.data.convert import check_output_outside, find_patients, finish
from radiogenomics.data.nifti import write_nifti
from radiogenomics.data.readers import load_volume
from radiogenomics.data.template import brain_points, load_template
from radiogenomics.data.template_space import (
    Registration,
    SeriesGeometry,
    resample,
    save,
    to_native,
    to_template,
)
from radiogenomics.data.volume import Volume
from radiogenomics.errors import CohortError, DataError, Failure, MissingExtraError

FIXED_SERIES = "T1wCE"
"""The series the others are registered to, and that is registered to the template."""
ERRORS_FILE = "registration_errors.csv"
REFINE_POINTS_STEP = 8
"""Every how many atlas brain voxels (along each axis) the refined affine is fitted on."""
ESTIMATION_MM = 2.0
"""Voxel size of the template the affine registration is estimated on (output stays 1 mm)."""


@dataclass
class RegistrationReport:
    """What a registration run wrote and which patients it could not use."""

    patients: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every patient was registered."""
        return not self.failures

    def summary(self) -> str:
        """The count, then one line per patient that could not be registered."""
        lines = [f"registered {len(self.patients)} patient(s) in {self.seconds:.0f} s"]
        lines += [f"  {f.patient}: {f.reason}" + (f" ({f.path})" if f.path else "")
                  for f in self.failures]
        return "\n".join(lines)


@lru_cache(maxsize=1)
def estimation_template() -> Volume:
    """The template T1 at `ESTIMATION_MM` (block means of the 1 mm grid); made once per
    process (every patient is registered to it; callers only read it)."""
    t1, _ = load_template()
    step = int(ESTIMATION_MM)
    affine = t1.affine @ np.diag([step, step, step, 1.0])
    affine[:3, 3] += (step - 1) / 2
    shape = tuple(int(np.ceil(n / step)) for n in t1.array.shape)
    return Volume.from_array(resample(t1.array, t1.affine, shape, affine, np.eye(4)), affine)


def read_series(folder: Path, patient: str) -> dict[str, Volume]:
    """The four series of a patient folder; a missing one is a DataError naming it."""
    folders, duplicated = sequence_folders(folder)
    if duplicated:  # never pick one of two series silently
        name, both = next(iter(duplicated.items()))
        raise DataError(duplicate_problem(name, both), patient=patient, path=folder)
    missing = [s for s in SEQUENCES if s not in folders]
    if missing:
        raise DataError(f"series missing: {', '.join(missing)}", patient=patient, path=folder,
                        hint="registration needs FLAIR, T1w, T1wCE and T2w folders")
    series = {s: load_volume(folders[s], patient=patient) for s in SEQUENCES}
    for name, volume in series.items():
        volume.meta["source"] = str(folders[name])
    return series


def register_series(series: dict[str, Volume], patient: str, n4: bool = False,
                    fixed_series: str = FIXED_SERIES, affine_only: bool = False
                    ) -> Registration:
    """The registration of one patient's series (native Volumes by sequence) to the template:
    `fixed_series` affinely to the template (refined by the affine part of a B-spline stage
    unless `affine_only`: `registration.refined_affine`), every other series rigidly to it."""
    from radiogenomics.data import registration

    if n4:
        series = {name: registration.n4(volume) for name, volume in series.items()}
    t1, _ = load_template()
    fixed = series[fixed_series]
    if not np.any(fixed.array > 0):
        raise DataError(f"the {fixed_series} series is blank", patient=patient)
    if affine_only:
        native_from_template, metric = registration.affine(estimation_template(), fixed)
    else:
        native_from_template, metric = registration.refined_affine(
            estimation_template(), fixed, brain_points(REFINE_POINTS_STEP))
    geometries, metrics = {}, {fixed_series: metric}
    for name, volume in series.items():
        transform = native_from_template
        if name != fixed_series:
            moving_from_fixed, metrics[name] = registration.rigid(fixed, volume)
            transform = moving_from_fixed @ native_from_template
        geometries[name] = SeriesGeometry(volume.array.shape, volume.affine, transform,
                                          str(volume.meta.get("source", "")))
    details = {"template": "MNI152 2009a symmetric T1 (nilearn), BraTS grid 1 mm",
               "fixed_series": fixed_series, "n4": n4, "library": _library(),
               "template_transform": "affine" if affine_only else
               "affine part of affine + B-spline (registration.refined_affine)",
               "final_metric": metrics}
    return Registration(patient, t1.array.shape, t1.affine, geometries, details)


def _library() -> str:
    import SimpleITK

    return f"SimpleITK {SimpleITK.Version.VersionString()}"


def register_patient(folder: Path, patient: str, out_dir: Path, n4: bool = False,
                     skull_strip: bool = False, affine_only: bool = False) -> Registration:
    """Register one patient folder and write its BraTS-layout NIfTI and transforms."""
    series = read_series(folder, patient)
    result = register_series(series, patient, n4, affine_only=affine_only)
    _, mask = load_template()
    case = brats2021_file(out_dir, patient, "seg").parent
    folder_out = case / "registration"
    for name, suffix in BRATS2021_SUFFIXES.items():
        image = to_template(series[name], result, name, order=1)
        if skull_strip:
            image = image * mask.array
        write_nifti(image.astype(np.float32), result.template_affine,
                    brats2021_file(out_dir, patient, suffix))
    folder_out.mkdir(parents=True, exist_ok=True)
    for name in series:
        native = to_native(mask.array, mask.affine, result, name, order=0)
        write_nifti(native.array.astype(np.uint8), native.affine,
                    folder_out / f"{name}_brain_mask.nii.gz")
    save(result, folder_out)
    return result


def register_cohort(in_dir: str | Path, out_dir: str | Path, n4: bool = False,
                    skull_strip: bool = False, overwrite: bool = False,
                    affine_only: bool = False) -> RegistrationReport:
    """Register every patient under `in_dir` into `out_dir`; one Failure per patient lost."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    patients = find_patients(in_dir)
    check_output_outside(in_dir, out_dir)
    taken = [p for p in patients if brats2021_file(out_dir, p, "seg").parent.exists()]
    if taken and not overwrite:
        raise CohortError(f"the output folder already holds registered patients "
                          f"({', '.join(taken[:3])}{', ...' if len(taken) > 3 else ''})",
                          path=out_dir, hint="choose another output folder or pass --overwrite")
    report, start = RegistrationReport(), time.perf_counter()
    for patient, folder in patients.items():
        try:
            register_patient(folder, patient, out_dir, n4, skull_strip, affine_only)
            report.patients.append(patient)
        except MissingExtraError:
            raise
        except (DataError, RuntimeError, ValueError, OSError) as error:
            report.failures.append(_failure(error, patient, folder))
    report.seconds = time.perf_counter() - start
    if report.failures:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / ERRORS_FILE).open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["patient", "reason", "path"])
            writer.writerows([f.patient, f.reason, f.path] for f in report.failures)
    return report


def _failure(error: Exception, patient: str, folder: Path) -> Failure:
    """One line for a patient that could not be registered (SimpleITK's errors are long)."""
    if isinstance(error, DataError):
        reason = error.reason + (f" -> {error.hint}" if error.hint else "")
        return Failure(patient, reason, path=error.path or str(folder))
    lines = [line for line in str(error).splitlines() if line.strip()]
    return Failure(patient, f"{type(error).__name__}: {lines[-1] if lines else ''}",
                   path=str(folder))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="radiogenomics register",
        description="Register RSNA-layout DICOM patients to the MNI152 template (BraTS grid).")
    parser.add_argument("input", type=Path, help="a patient folder or an RSNA-style cohort")
    parser.add_argument("output", type=Path,
                        help="folder for BraTS2021_<id>/ (NIfTI in template space + transforms)")
    parser.add_argument("--n4", action="store_true", help="N4 bias-field correction first")
    parser.add_argument("--affine-only", action="store_true",
                        help="plain affine to the template (faster, less accurate): no "
                             "B-spline refinement")
    parser.add_argument("--skull-strip", action="store_true",
                        help="multiply the template-space images by the atlas brain mask")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace patients an earlier run wrote in OUT")
    args = parser.parse_args(argv)
    try:
        report = register_cohort(args.input, args.output, args.n4, args.skull_strip,
                                 args.overwrite, args.affine_only)
    except (DataError, MissingExtraError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return finish(report, args.output / ERRORS_FILE)


if __name__ == "__main__":
    sys.exit(main())
