"""Write a synthetic patient in the BraTS 2021 layout (co-registered NIfTI, RAS grid)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from radiogenomics.data.cohorts.names import BRATS2021_SUFFIXES, brats2021_file

from .contrast import acquire
from .patient import SyntheticPatient
from .settings import Settings


def write_brats(patient: SyntheticPatient, settings: Settings, root: Path) -> list[Path]:
    """`BraTS2021_<id>/BraTS2021_<id>_{flair,t1,t1ce,t2,seg}.nii.gz` under `root`."""
    brats2021_file(root, patient.patient_id, "seg").parent.mkdir(parents=True, exist_ok=True)
    rng = settings.rng(patient.index, "brats")
    volumes = {}
    for sequence, suffix in BRATS2021_SUFFIXES.items():
        volumes[suffix] = acquire(
            patient.clean[sequence], patient.brain, patient.contrast.noise_sigma[sequence], rng
        )
    volumes["seg"] = patient.seg.astype(np.uint8)
    paths = []
    for suffix, volume in volumes.items():
        path = brats2021_file(root, patient.patient_id, suffix)
        image = nib.Nifti1Image(volume, patient.affine)
        image.set_data_dtype(volume.dtype)
        image.set_qform(patient.affine, code=1)
        image.set_sform(patient.affine, code=1)
        image.header.set_xyzt_units("mm", "sec")
        nib.save(image, path)
        paths.append(path)
    return paths
