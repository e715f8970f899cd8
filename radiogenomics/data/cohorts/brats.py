"""BraTS layouts (NIfTI): 2021 (and 2020), 2023 glioma, and 2018/2019 ``HGG/`` ``LGG/``.

The names of their folders and files (`BRATS_FOLDERS`, `BRATS2021_SUFFIXES`, ...) are defined
once, in `names` (which label tables need too), for these layouts, the converter, the generator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radiogenomics.data.case import Case, canonical_sequence
from radiogenomics.errors import CohortError

from .names import BRATS2021_SUFFIXES, BRATS2023_SUFFIXES, BRATS_FOLDERS, folder_case_id
from .record import Cohort, Options, check_single_split, existing_dir, finish, make_case, subfolders
from .tables import merge_label_tables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _NiftiLayout:
    """File naming of a BraTS-style release: ``<case>/<case><sep><suffix>.nii.gz``."""

    sep: str
    suffixes: dict[str, str]
    """Canonical sequence -> file suffix."""
    source: str
    label_scheme: str


_BRATS2021 = _NiftiLayout("_", BRATS2021_SUFFIXES, "brats2021", "brats2021")
_BRATS2023 = _NiftiLayout("-", BRATS2023_SUFFIXES, "brats2023", "brats2023")
_BRATS_HGG_LGG = _NiftiLayout("_", BRATS2021_SUFFIXES, "brats_hgg_lgg", "brats2021")


def _nifti_file(folder: Path, layout: _NiftiLayout, suffix: str) -> Path | None:
    """The ``.nii.gz`` (or ``.nii``) file of `suffix` in a case folder, if present; both
    present is a CohortError naming them (never a silent pick)."""
    stem = f"{folder.name}{layout.sep}{suffix}"
    present = [p for p in (folder / f"{stem}.nii.gz", folder / f"{stem}.nii") if p.is_file()]
    if len(present) > 1:
        raise CohortError(f"two files of one image: {present[0].name} and {present[1].name}",
                          path=folder, hint="keep one of them")
    return present[0] if present else None


def _nifti_case(
    pid: str,
    folder: Path,
    layout: _NiftiLayout,
    labels: dict[str, Any],
    sequences: Sequence[str],
    options: Options,
) -> tuple[Case, list[str]]:
    """A case read from one BraTS-style folder, and what is wrong with it."""
    images: dict[str, str] = {}
    problems = []
    for sequence in sequences:
        try:
            path = _nifti_file(folder, layout, layout.suffixes[sequence])
        except CohortError as error:
            problems.append(str(error))
            continue
        if path is not None:
            images[sequence] = str(path)
        elif options.require_all_sequences:
            problems.append(f"missing {folder.name}{layout.sep}{layout.suffixes[sequence]}.nii.gz")
    if not images and not problems:
        problems.append(f"no image file in {folder}")
    try:
        seg = _nifti_file(folder, layout, "seg")
    except CohortError as error:
        problems.append(str(error))
        seg = None
    if seg is None and options.require_seg:
        problems.append(f"missing {folder.name}{layout.sep}seg.nii.gz")
    case = make_case(pid, images, labels, layout.source,
                     str(seg) if seg else None, layout.label_scheme)
    return case, problems


def _nifti_cohort(
    root: Path,
    layout: _NiftiLayout,
    folders: dict[str, Path],
    labels: dict[str, dict[str, Any]],
    problems: list[tuple[str, str]],
    options: Options,
) -> Cohort:
    """Cases of the BraTS-style `folders` (id -> folder), with their `labels`."""
    sequences = [canonical_sequence(s) for s in options.sequences]
    skip = options.excluded
    cases = {}
    for pid, folder in folders.items():
        if pid in skip:
            continue
        case, issues = _nifti_case(pid, folder, layout, labels.get(pid, {}), sequences, options)
        cases[pid] = case
        problems = problems + [(pid, issue) for issue in issues]
    unmatched = set(labels) - set(folders)
    if unmatched:
        log.info("%s: %d labelled patient(s) have no case folder in %s",
                 layout.source, len(unmatched), root)
    return finish(layout.source, root, cases, problems, options.on_missing, skip & set(folders))


def _case_folders(root: Path, layout: str, expected: str) -> dict[str, Path]:
    """Case id -> folder for the sub-folders of `root` named like the cases of `layout`."""
    folders = {}
    for folder in subfolders(root):
        pid = folder_case_id(BRATS_FOLDERS[layout], folder.name)
        if pid:
            folders[pid] = folder
    if not folders:
        present = [p.name for p in subfolders(root)][:5]
        raise CohortError(f"no case folder named like {expected}", path=root,
                          hint=f"set data.root to the folder holding them; it holds {present}")
    return folders


def _one_folder(root: str | Path, options: dict[str, Any], layout: str, what: str
                ) -> tuple[Path, Options]:
    """The root folder and options of a one-folder BraTS layout, checked."""
    opts = Options.of(options)
    check_single_split(opts.split, layout, root)
    return existing_dir(root, what, "set data.root to the training data"), opts


def brats2021_cohort(root: str | Path, **options: Any) -> Cohort:
    """BraTS 2021: ``root/BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``.

    Case id ``XXXXX`` (the RSNA id). BraTS 2020 folders (``BraTS20_Training_001``) are read
    too, under their full name. Labels are merged from whichever of ``clinical.csv``,
    ``train_labels.csv`` (RSNA) and ``survival_info.csv`` (BraTS 2020) are in `root`.
    The whole folder is the ``train`` split. `options`: see `Options` (`allow_unlabelled`
    and `image_format` do not apply).
    """
    root, opts = _one_folder(root, options, "brats2021", "BraTS 2021 cohort root")
    folders = _case_folders(root, "brats2021", "BraTS2021_XXXXX")
    tables = [root / n for n in ("clinical.csv", "train_labels.csv", "survival_info.csv")]
    return _nifti_cohort(root, _BRATS2021, folders, merge_label_tables(tables), [], opts)


def brats2023_cohort(root: str | Path, **options: Any) -> Cohort:
    """BraTS 2023 glioma: ``root/BraTS-GLI-xxxxx-xxx/BraTS-GLI-xxxxx-xxx-{t1c,..,seg}.nii.gz``.

    Case id ``xxxxx-xxx``; ``patient`` is ``xxxxx``, so that splits keep a patient's
    timepoints together. Labels from ``root/clinical.csv`` when present. The whole folder is
    the ``train`` split. `options`: see `Options` (`allow_unlabelled` and `image_format` do
    not apply).
    """
    root, opts = _one_folder(root, options, "brats2023", "BraTS 2023 cohort root")
    folders = _case_folders(root, "brats2023", "BraTS-GLI-xxxxx-xxx")
    labels = merge_label_tables([root / "clinical.csv"])
    cohort = _nifti_cohort(root, _BRATS2023, folders, labels, [], opts)
    for case in cohort.cases:
        case["patient"] = case["id"].split("-")[0]
    return cohort


def brats_hgg_lgg_cohort(root: str | Path, **options: Any) -> Cohort:
    """BraTS 2018/2019: ``root/{HGG,LGG}/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz``.

    Case id = folder name; ``grade`` is 1 for HGG, 0 for LGG. Survival is merged from
    ``survival_data.csv`` or ``survival_info.csv`` in `root` when present. The whole folder
    is the ``train`` split. `options`: see `Options` (`allow_unlabelled` and `image_format`
    do not apply).
    """
    root, opts = _one_folder(root, options, "brats_hgg_lgg", "BraTS 2018/2019 cohort root")
    folders: dict[str, Path] = {}
    grades: dict[str, dict[str, Any]] = {}
    problems = []
    for grade_name, grade in (("HGG", 1), ("LGG", 0)):
        if not (root / grade_name).is_dir():
            continue
        for folder in subfolders(root / grade_name):
            if folder.name in folders:
                problems.append((folder.name, "case folder is in both HGG/ and LGG/"))
            folders[folder.name] = folder
            grades[folder.name] = {"grade": grade}
    if not folders:
        raise CohortError("no case folder in HGG/ or LGG/", path=root,
                          hint="set data.root to the folder holding HGG/ and LGG/")
    labels = merge_label_tables([root / "survival_data.csv", root / "survival_info.csv"])
    for pid, grade in grades.items():
        labels.setdefault(pid, {}).update(grade)
    return _nifti_cohort(root, _BRATS_HGG_LGG, folders, labels, problems, opts)
