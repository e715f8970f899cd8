"""The one entry point for reading an image: a DICOM series folder, a DICOM file or a NIfTI file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radiogenomics.data.errors import DataError

PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal", "unknown")
"""Acquisition planes a Volume can report."""

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima", "")


@dataclass
class Volume:
    """A 3D image in RAS+ voxel order with its voxel -> RAS+ mm affine.

    `meta` holds non-identifying facts (series_description, n_slices, transfer_syntax, ...),
    never patient names, ids or dates.
    """

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    plane: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_array(
        cls, array: np.ndarray, affine: np.ndarray, plane: str = "unknown", **meta: Any
    ) -> Volume:
        """A Volume whose spacing is read off the affine's column lengths."""
        affine = np.asarray(affine, dtype=np.float64)
        spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        return cls(np.asarray(array, dtype=np.float32), affine, spacing, plane, dict(meta))


def is_nifti(path: str | Path) -> bool:
    """Whether `path` names a NIfTI file (.nii or .nii.gz)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


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


def load_volume(path: str | Path, patient: str | None = None, **options: Any) -> Volume:
    """Read a DICOM series folder, a DICOM file, a NIfTI file or a PNG series folder (RAS+).

    `options` go to the DICOM reader (e.g. ``skip_invalid_files=True``, config key
    ``data.skip_invalid_files``). A multi-volume (4D) DICOM series or NIfTI file is refused.
    """
    # Imported here: both readers build Volume objects from this module.
    from radiogenomics.data.dicom import read_dicom
    from radiogenomics.data.nifti import read_nifti
    from radiogenomics.data.png import read_png_volume

    path = Path(path)
    if is_nifti(path):
        return read_nifti(path, patient=patient)
    if _is_dicom(path):
        return read_dicom(path, patient=patient, **options)
    if path.is_dir():
        return read_png_volume(path, patient=patient)
    raise DataError(
        "unknown image format",
        patient=patient,
        path=path,
        hint="give a DICOM series folder, a .dcm file or a .nii/.nii.gz file",
    )


def load_volumes(path: str | Path, patient: str | None = None, **options: Any) -> list[Volume]:
    """Every volume of an image, as `load_volume` reads it: several for a 4D DICOM series."""
    from radiogenomics.data.dicom import read_dicom_series

    path = Path(path)
    if _is_dicom(path):
        return read_dicom_series(path, patient=patient, **options)
    return [load_volume(path, patient=patient, **options)]
