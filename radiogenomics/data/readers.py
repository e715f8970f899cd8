"""The one entry point for reading an image: which reader a path goes to, and the reading.

A DICOM series folder or file goes to `dicom.py`, a NIfTI file to `nifti.py`, a folder of
PNG slices to `png.py`; each returns a `Volume` (see `volume.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from radiogenomics.data.dicom import read_dicom, read_dicom_series
from radiogenomics.data.nifti import read_nifti
from radiogenomics.data.png import read_png_volume
from radiogenomics.data.volume import DICOM_SUFFIXES, Volume, is_nifti
from radiogenomics.errors import DataError

Reader = Callable[..., Volume]


def _has_dicom_preamble(path: Path) -> bool:
    """Whether the file has the "DICM" marker of a DICOM Part 10 file (any file name)."""
    with open(path, "rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def _is_dicom(path: Path) -> bool:
    """Whether `path` goes to the DICOM reader (a folder of slices, a DICOM file, or missing)."""
    if is_nifti(path):
        return False
    if path.is_dir():
        return not any(p.suffix.lower() == ".png" for p in path.iterdir())
    return not path.is_file() or path.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(path)


def reader_for(path: Path) -> tuple[str, Reader]:
    """The format name and reader of `path`: ``nifti``, ``dicom`` or ``png``."""
    if is_nifti(path):
        return "nifti", read_nifti
    if _is_dicom(path):
        return "dicom", read_dicom
    if path.is_dir():
        return "png", read_png_volume
    raise DataError(
        "unknown image format",
        path=path,
        hint="give a DICOM series folder, a .dcm file or a .nii/.nii.gz file",
    )


def load_volume(path: str | Path, patient: str | None = None, **options: Any) -> Volume:
    """Read a DICOM series folder, a DICOM file, a NIfTI file or a PNG series folder (RAS+).

    `options` go to the DICOM reader (e.g. ``skip_invalid_files=True``, config key
    ``data.skip_invalid_files``). A multi-volume (4D) DICOM series or NIfTI file is refused.
    """
    path = Path(path)
    try:
        kind, read = reader_for(path)
    except DataError as err:
        raise DataError(err.reason, patient=patient, path=path, hint=err.hint) from None
    return read(path, patient=patient, **(options if kind == "dicom" else {}))


def load_volumes(path: str | Path, patient: str | None = None, **options: Any) -> list[Volume]:
    """Every volume of an image, as `load_volume` reads it: several for a 4D DICOM series."""
    path = Path(path)
    if _is_dicom(path):
        return read_dicom_series(path, patient=patient, **options)
    return [load_volume(path, patient=patient, **options)]
