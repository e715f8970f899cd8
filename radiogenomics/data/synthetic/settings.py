"""Settings of a synthetic cohort: presets, MGMT signal strength, image grid, random streams."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

GENERATOR_VERSION = "1.3"
"""Bump when the same settings would produce different bytes."""

PRESETS: dict[str, dict[str, float | bool]] = {
    # Strong MGMT correlate: a small 3D CNN learns it in minutes on CPU (validation AUC ~0.9
    # at 32^3 after a few epochs; at 1.0 it overfits 120 patients before it generalises).
    "default": {"mgmt_signal": 2.0, "mgmt_label_noise": 0.05, "max_oblique_deg": 0.0},
    # As hard as the real RSNA task: an ideal observer reaches an AUC of about 0.6.
    # The head lies in the scanner as a real one does (rotated, shifted, moving a little
    # between series) while the BraTS-layout NIfTI stays in template space (`pose.py`).
    "realistic": {"mgmt_signal": 0.15, "mgmt_label_noise": 0.2, "max_oblique_deg": 8.0,
                  "max_pose_deg": 15.0, "max_shift_mm": 20.0, "max_motion_deg": 2.0,
                  "max_motion_mm": 2.0},
    # The default's content in DICOM series of the real cohort's size (rsna.FULL_SIZE_SERIES):
    # 256-512 matrices, 2D stacks of 3-6.5 mm and 3D volumes of ~1 mm (up to ~250 slices),
    # about 150-250 MB per patient: for scale benchmarks (benchmarks/scale.py).
    "fullsize": {"mgmt_signal": 2.0, "mgmt_label_noise": 0.05, "max_oblique_deg": 0.0,
                 "full_size": True},
}

FIELD_OF_VIEW_MM = np.array([192.0, 232.0, 192.0])
"""Extent of the NIfTI grid (RAS, mm); it holds every warped brain with a margin."""

FIELD_OF_VIEW_MIN_MM = np.array([-96.0, -133.0, -91.0])
"""World position (MNI-like RAS mm) of the corner of the NIfTI grid."""

BRAIN_CENTRE_MM = np.array([0.0, -17.0, 5.0])

_STREAMS = (
    "clinical", "anatomy", "tumour", "contrast", "survival", "brats", "rsna_geometry", "rsna",
    "pose",
)
_POSE_SETTINGS = ("max_pose_deg", "max_shift_mm", "max_motion_deg", "max_motion_mm")


@dataclass(frozen=True)
class Settings:
    """Everything that decides the content of a synthetic cohort (not where it is written).

    `size` is the number of voxels of the NIfTI grid from left to right: 96 gives
    2 mm voxels (96x116x96); the DICOM series scale their spacing with it.
    """

    seed: int = 0
    size: int = 96
    mgmt_signal: float = 2.0
    mgmt_label_noise: float = 0.05
    max_oblique_deg: float = 0.0
    hgg_fraction: float = 0.7
    methylated_fraction: float = 0.5
    full_size: bool = False
    """DICOM series at the real cohort's matrix and slice counts (independent of `size`)."""
    max_pose_deg: float = 0.0
    """Head rotation in the scanner, uniform in +-this about each axis (degrees)."""
    max_shift_mm: float = 0.0
    """Head shift in the scanner, uniform in +-this along each axis (mm)."""
    max_motion_deg: float = 0.0
    """Motion of the head between series: rotation in +-this about each axis (degrees)."""
    max_motion_mm: float = 0.0
    """Motion of the head between series: shift in +-this along each axis (mm)."""

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"size must be at least 8 voxels, got {self.size}")
        if not 0.0 <= self.mgmt_label_noise <= 0.5:
            raise ValueError(f"mgmt_label_noise must lie in [0, 0.5], got {self.mgmt_label_noise}")
        if self.mgmt_signal < 0:
            raise ValueError(f"mgmt_signal must be >= 0, got {self.mgmt_signal}")
        for name in _POSE_SETTINGS:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def moved(self) -> bool:
        """Whether the head moves in the scanner: the DICOM series then lie in the scanner's
        world and the NIfTI in template space, related by the transforms of `pose.py`."""
        return any(getattr(self, name) > 0 for name in _POSE_SETTINGS)

    @property
    def voxel_mm(self) -> float:
        """Isotropic spacing of the NIfTI grid."""
        return float(FIELD_OF_VIEW_MM[0] / self.size)

    @property
    def dicom_zoom(self) -> float:
        """Factor applied to the DICOM spacings (1 at the default size)."""
        return self.voxel_mm / 2.0

    def grid(self) -> tuple[tuple[int, int, int], np.ndarray]:
        """Shape and voxel -> RAS mm affine of the NIfTI grid, shared by every patient."""
        step = self.voxel_mm
        shape = tuple(int(round(e / step)) for e in FIELD_OF_VIEW_MM)
        affine = np.diag([step, step, step, 1.0])
        affine[:3, 3] = FIELD_OF_VIEW_MIN_MM + step / 2
        return shape, affine  # type: ignore[return-value]

    def rng(self, index: int, stream: str) -> np.random.Generator:
        """Independent generator for one part of patient `index`: same for any cohort size."""
        key = (1, index, _STREAMS.index(stream))
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    def ids_rng(self) -> np.random.Generator:
        """Generator of the patient id sequence."""
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(0,)))

    def as_dict(self) -> dict[str, Any]:
        """Plain values, as written to the cohort manifest (``full_size`` and the pose only
        when set, so that the manifests of the other presets are those of earlier versions)."""
        values = asdict(self)
        for name in ("full_size", *_POSE_SETTINGS):
            if not values[name]:
                del values[name]
        return values


def make_settings(preset: str = "default", **overrides: Any) -> Settings:
    """Settings of `preset`, with the keyword arguments that are not None replacing its values."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return replace(Settings(), **values)
