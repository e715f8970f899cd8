"""Read a NIfTI file as a RAS+ Volume; write one atomically."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from radiogenomics.data.volume import NIFTI_SUFFIXES, Volume
from radiogenomics.errors import NiftiError
from radiogenomics.files import atomic_write


def read_nifti(path: str | Path, patient: str | None = None) -> Volume:
    """Read a 3D NIfTI image (a 4D one with a single volume is squeezed), reoriented to RAS+.

    Raises NiftiError naming the file when it is missing, unreadable, not 3D or holds
    NaN/inf voxels.
    """
    path = Path(path)
    if not path.is_file():
        raise NiftiError(
            "NIfTI file does not exist", patient=patient, path=path,
            hint="check the path and the cohort layout (BraTS: <case>/<case>_<seq>.nii.gz)",
        )
    try:
        image = nib.load(path)
        if image.ndim == 4 and image.shape[3] == 1:
            image = image.slicer[..., 0]
        if image.ndim != 3:
            volumes = (f"a 4D image of {image.shape[3]} volumes" if image.ndim == 4
                       else f"an image of shape {image.shape}")
            raise NiftiError(
                f"{volumes}: training takes one 3D volume per sequence (a multi-volume series "
                "such as fMRI, DWI, multi-echo or magnitude+phase cannot be used as is)",
                patient=patient, path=path,
                hint="write the volume to use as its own 3D file (e.g. with nibabel: "
                "image.slicer[..., k]) in place of this one, or drop the case",
            )
        image = nib.as_closest_canonical(image)
        array = np.asfortranarray(image.get_fdata(dtype=np.float32))
    except NiftiError:
        raise
    except Exception as error:  # nibabel, gzip and numpy raise many types on bad files
        raise NiftiError(
            f"cannot read NIfTI file ({error})", patient=patient, path=path,
            hint="the file is probably truncated or corrupt: copy or convert it again",
        ) from error
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise NiftiError(
            f"{bad} voxel(s) are NaN or infinite", patient=patient, path=path,
            hint="fix the file (e.g. replace NaN by 0 with nibabel) or drop the case",
        )
    # The header's free-text fields are left out: converters put times and names there.
    return Volume.from_array(array, image.affine, "unknown", n_slices=int(array.shape[2]))


def write_nifti(array: np.ndarray, affine: np.ndarray, path: str | Path) -> Path:
    """Write `array` with voxel -> RAS+ `affine` to `path` (.nii or .nii.gz) atomically.

    The file appears complete or not at all: it is written next to `path` and renamed.
    """
    path = Path(path)
    name = path.name.lower()
    suffix = next((s for s in NIFTI_SUFFIXES[::-1] if name.endswith(s)), None)
    if suffix is None:
        raise ValueError(f"a NIfTI path must end with .nii or .nii.gz, got {path}")
    image = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    with atomic_write(path) as temp:
        nib.save(image, temp)
    return path
