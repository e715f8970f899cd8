"""The cohort to predict: every patient of a folder, whatever its layout, bad ones reported.

The layout of a folder is told from its sub-folders' names and its series' files; one
patient's folder (``<id>/<SEQ>/``) is a layout of its own. A prediction must cover every
patient, so patients that a layout rejects (a missing series folder, no label row) are kept
in `Cohort.skipped` instead of stopping the run, even when that leaves no patient to predict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from radiogenomics.errors import CohortError

from .names import BRATS_FOLDERS, normalise_id
from .patient_folders import duplicate_problem, sequence_folders
from .record import (
    Cohort,
    Layout,
    Options,
    check_single_split,
    existing_dir,
    finish,
    make_case,
    subfolders,
)
from .registry import COHORTS

LAYOUTS: tuple[str, ...] = (
    "patient", "rsna", "png", "synthetic", "brats2021", "brats2023", "brats_hgg_lgg",
)
"""Layouts predict.py reads (``data.layout``); ``patient`` is one patient's folder."""

_SPLIT_FOLDERS = ("rsna", "synthetic")
"""Layouts whose root holds one folder per split; the others' folder is one ``train`` split."""


def _sequence_dirs(folder: Path) -> list[Path]:
    """Every sub-folder of `folder` named after an MRI sequence."""
    found, duplicated = sequence_folders(folder)
    return [*found.values(), *(path for paths in duplicated.values() for path in paths)]


def _is_patient_folders(path: Path) -> bool:
    """A folder of ``<numeric id>/<SEQ>/`` patient folders (e.g. Kaggle's ``test/``)."""
    patients = [p for p in subfolders(path) if p.name.isdigit()]
    return bool(patients) and any(_sequence_dirs(p) for p in patients[:5])


def _holds_png(patients_dir: Path) -> bool:
    """Whether the series folders of the first patients under `patients_dir` hold PNG slices."""
    for patient in [p for p in subfolders(patients_dir) if p.name.isdigit()][:5]:
        for series in _sequence_dirs(patient):
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
    if _sequence_dirs(root):
        return "patient"
    if (root / "rsna").is_dir() or (root / "cohort.json").is_file():
        return "synthetic"
    patients_dir = _patients_dir(root, split)
    if patients_dir is not None:
        return "png" if _holds_png(patients_dir) else "rsna"
    names = [p.name for p in subfolders(root)]
    for layout, pattern in BRATS_FOLDERS.items():
        if any(pattern.fullmatch(name) for name in names):
            return layout
    if {"HGG", "LGG"} & set(names):
        return "brats_hgg_lgg"
    raise CohortError(
        f"cannot tell the layout of this folder (it holds {names[:5]})", path=root,
        hint="give an RSNA root (train/ test/), a folder of <id>/<SEQ>/ patient folders (DICOM "
             "or PNG), one patient folder, a BraTS folder, or set data.layout to one of "
             + ", ".join(LAYOUTS))


def patient_cohort(root: str | Path, **options: Any) -> Cohort:
    """One patient's folder ``<id>/{FLAIR,T1w,T1wCE,T2w}/`` as a cohort of one case.

    `options`: see `Options`; only `sequences`, `split` (``train``: the folder) and
    `on_missing` apply.
    """
    opts = Options.of(options)
    check_single_split(opts.split, "patient", root)
    folder = existing_dir(root, "patient folder", "set data.root to the patient's folder")
    found, duplicated = sequence_folders(folder)
    pid = normalise_id(folder.name)
    missing = [s for s in opts.sequences if s not in found and s not in duplicated]
    reasons = [(pid, duplicate_problem(s, duplicated[s]))
               for s in opts.sequences if s in duplicated]
    if missing:
        reasons.append((pid, f"missing sequence folder(s) {', '.join(missing)} in {folder}"))
    images = {s: str(p) for s, p in found.items()}
    case = make_case(pid, images, {}, "patient")
    return finish("patient", folder, {pid: case}, reasons, opts.on_missing)


_READERS: dict[str, Layout] = {"patient": patient_cohort, **COHORTS}


def _where(root: Path, layout: str, split: str) -> tuple[Path, str]:
    """The folder and split that `layout` reads to predict the patients of `split` at `root`."""
    if layout == "png":
        return _patients_dir(root, split) or root, "train"
    if layout not in _SPLIT_FOLDERS:
        return root, "train"
    if layout == "rsna" and not (root / split).is_dir() and _is_patient_folders(root):
        return root.parent, root.name  # `root` is a split folder itself
    return root, split


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
    if layout not in _READERS:
        raise CohortError(f"predict.py cannot read layout {layout!r}",
                          hint=f"set data.layout to one of {', '.join(LAYOUTS)}")
    folder, split = _where(root, layout, split)
    cohort = _READERS[layout](folder, split=split, sequences=sequences, exclude=(),
                              allow_unlabelled=True, image_format=image_format,
                              on_missing="report")
    if layout == "png":
        # its label table may sit beside other parts' folders (train/ beside test/) and list
        # their patients: only the patients on disk are this cohort's
        on_disk = {normalise_id(p.name) for p in subfolders(folder)}
        cohort.skipped = [f for f in cohort.skipped if f.patient in on_disk]
    return cohort
