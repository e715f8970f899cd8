"""One synthetic patient in world space: anatomy, tumour, labels and noise-free images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .anatomy import Warp, brain_points, load_template, tissue_maps
from .clinical import Clinical, draw_clinical, draw_survival_days
from .contrast import NORMAL_TISSUES, Contrast, draw_contrast, render
from .fields import grid_axes
from .pose import draw_native_from_template
from .settings import Settings
from .tumour import Tumour, draw_tumour, tumour_maps


@dataclass
class SyntheticPatient:
    """Everything the writers need; images live on the cohort's NIfTI grid (`affine`)."""

    index: int
    patient_id: str
    affine: np.ndarray
    clinical: Clinical
    survival_days: int
    tumour: Tumour
    contrast: Contrast
    brain: np.ndarray  # brain fraction in [0, 1]
    seg: np.ndarray  # uint8, BraTS 2021 labels 0, 1, 2, 4
    clean: dict[str, np.ndarray]  # noise-free image (with bias field) per sequence
    tissues: dict[str, np.ndarray]  # fraction of each tissue (normal and tumour)
    native_from_template: dict[str, np.ndarray] = field(default_factory=dict)
    """Per sequence, 4x4 RAS mm: the images' world (template space) -> the series' scanner
    world; empty when the head does not move (the series then share the images' world)."""

    @property
    def labels(self) -> dict[str, float | int]:
        """The reported case-level labels (MGMT with its label noise)."""
        return {
            "mgmt": self.clinical.mgmt,
            "grade": self.clinical.grade,
            "age": self.clinical.age,
            "survival_days": self.survival_days,
        }


def simulate_patient(settings: Settings, index: int, patient_id: str) -> SyntheticPatient:
    """Draw patient `index` of the cohort: the same draws for any cohort size."""
    shape, affine = settings.grid()
    clinical = draw_clinical(settings.rng(index, "clinical"), settings)
    template = load_template(settings.voxel_mm)
    warp = Warp(settings.rng(index, "anatomy"), in_template_space=settings.moved)
    if settings.moved:
        warp.align_to_template(brain_points(template))
    normal = tissue_maps(warp, template, shape, affine)
    tumour = draw_tumour(settings.rng(index, "tumour"), clinical.grade, warp, template)
    tumour_fractions, seg, texture = tumour_maps(tumour, normal, affine)

    healthy = 1.0 - sum(tumour_fractions.values()) / np.maximum(normal["brain"], 1e-6)
    tissues = {t: normal[t] * np.clip(healthy, 0.0, 1.0) for t in NORMAL_TISSUES}
    tissues.update(tumour_fractions)
    contrast = draw_contrast(
        settings.rng(index, "contrast"), clinical.mgmt_true, settings.mgmt_signal
    )
    clean = render(contrast, tissues, texture, grid_axes(shape, affine))

    core_ml = float(np.isin(seg, (1, 4)).sum()) * settings.voxel_mm**3 / 1000.0
    survival = draw_survival_days(settings.rng(index, "survival"), clinical, core_ml)
    native = (draw_native_from_template(settings.rng(index, "pose"), settings,
                                        warp.template_from_head) if settings.moved else {})
    return SyntheticPatient(
        index, patient_id, affine, clinical, survival, tumour, contrast,
        normal["brain"], seg, clean, tissues, native,
    )
