"""Case-level labels of a synthetic patient: grade, MGMT status, age and survival."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .settings import Settings


@dataclass(frozen=True)
class Clinical:
    """Labels drawn before the images; `mgmt_true` drives the image, `mgmt` is what is reported."""

    grade: int  # 1 = HGG, 0 = LGG
    mgmt_true: int
    mgmt: int
    age: float


def draw_clinical(rng: np.random.Generator, settings: Settings) -> Clinical:
    """Grade (~70% HGG), true MGMT methylation, its noisy reported label, and age."""
    grade = int(rng.random() < settings.hgg_fraction)
    mgmt_true = int(rng.random() < settings.methylated_fraction)
    flipped = rng.random() < settings.mgmt_label_noise
    mean_age, sd_age = (62.0, 11.0) if grade else (41.0, 13.0)
    age = float(np.clip(rng.normal(mean_age, sd_age), 18.0, 89.0))
    return Clinical(grade, mgmt_true, int(mgmt_true != flipped), round(age, 1))


def draw_survival_days(rng: np.random.Generator, clinical: Clinical, core_ml: float) -> int:
    """Overall survival: shorter for HGG, older age and larger tumour cores; log-normal noise."""
    median = 420.0 if clinical.grade else 2400.0
    log_days = (
        np.log(median)
        - 0.02 * (clinical.age - (62.0 if clinical.grade else 41.0))
        - 0.35 * np.log(max(core_ml, 0.5) / 20.0)
        + 0.25 * clinical.mgmt_true
        + rng.normal(0.0, 0.45)
    )
    return int(np.clip(round(float(np.exp(log_days))), 5, 6000))
