"""A whole synthetic cohort: patients in parallel, label tables, manifest, atomic publish."""

from __future__ import annotations

import csv
import inspect
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from radiogenomics.errors import CohortError

from .brats import write_brats
from .patient import simulate_patient
from .rsna import write_rsna
from .settings import GENERATOR_VERSION, Settings, make_settings

FORMATS: dict[str, tuple[str, ...]] = {
    "dicom": ("rsna",),
    "nifti": ("brats",),
    "both": ("rsna", "brats"),
}
MANIFEST = "cohort.json"

log = logging.getLogger(__name__)


def patient_ids(settings: Settings, count: int) -> list[str]:
    """Five-digit ids from 00000 upwards with random gaps; a prefix does not depend on `count`."""
    ids, current = [], 0
    for k, u in enumerate(settings.ids_rng().random(count)):
        current += 0 if k == 0 else 1 + int(u > 0.6) + int(u > 0.9)
        ids.append(f"{current:05d}")
    return ids


def _build_patient(job: tuple[Settings, int, str, str, tuple[str, ...], Path]) -> dict[str, Any]:
    """Simulate one patient, write its files under `root`, return its table row."""
    settings, index, patient_id, split, parts, root = job
    patient = simulate_patient(settings, index, patient_id)
    if "rsna" in parts:
        write_rsna(patient, settings, root / "rsna" / split)
    if "brats" in parts:
        write_brats(patient, settings, root / "brats")
    row = {"id": patient_id, "split": split, **patient.labels,
           "mgmt_true": patient.clinical.mgmt_true}
    if patient.native_from_template:  # the ground truth of registration (pose.py)
        row["native_from_template"] = {sequence: matrix.tolist() for
                                       sequence, matrix in patient.native_from_template.items()}
    return row


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _run(jobs: list, workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(jobs) <= 1:
        return [_build_patient(job) for job in jobs]
    # spawn, not fork: the caller may hold threads (torch, BLAS) that fork would break.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_build_patient, jobs))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(root: Path, parts: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    clinical = [[int(r["id"]), r["grade"], r["age"], r["survival_days"]] for r in rows]
    if "rsna" in parts:
        rsna = root / "rsna"
        (rsna / "train").mkdir(parents=True, exist_ok=True)
        (rsna / "test").mkdir(parents=True, exist_ok=True)
        header = ["BraTS21ID", "MGMT_value"]
        _write_csv(rsna / "train_labels.csv", header, [[int(r["id"]), r["mgmt"]] for r in train])
        _write_csv(rsna / "test_labels.csv", header, [[int(r["id"]), r["mgmt"]] for r in test])
        _write_csv(rsna / "sample_submission.csv", header, [[int(r["id"]), 0.5] for r in test])
        _write_csv(rsna / "clinical.csv", ["BraTS21ID", "grade", "age", "survival_days"], clinical)
    if "brats" in parts:
        _write_csv(
            root / "brats" / "clinical.csv",
            ["BraTS21ID", "MGMT_value", "grade", "age", "survival_days"],
            [[c[0], r["mgmt"], *c[1:]] for c, r in zip(clinical, rows)],
        )


def _manifest(out: Path) -> dict[str, Any]:
    """The manifest of a cohort folder; empty when there is none or it is unreadable."""
    try:
        found = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _differences(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """``key: found, asked`` for each setting of `expected` that `found` has otherwise."""
    differences = []
    for key, value in expected.items():
        have = found.get(key)
        if key == "settings" and isinstance(have, dict):
            differences += [f"{name} {have.get(name)!r}, asked {asked!r}"
                            for name, asked in value.items() if have.get(name) != asked]
        elif have != value:
            differences.append(f"{key} {have!r}, asked {value!r}")
    return differences


def _manifest_matches(out: Path, expected: dict[str, Any]) -> bool:
    found = _manifest(out)
    return bool(found) and not _differences(found, expected)


def _claim(out: Path, expected: dict[str, Any], overwrite: bool) -> bool:
    """True when `out` already holds this cohort; raise if it holds anything we may not replace."""
    if not out.exists():
        return False
    if _manifest_matches(out, expected) and not overwrite:
        return True
    if overwrite or (out.is_dir() and not any(out.iterdir())):
        return False
    found = _manifest(out)
    what = ("holds a synthetic cohort with other settings: " + "; ".join(
        _differences(found, expected)) if found else "is not a synthetic cohort (no cohort.json)")
    raise CohortError(
        f"the output folder exists and does not hold a synthetic cohort with these settings: "
        f"it {what}",
        path=out,
        hint="choose another output folder, delete this one, or pass overwrite=True (--overwrite)",
    )


def _publish(partial: Path, out: Path, expected: dict[str, Any], overwrite: bool) -> None:
    """Rename the finished temporary folder to `out` (atomic on one file system)."""
    try:
        os.rename(partial, out)
        return
    except OSError:
        if _manifest_matches(out, expected) and not overwrite:
            return  # a concurrent run published the same cohort first
        if not overwrite:
            raise
    stale = out.with_name(f".{out.name}.replaced-{os.getpid()}")
    os.rename(out, stale)
    os.rename(partial, out)
    shutil.rmtree(stale, ignore_errors=True)


def _expected_manifest(
    patients: int, seed: int, format: str, test_patients: int | None, preset: str, size: int,
    mgmt_signal: float | None, mgmt_label_noise: float | None,
) -> dict[str, Any]:
    """What the manifest of a cohort with these settings says (``cases`` aside)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {format!r}")
    if patients < 1:
        raise ValueError(f"patients must be >= 1, got {patients}")
    n_test = round(0.2 * patients) if test_patients is None else test_patients
    if not 0 <= n_test <= patients:
        raise ValueError(f"test_patients must lie in [0, {patients}], got {n_test}")
    settings = make_settings(
        preset, seed=seed, size=size, mgmt_signal=mgmt_signal, mgmt_label_noise=mgmt_label_noise
    )
    shape, _ = settings.grid()
    return {
        "generator": "radiogenomics.data.synthetic",
        "version": GENERATOR_VERSION,
        "preset": preset,
        "seed": seed,
        "patients": patients,
        "test_patients": n_test,
        "format": format,
        "settings": settings.as_dict(),
        "nifti_shape": list(shape),
        "nifti_voxel_mm": settings.voxel_mm,
    }


def ensure_cohort(root: str | Path, **settings: Any) -> Path:
    """The synthetic cohort a training run asks for at `root`: generated when `root` does not
    exist (or is an empty folder), read as it is when it holds this cohort, never replaced.

    A folder that holds anything else (a cohort generated with other settings, the user's own
    files) is a CohortError that says how it differs; a cohort that differs only by the
    generator's version is used as it is, with a warning. `settings` are the keyword
    arguments of `generate_cohort` (``overwrite`` aside).
    """
    root = Path(root)
    if "overwrite" in settings:
        raise TypeError("ensure_cohort never overwrites: use generate_cohort(overwrite=True)")
    chosen = inspect.signature(generate_cohort).bind(root, **settings)
    chosen.apply_defaults()
    expected = _expected_manifest(*(chosen.arguments[name] for name in (
        "patients", "seed", "format", "test_patients", "preset", "size", "mgmt_signal",
        "mgmt_label_noise")))
    if root.exists() and not (root.is_dir() and not any(root.iterdir())):
        found = _manifest(root)
        if not found:
            raise CohortError(
                "data.root exists but holds no synthetic cohort (no readable cohort.json): "
                "it is never generated over",
                path=root,
                hint="point data.root to a new folder (the cohort is generated there), or set "
                     "data.layout (and data.synthetic=null) to read this folder as it is")
        differences = _differences(found, expected)
        if differences and all(d.startswith("version ") for d in differences):
            log.warning("%s was made by synthetic generator version %s (now %s): read as it is; "
                        "delete it, or choose another data.root, to get a new one", root,
                        found.get("version"), GENERATOR_VERSION)
            return root
        if differences:
            raise CohortError(
                "data.root holds a synthetic cohort generated with other settings than "
                "data.synthetic (" + "; ".join(differences) + "); it is never regenerated",
                path=root,
                hint="set data.synthetic=null to train on it as it is, or point data.root to "
                     "a new folder, where a cohort with these settings is generated")
        return root
    log.info("generating synthetic cohort in %s", root)
    return generate_cohort(root, **settings)


def generate_cohort(
    out: str | Path,
    patients: int = 24,
    seed: int = 0,
    format: str = "both",
    test_patients: int | None = None,
    preset: str = "default",
    *,
    size: int = 96,
    mgmt_signal: float | None = None,
    mgmt_label_noise: float | None = None,
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic cohort (RSNA DICOM and/or BraTS NIfTI) to `out` and return `out`.

    Same arguments give the same bytes. An existing cohort with the same settings is kept
    as is; a run that is killed leaves only a hidden ``.<name>.partial-*`` folder behind.
    `mgmt_signal` / `mgmt_label_noise` override the preset's (see ``settings.PRESETS``).
    Any other existing, non-empty folder is an error unless `overwrite` (the command line's
    ``--overwrite``) asks to replace it; training uses `ensure_cohort`, which never replaces.
    """
    expected = _expected_manifest(patients, seed, format, test_patients, preset, size,
                                  mgmt_signal, mgmt_label_noise)
    settings = make_settings(
        preset, seed=seed, size=size, mgmt_signal=mgmt_signal, mgmt_label_noise=mgmt_label_noise
    )
    n_test = expected["test_patients"]
    out = Path(out)
    if _claim(out, expected, overwrite):
        return out

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        parts = FORMATS[format]
        ids = patient_ids(settings, patients)
        splits = ["train"] * (patients - n_test) + ["test"] * n_test
        jobs = [(settings, k, pid, split, parts, partial) for k, (pid, split) in
                enumerate(zip(ids, splits))]
        workers = workers or _available_cores()
        rows = _run(jobs, min(workers, patients))
        _write_tables(partial, parts, rows)
        manifest = {**expected, "cases": rows}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _publish(partial, out, expected, overwrite)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out
