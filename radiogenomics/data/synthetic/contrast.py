"""MR contrast of the four sequences: tissue intensities, MGMT correlate, bias and noise.

Intensities are relative to white matter on T1w. A patient's image is the sum of tissue
fractions times tissue intensities, times a smooth bias field, plus Rician noise, stored
as skull-stripped scanner integers (0 outside the brain, up to about 3000).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..case import SEQUENCES
from .fields import bias_coefficients, bias_field, rician

TISSUES: tuple[str, ...] = ("csf", "gm", "wm", "ncr", "net", "ed", "et")
"""Tissues with an intensity of their own on every sequence."""
TUMOUR_TISSUES: tuple[str, ...] = ("ncr", "net", "ed", "et")
NORMAL_TISSUES: tuple[str, ...] = ("csf", "vessel", "gm", "wm")

BASE_INTENSITY: dict[str, dict[str, float]] = {
    sequence: dict(zip(TISSUES, values))
    for sequence, values in {
        #         csf   gm    wm    ncr   net   ed    et
        "FLAIR": (0.15, 0.80, 0.62, 0.55, 1.25, 1.35, 1.05),
        "T1w": (0.30, 0.72, 1.00, 0.38, 0.55, 0.62, 0.68),
        "T1wCE": (0.50, 0.75, 1.00, 0.40, 0.58, 0.64, 1.55),
        "T2w": (1.80, 0.85, 0.55, 1.60, 1.30, 1.35, 1.00),
    }.items()
}
"""Mean intensity of each tissue on each sequence (CSF dark on FLAIR, bright on T2w).

On T1wCE the "csf" compartment stands for the ventricles and deep sulci with the small
vessels and choroid plexus that enhance in them: brighter than on T1w. With the enhancing
surface vessels (`VESSEL_INTENSITY`), a slice far from the tumour still tells T1wCE from
T1w, as on real post-contrast scans.
"""

VESSEL_INTENSITY: dict[str, float] = {"T1wCE": 1.80}
"""Enhancing cortical veins, venous sinuses and dura (the "vessel" share of the CSF at the
brain surface, see `anatomy.VESSEL_SHARE`): brighter than white matter on T1wCE, the bright
rim that skull-stripped post-contrast scans keep. On the other sequences they are CSF."""

MGMT_EFFECT: dict[str, tuple[tuple[str, ...], float]] = {
    "T1wCE": (("ncr", "net", "et"), 0.15),
    "FLAIR": (("ncr", "net", "ed", "et"), -0.10),
}
"""Relative intensity change of tumour tissue per unit `mgmt_signal`, methylated vs. mean.

Methylated tumours are multiplied by 1 + effect * signal, unmethylated by 1 - effect * signal.
"""

PATIENT_JITTER = 0.05
"""Log-normal spread of every tissue intensity between patients (what hides the MGMT shift)."""

TEXTURE = 0.08
"""Relative amplitude of the smooth intensity texture inside the tumour."""


@dataclass(frozen=True)
class Contrast:
    """One patient's acquisition parameters, shared by its NIfTI and DICOM images."""

    intensity: dict[str, dict[str, float]]
    noise_sigma: dict[str, float]
    bias: dict[str, np.ndarray]


def draw_contrast(rng: np.random.Generator, mgmt_true: int, mgmt_signal: float) -> Contrast:
    """Scanner gain, tissue intensities (with the MGMT correlate), noise level and bias."""
    sign = 1.0 if mgmt_true else -1.0
    intensity, noise, bias = {}, {}, {}
    for sequence in SEQUENCES:
        gain = rng.uniform(800.0, 1300.0)
        jitter = np.exp(rng.normal(0.0, PATIENT_JITTER, size=len(TISSUES)))
        values = {t: gain * BASE_INTENSITY[sequence][t] * j for t, j in zip(TISSUES, jitter)}
        tissues, effect = MGMT_EFFECT.get(sequence, ((), 0.0))
        for tissue in tissues:
            values[tissue] *= max(0.1, 1.0 + sign * effect * mgmt_signal)
        csf_base = BASE_INTENSITY[sequence]["csf"]
        values["vessel"] = values["csf"] * VESSEL_INTENSITY.get(sequence, csf_base) / csf_base
        intensity[sequence] = values
        noise[sequence] = gain * rng.uniform(0.015, 0.035)
        bias[sequence] = bias_coefficients(rng)
    return Contrast(intensity, noise, bias)


def render(
    contrast: Contrast,
    fractions: dict[str, np.ndarray],
    texture: np.ndarray,
    axes: Sequence[np.ndarray],
) -> dict[str, np.ndarray]:
    """Noise-free image of each sequence, with its bias field, on the grid with world `axes`."""
    modulation = 1.0 + TEXTURE * np.clip(texture, -3.0, 3.0)
    images = {}
    for sequence, values in contrast.intensity.items():
        image = np.zeros_like(fractions["wm"])
        for tissue in (*NORMAL_TISSUES, *TUMOUR_TISSUES):
            term = values[tissue] * fractions[tissue]
            image += term * modulation if tissue in TUMOUR_TISSUES else term
        images[sequence] = image * bias_field(contrast.bias[sequence], axes)
    return images


def acquire(
    clean: np.ndarray, brain: np.ndarray, noise_sigma: float, rng: np.random.Generator
) -> np.ndarray:
    """Rician noise, skull stripping (brain fraction > 0.5) and rounding to int16."""
    inside = brain > 0.5
    out = np.zeros(clean.shape, np.int16)
    noisy = rician(clean[inside], noise_sigma, rng)
    out[inside] = np.clip(np.rint(noisy), 0, np.iinfo(np.int16).max)
    return out
