"""Write a synthetic patient in the BraTS 2021 layout (co-registered NIfTI, RAS grid)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from .contrast import acquire
from .patient import SyntheticPatient
from .settings import Settings

BRATS_SUFFIX: dict[str, str] = {"FLAIR": "flair", "T1w": "t1", "T1wCE": "t1ce", "T2w": "t2"}
"""BraTS 2021 file suffix of each canonical sequence."""


def brats_case_dir(root: Path, patient_id: str) -> Path:
    """The folder of one patient in the BraTS 2021 layout."""
    return root / f"BraTS2021_{patient_id}"


def write_brats(patient: SyntheticPatient, settings: Settings, root: Path) -> list[Path]:
    """`BraTS2021_<id>/BraTS2021_<id>_{flair,t1,t1ce,t2,seg}.nii.gz` under `root`."""
    case_dir = brats_case_dir(root, patient.patient_id)
    case_dir.mkdir(parents=True, exist_ok=True)
    rng = settings.rng(patient.index, "brats")
    volumes = {}
    for sequence, suffix in BRATS_SUFFIX.items():
        volumes[suffix] = acquire(
            patient.clean[sequence], patient.brain, patient.contrast.noise_sigma[sequence], rng
        )
    volumes["seg"] = patient.seg.astype(np.uint8)
    paths = []
    for suffix, volume in volumes.items():
        path = case_dir / f"BraTS2021_{patient.patient_id}_{suffix}.nii.gz"
        image = nib.Nifti1Image(volume, patient.affine)
        image.set_data_dtype(volume.dtype)
        image.set_qform(patient.affine, code=1)
        image.set_sform(patient.affine, code=1)
        image.header.set_xyzt_units("mm", "sec")
        nib.save(image, path)
        paths.append(path)
    return paths
