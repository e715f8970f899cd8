"""The image every reader returns: `Volume` (array + RAS+ affine), its planes and file suffixes.

The ground floor of `radiogenomics.data`: it imports nothing of the package, so every reader
(dicom, nifti, png) and every consumer can import it without an import circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

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


def c_order(array: np.ndarray, dtype: np.dtype | type = np.float32, tile: int = 32
            ) -> np.ndarray:
    """`array` as a C-ordered array of `dtype`, copied tile by tile when it is a permuted view.

    numpy copies a permuted view element by element along the output's rows, so every read
    lands on a new cache line (1.1 s for 512x512x200); 32^3 tiles, each of which stays in
    cache, take 0.15-0.2 s. The loader needs it only for arrays with flipped axes
    (`transforms.as_tensor`): the resampler reads other layouts as they are.
    """
    if array.ndim != 3 or array.flags.c_contiguous:
        return np.ascontiguousarray(array, dtype=dtype)
    out = np.empty(array.shape, dtype=dtype)
    nx, ny, nz = array.shape
    for i in range(0, nx, tile):
        for j in range(0, ny, tile):
            for k in range(0, nz, tile):
                out[i:i + tile, j:j + tile, k:k + tile] = array[i:i + tile, j:j + tile,
                                                                k:k + tile]
    return out
