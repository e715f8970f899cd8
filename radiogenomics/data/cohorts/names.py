"""Patient ids and BraTS names: case folders, their files, and the file suffix of a sequence."""

from __future__ import annotations

import re
from pathlib import Path

BRATS2021_SUFFIXES: dict[str, str] = {"FLAIR": "flair", "T1w": "t1", "T1wCE": "t1ce", "T2w": "t2"}
"""BraTS 2018-2021 file suffix of each canonical sequence."""

BRATS2023_SUFFIXES: dict[str, str] = {"FLAIR": "t2f", "T1w": "t1n", "T1wCE": "t1c", "T2w": "t2w"}
"""BraTS 2023 file suffix of each canonical sequence."""

BRATS_FOLDERS: dict[str, re.Pattern[str]] = {
    "brats2021": re.compile(r"BraTS2021_(\d{5})|(BraTS20_(?:Training|Validation)_\d{3})"),
    "brats2023": re.compile(r"BraTS-GLI-(\d{5}-\d{3})"),
}
"""Case folder names of each BraTS release; the group that matched is the case id."""


def folder_case_id(pattern: re.Pattern[str], name: str) -> str | None:
    """The case id in a folder `name` of `pattern` (see `BRATS_FOLDERS`), None if it is not one."""
    match = pattern.fullmatch(name)
    return next(group for group in match.groups() if group) if match else None


def normalise_id(raw: object) -> str:
    """A patient id as the cases use it: RSNA integers padded to 5 digits, BraTS prefixes cut."""
    text = str(raw).strip()
    if text.isdigit():
        return text.zfill(5)
    for pattern in BRATS_FOLDERS.values():
        pid = folder_case_id(pattern, text)
        if pid:
            return pid
    return text


def brats2021_case(patient: str) -> str:
    """The BraTS 2021 case folder of a patient: ``BraTS2021_XXXXX`` for a numeric (RSNA) id,
    the id itself otherwise."""
    return f"BraTS2021_{int(patient):05d}" if patient.isdigit() and len(patient) <= 5 else patient


def brats2021_file(root: Path, patient: str, suffix: str) -> Path:
    """``root/<case>/<case>_<suffix>.nii.gz``: one file of a patient in the BraTS 2021 layout."""
    case = brats2021_case(patient)
    return root / case / f"{case}_{suffix}.nii.gz"
