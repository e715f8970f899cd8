"""Files a prediction run writes: submission.csv, predictions.csv, errors.csv, uncertainty.csv,
and for segmenters segmentations.csv (and their own uncertainty.csv)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from radiogenomics.data.cohorts import normalise_id
from radiogenomics.errors import Failure, RadiogenomicsError
from radiogenomics.inference.runner import CohortPrediction, fallback_probabilities
from radiogenomics.inference.segmentation import CohortSegmentation

ID_COLUMN = "BraTS21ID"
TARGET_COLUMNS: dict[str, str] = {"mgmt": "MGMT_value"}
"""Submission column of a target (Kaggle's name for MGMT); other targets use their own name."""

ERROR_COLUMNS = ["patient", "series", "path", "error"]

OUTPUT_FILES: tuple[str, ...] = (
    "submission.csv", "predictions.csv", "errors.csv", "uncertainty.csv", "segmentations.csv",
    "region_volumes.csv", "report.md", "roc.png", "confusion.png", "calibration.png", "dice.png",
)
"""Files predict.py writes at the top of its output folder."""
OUTPUT_PATTERNS: dict[str, re.Pattern[str]] = {
    # <id>_<explainer>.png / .nii.gz
    "maps": re.compile(r".+_(gradcam|attention)\.(png|nii\.gz)"),
    # <id>_seg.nii.gz and the voxel-wise uncertainty maps beside it
    "masks": re.compile(r".+_(seg|prob_mean|prob_std|entropy)\.nii\.gz"),
}
"""Files predict.py writes in the sub-folders of its output folder."""


def earlier_outputs(out_dir: str | Path) -> list[Path]:
    """The files of an earlier prediction in `out_dir`: only names predict.py writes."""
    out_dir = Path(out_dir)
    found = [out_dir / name for name in OUTPUT_FILES if (out_dir / name).is_file()]
    for folder, pattern in OUTPUT_PATTERNS.items():
        if (out_dir / folder).is_dir():
            found += sorted(p for p in (out_dir / folder).iterdir()
                            if p.is_file() and pattern.fullmatch(p.name))
    return found


def clear_earlier_outputs(out_dir: str | Path, overwrite: bool) -> list[Path]:
    """Make `out_dir` ready for a new prediction; the files removed.

    An earlier prediction there is an error unless `overwrite`, which removes only the files
    predict.py writes (any other file, e.g. the user's notes, stays), so that figures or masks
    of an earlier run never lie beside the new results.
    """
    out_dir = Path(out_dir)
    earlier = earlier_outputs(out_dir)
    if earlier and not overwrite:
        names = ", ".join(str(p.relative_to(out_dir)) for p in earlier[:6])
        more = f" and {len(earlier) - 6} more" if len(earlier) > 6 else ""
        raise RadiogenomicsError(
            f"output_dir {out_dir} already holds an earlier prediction ({names}{more}) -> "
            "choose another output_dir, or pass overwrite=true to replace it (only the files "
            "predict.py writes are removed)")
    for path in earlier:
        path.unlink()
    for folder in OUTPUT_PATTERNS:
        if (out_dir / folder).is_dir() and not any((out_dir / folder).iterdir()):
            (out_dir / folder).rmdir()
    return earlier


def reject_non_finite(result: CohortPrediction, fallback: float) -> list[str]:
    """Turn every patient whose prediction is not finite (NaN or inf, from the model or its
    uncertainty) into a failure with the fallback value; the ids of those patients."""
    bad = []
    for patient in result.patients:
        if patient.failed:
            continue
        values = [patient.probabilities, patient.members]
        if patient.uncertainty is not None:
            summary = patient.uncertainty
            values += [np.asarray(summary.mean), np.asarray(summary.std), [summary.entropy]]
        if all(np.isfinite(np.asarray(v, dtype=float)).all() for v in values):
            continue
        bad.append(patient.id)
        n_outputs = patient.probabilities.size
        patient.probabilities = fallback_probabilities(n_outputs, fallback)
        patient.members = np.empty((0, n_outputs))
        patient.uncertainty = None
        patient.failed = True
        result.failures.append(Failure(
            patient.id, f"[patient {patient.id}] the model's output is not finite "
            "(NaN or inf) -> check this patient's images (extreme or empty intensities) and "
            "that the checkpoint is not diverged"))
    return bad


def _ids(result: CohortPrediction) -> list[str]:
    """Patient ids as Kaggle expects them: RSNA integers zero-padded to 5 digits."""
    return [normalise_id(p.id) for p in result.patients]


def write_submission(result: CohortPrediction, path: str | Path) -> Path:
    """One row per patient: the positive-class probability (binary) or the predicted class."""
    column = TARGET_COLUMNS.get(result.target, result.target)
    values = [float(p.probabilities[0]) if p.probabilities.size == 1
              else int(p.probabilities.argmax()) for p in result.patients]
    pd.DataFrame({ID_COLUMN: _ids(result), column: values}).to_csv(path, index=False)
    return Path(path)


def write_predictions(result: CohortPrediction, path: str | Path) -> Path:
    """Everything per patient: status, probabilities, each member's, and the label if known."""
    rows = []
    for patient, pid in zip(result.patients, _ids(result)):
        row: dict[str, object] = {ID_COLUMN: pid, "status": "failed" if patient.failed else "ok"}
        single = patient.probabilities.size == 1
        for k, value in enumerate(patient.probabilities):
            row["probability" if single else f"probability_{k}"] = float(value)
        for name, member in zip(result.members, patient.members):
            for k, value in enumerate(member):
                row[f"member_{name}" if single else f"member_{name}_{k}"] = float(value)
        row["label"] = patient.label
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return Path(path)


def write_errors(result: CohortPrediction | CohortSegmentation, path: str | Path) -> Path:
    """Every patient or series that could not be used and why (a header alone when none)."""
    rows = sorted([f.patient, f.series, f.path, f.reason] for f in result.failures)
    pd.DataFrame(rows, columns=ERROR_COLUMNS).to_csv(path, index=False)
    return Path(path)


def write_uncertainty(result: CohortPrediction, path: str | Path) -> Path:
    """Per patient: method, samples, mean and standard deviation, predictive entropy (bits)."""
    rows = []
    for patient, pid in zip(result.patients, _ids(result)):
        summary = patient.uncertainty
        if summary is None:
            continue
        row: dict[str, object] = {ID_COLUMN: pid, "method": summary.method,
                                  "samples": summary.samples}
        single = summary.mean.size == 1
        for k, (mean, std) in enumerate(zip(summary.mean, summary.std)):
            row["mean" if single else f"mean_{k}"] = float(mean)
            row["std" if single else f"std_{k}"] = float(std)
        row["entropy_bits"] = summary.entropy
        rows.append(row)
    pd.DataFrame(rows).to_csv(path, index=False)
    return Path(path)


def write_segmentation_uncertainty(result: CohortSegmentation, path: str | Path) -> Path:
    """Per patient: method, samples, predicted tumour voxels, mean entropy (bits) and mean
    standard deviation of each channel inside the predicted tumour, and the entropy map."""
    rows = []
    for patient in result.patients:
        summary = patient.uncertainty
        if summary is None:
            continue
        rows.append({ID_COLUMN: normalise_id(patient.id), "method": summary.method,
                     "samples": summary.samples, "tumour_voxels": summary.tumour_voxels,
                     "entropy_tumour_bits": summary.entropy_tumour,
                     **{f"std_tumour_{name}": value
                        for name, value in summary.std_tumour.items()},
                     "entropy_map": str(summary.maps[-1])})
    pd.DataFrame(rows).to_csv(path, index=False)
    return Path(path)


def write_segmentations(result: CohortSegmentation, path: str | Path) -> Path:
    """Per patient: status, mask file, region volumes (ml) and scores against its own mask."""
    rows = []
    for patient in result.patients:
        row: dict[str, object] = {ID_COLUMN: normalise_id(patient.id),
                                  "status": "failed" if patient.failed else "ok",
                                  "mask": str(patient.mask) if patient.mask else ""}
        rows.append({**row, **patient.volumes, **patient.scores})
    pd.DataFrame(rows).to_csv(path, index=False)
    return Path(path)


def summary_line(result: CohortPrediction | CohortSegmentation) -> str:
    """One line for the log: how many patients, models and failures."""
    failed = sorted({f.patient for f in result.failures})
    text = (f"{len(result.patients)} patient(s) predicted with {len(result.members)} model(s); "
            f"{len(failed)} failed")
    return text + (f" ({', '.join(failed)})" if failed else "")
