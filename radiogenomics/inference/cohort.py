"""The cohort to predict: every patient of a folder, whatever its layout, bad ones reported.

A prediction must cover every patient, so patients that a layout rejects (a missing series
folder, no label row) are kept in `Cohort.skipped` instead of stopping the run, even when
that leaves no patient to predict.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from radiogenomics.data.case import Case, canonical_sequence
from radiogenomics.data.cohorts import Cohort, duplicate_problem, load_cohort, normalise_id
from radiogenomics.data.cohorts import sequence_folders as unique_sequence_folders
from radiogenomics.errors import CohortError, Failure

LAYOUTS: tuple[str, ...] = (
    "patient", "rsna", "png", "synthetic", "brats2021", "brats2023", "brats_hgg_lgg",
)
"""Layouts predict.py reads (``data.layout``); ``patient`` is one patient's folder."""

_SINGLE_SPLIT = ("brats2021", "brats2023", "brats_hgg_lgg")
_NAMED_FOLDERS = {
    "brats2021": re.compile(r"BraTS2021_\d{5}|BraTS20_(Training|Validation)_\d{3}"),
    "brats2023": re.compile(r"BraTS-GLI-\d{5}-\d{3}"),
}


def _folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def sequence_folders(folder: Path) -> dict[str, Path]:
    """Sub-folders of `folder` named after an MRI sequence, by canonical sequence name
    (a sequence two folders name maps to the first: `patient_cohort` reports it)."""
    found: dict[str, Path] = {}
    for child in _folders(folder):
        try:
            found.setdefault(canonical_sequence(child.name), child)
        except KeyError:
            continue
    return found


def _is_patient_folders(path: Path) -> bool:
    """A folder of ``<numeric id>/<SEQ>/`` patient folders (e.g. Kaggle's ``test/``)."""
    patients = [p for p in _folders(path) if p.name.isdigit()]
    return bool(patients) and any(sequence_folders(p) for p in patients[:5])


def _holds_png(patients_dir: Path) -> bool:
    """Whether the series folders of the first patients under `patients_dir` hold PNG slices."""
    for patient in [p for p in _folders(patients_dir) if p.name.isdigit()][:5]:
        for series in sequence_folders(patient).values():
            if any(f.suffix.lower() == ".png" for f in series.iterdir()):
                return True
    return False


def _patients_dir(root: Path, split: str) -> Path | None:
    """The folder of ``<id>/<SEQ>/`` patient folders: ``root/split`` or `root` itself."""
    for folder in (root / split, root):
        if folder.is_dir() and _is_patient_folders(folder):
            return folder
    return None


def detect_layout(root: Path, split: str = "test") -> str:
    """The layout of the folder `root`, from its sub-folders' names and its series' files."""
    if sequence_folders(root):
        return "patient"
    if (root / "rsna").is_dir() or (root / "cohort.json").is_file():
        return "synthetic"
    patients_dir = _patients_dir(root, split)
    if patients_dir is not None:
        return "png" if _holds_png(patients_dir) else "rsna"
    names = [p.name for p in _folders(root)]
    for layout, pattern in _NAMED_FOLDERS.items():
        if any(pattern.fullmatch(name) for name in names):
            return layout
    if {"HGG", "LGG"} & set(names):
        return "brats_hgg_lgg"
    raise CohortError(
        f"cannot tell the layout of this folder (it holds {names[:5]})", path=root,
        hint="give an RSNA root (train/ test/), a folder of <id>/<SEQ>/ patient folders (DICOM "
             "or PNG), one patient folder, a BraTS folder, or set data.layout to one of "
             + ", ".join(LAYOUTS))


def patient_cohort(folder: Path, sequences: Sequence[str]) -> Cohort:
    """One patient's folder ``<id>/{FLAIR,T1w,T1wCE,T2w}/`` as a cohort of one case."""
    found, duplicated = unique_sequence_folders(folder)
    pid = normalise_id(folder.name)
    missing = [s for s in sequences if s not in found and s not in duplicated]
    case: Case = {"id": pid, "images": {s: str(p) for s, p in found.items()}, "seg": None,
                  "labels": {}, "source": "patient", "label_scheme": None}
    reasons = [duplicate_problem(s, duplicated[s]) for s in sequences if s in duplicated]
    if missing:
        reasons.append(f"missing sequence folder(s) {', '.join(missing)} in {folder}")
    if reasons:
        return Cohort("patient", folder, [], skipped=[Failure(pid, "; ".join(reasons))])
    return Cohort("patient", folder, [case])


def png_prediction_cohort(patients_dir: Path, sequences: Sequence[str]) -> Cohort:
    """The patients of a folder of ``<id>/<SEQ>/Image-N.png`` series, labelled or not.

    The PNG layout reads ``train_labels.csv`` beside the folder or in its parent, which may
    list the patients of another part (e.g. ``train/`` beside the ``test/`` predicted):
    only the patients on disk are the cohort's.
    """
    cohort = load_cohort("png", patients_dir, split="train", exclude=(), sequences=sequences,
                         allow_unlabelled=True, on_missing="report")
    on_disk = {normalise_id(p.name) for p in _folders(patients_dir)}
    cohort.skipped = [f for f in cohort.skipped if f.patient in on_disk]
    return cohort


def prediction_cohort(
    root: str | Path,
    sequences: Sequence[str],
    layout: str | None = None,
    split: str = "test",
    image_format: str = "dicom",
) -> Cohort:
    """Every patient under `root` with the `sequences` a model needs; bad ones in ``skipped``.

    `layout` None detects it. An RSNA-style root reads its `split` folder (or `root` is
    itself a folder of patient folders), and so does a PNG one (``<id>/<SEQ>/Image-N.png``);
    BraTS layouts read the whole folder; no patient is excluded on purpose (the RSNA flagged
    cases are predicted too). A cohort whose every patient is unusable comes back empty,
    with all of them in ``skipped``.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CohortError("cohort folder does not exist", path=root,
                          hint="set data.root to the folder of the patients to predict")
    layout = layout or detect_layout(root, split)
    if layout == "patient":
        return patient_cohort(root, sequences)
    if layout == "rsna":
        if not (root / split).is_dir() and _is_patient_folders(root):
            root, split = root.parent, root.name
        return load_cohort("rsna", root, split=split, exclude=(), sequences=sequences,
                           allow_unlabelled=True, on_missing="report")
    if layout == "png":
        return png_prediction_cohort(_patients_dir(root, split) or root, sequences)
    if layout == "synthetic":
        return load_cohort("synthetic", root, split=split, image_format=image_format,
                           on_missing="report")
    if layout in _SINGLE_SPLIT:
        return load_cohort(layout, root, sequences=sequences, on_missing="report")
    raise CohortError(f"predict.py cannot read layout {layout!r}",
                      hint=f"set data.layout to one of {', '.join(LAYOUTS)}")
