"""Write a synthetic patient in the RSNA-MICCAI layout: four DICOM series in one study.

Each series has its own plane, spacing, slice count and first file number, like the
Kaggle data; all four share the study and frame of reference. Unless the head moves
(`pose.py`), they are co-registered in world coordinates with each other and with the BraTS
NIfTI files; a moved head puts each series where `native_from_template` says.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..case import SEQUENCES
from ..dicom_write import write_series
from .anatomy import rotation
from .contrast import acquire
from .fields import resample
from .patient import SyntheticPatient
from .settings import Settings

PLANE_CHANCE: dict[str, tuple[float, float, float]] = {
    "FLAIR": (0.6, 0.25, 0.15),
    "T1w": (0.5, 0.15, 0.35),
    "T1wCE": (0.6, 0.2, 0.2),
    "T2w": (0.7, 0.2, 0.1),
}
"""Chance of an (axial, coronal, sagittal) acquisition for each sequence."""

FULL_SIZE_SERIES: dict[str, float] = {"FLAIR": 0.3, "T1w": 0.4, "T1wCE": 0.7, "T2w": 0.1}
"""Full-size preset: chance that a sequence is a 3D acquisition (~1 mm slices, matrix 256 or
512) rather than a 2D stack (matrix 256-512, 3-6.5 mm slices), as in the RSNA cohort, where
series run from 256^2 to 512^2 pixels and from ~20 to several hundred slices."""
FULL_SIZE_MATRICES: tuple[int, ...] = (256, 320, 384, 448, 512, 512)

PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")
SLICE_AXIS: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}
PLANE_PREFIX: dict[str, str] = {"axial": "AX", "coronal": "COR", "sagittal": "SAG"}
SEQUENCE_NAMES: dict[str, tuple[str, ...]] = {
    "FLAIR": ("FLAIR", "T2 FLAIR", "FLAIR FS"),
    "T1w": ("T1", "T1 SE", "T1 MPRAGE"),
    "T1wCE": ("T1 POST GD", "T1 +C", "T1 MPRAGE POST"),
    "T2w": ("T2", "T2 FSE", "T2 TSE"),
}


@dataclass(frozen=True)
class SeriesGeometry:
    """Where and how one series was acquired."""

    sequence: str
    plane: str
    shape: tuple[int, int, int]
    affine: np.ndarray
    first_number: int
    series_number: int
    description: str


def plan_series(
    rng: np.random.Generator, settings: Settings, patient: SyntheticPatient
) -> list[SeriesGeometry]:
    """Random plane, matrix, spacing, coverage and numbering of the four series."""
    low_high = _brain_box(patient)
    numbers = rng.choice(np.arange(2, 20), size=len(SEQUENCES), replace=False)
    plans = []
    for sequence, series_number in zip(SEQUENCES, numbers):
        plane = PLANES[rng.choice(3, p=PLANE_CHANCE[sequence])]
        slice_axis = SLICE_AXIS[plane]
        if settings.full_size:
            matrix, in_plane, thickness = _full_size_sampling(rng, sequence)
        else:
            matrix = max(8, round(rng.choice([112, 128, 128, 144]) / settings.dicom_zoom))
            in_plane = rng.uniform(215.0, 250.0) / matrix
            thickness = rng.uniform(2.0, 5.0) * settings.dicom_zoom
        spacing = np.full(3, in_plane)
        spacing[slice_axis] = thickness
        extent = low_high[slice_axis, 1] - low_high[slice_axis, 0] + rng.uniform(8.0, 24.0)
        shape = [matrix, matrix, matrix]
        shape[slice_axis] = int(np.ceil(extent / spacing[slice_axis])) + 1
        tilt = np.deg2rad(rng.uniform(-1, 1, size=3) * settings.max_oblique_deg)
        centre = low_high.mean(axis=1) + rng.uniform(-6.0, 6.0, size=3)
        affine = np.eye(4)
        affine[:3, :3] = rotation(tilt) @ np.diag(spacing)
        affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
        name = SEQUENCE_NAMES[sequence][rng.integers(len(SEQUENCE_NAMES[sequence]))]
        plans.append(SeriesGeometry(
            sequence, plane, tuple(shape), affine, int(rng.integers(2, 200)),
            int(series_number), f"{PLANE_PREFIX[plane]} {name}",
        ))
    return plans


def _brain_box(patient: SyntheticPatient) -> np.ndarray:
    """World (RAS mm) low and high corners of the brain, (3, 2), in the scanner's world."""
    inside = np.argwhere(patient.brain > 0.5)
    corners = np.stack([inside.min(0), inside.max(0)]).T
    if not patient.native_from_template:
        return patient.affine[:3, :3] @ corners + patient.affine[:3, 3:4]
    placed = patient.native_from_template["T1wCE"] @ patient.affine
    box = np.array(list(itertools.product(*corners)), dtype=float)
    world = box @ placed[:3, :3].T + placed[:3, 3]
    return np.stack([world.min(0), world.max(0)]).T


def _full_size_sampling(rng: np.random.Generator, sequence: str
                        ) -> tuple[int, float, float]:
    """Matrix, in-plane spacing and slice spacing (mm) of a full-size series."""
    if rng.random() < FULL_SIZE_SERIES[sequence]:  # 3D: thin slices
        matrix = int(rng.choice([256, 512]))
        return matrix, rng.uniform(220.0, 256.0) / matrix, rng.uniform(0.9, 1.2)
    matrix = int(rng.choice(FULL_SIZE_MATRICES))
    return matrix, rng.uniform(220.0, 250.0) / matrix, rng.uniform(3.0, 6.5)


def _uid(*parts: object) -> str:
    """A deterministic ``2.25.<int>`` UID hashed from `parts`."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def rsna_case_dir(root: Path, patient_id: str) -> Path:
    """The folder of one patient under an RSNA split folder (train/ or test/)."""
    return root / patient_id


def write_rsna(patient: SyntheticPatient, settings: Settings, root: Path) -> list[Path]:
    """`<root>/<id>/{FLAIR,T1w,T1wCE,T2w}/Image-N.dcm`, resampled from the patient's world."""
    geometry_rng = settings.rng(patient.index, "rsna_geometry")
    noise_rng = settings.rng(patient.index, "rsna")
    study_uid = _uid("radiogenomics-synthetic", settings.seed, patient.patient_id, "study")
    frame_uid = _uid("radiogenomics-synthetic", settings.seed, patient.patient_id, "frame")
    paths = []
    for series in plan_series(geometry_rng, settings, patient):
        placed = (patient.native_from_template[series.sequence] @ patient.affine
                  if patient.native_from_template else patient.affine)
        grid = (placed, series.shape, series.affine)
        volume = acquire(
            resample(patient.clean[series.sequence], *grid),
            resample(patient.brain, *grid),
            patient.contrast.noise_sigma[series.sequence],
            noise_rng,
        )
        paths += write_series(
            volume,
            series.affine,
            rsna_case_dir(root, patient.patient_id) / series.sequence,
            plane=series.plane,
            first_number=series.first_number,
            series_description=series.description,
            series_number=series.series_number,
            patient_id=patient.patient_id,
            study_uid=study_uid,
            frame_of_reference_uid=frame_uid,
            seed=settings.seed,
        )
    return paths
