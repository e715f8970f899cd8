"""Tumour mask label schemes: conversion to and from one internal scheme, and BraTS regions.

Internal scheme: 0 background, 1 NCR (necrotic / non-enhancing core), 2 ED (oedema),
3 ET (enhancing tumour). Masks on disk use their challenge's codes; convert them with
`to_internal` on load and with `from_internal` before writing a prediction.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from radiogenomics.errors import LabelError

BACKGROUND, NCR, ED, ET = 0, 1, 2, 3
INTERNAL_CLASSES: tuple[str, ...] = ("background", "NCR", "ED", "ET")
"""Names of the internal codes, in code order."""

REGIONS: tuple[str, ...] = ("ET", "TC", "WT")
"""Channel order of `regions`: enhancing tumour, tumour core, whole tumour."""

REGION_CLASSES: dict[str, tuple[int, ...]] = {"ET": (ET,), "TC": (NCR, ET), "WT": (NCR, ED, ET)}
"""Internal codes that make up each region."""

SCHEMES: dict[str, dict[int, int]] = {
    "brats2021": {0: BACKGROUND, 1: NCR, 2: ED, 4: ET},
    "brats2023": {0: BACKGROUND, 1: NCR, 2: ED, 3: ET},
    "msd": {0: BACKGROUND, 1: ED, 2: NCR, 3: ET},
}
"""Code on disk -> internal code, per scheme. `brats2021` also covers BraTS 2018-2020;
`msd` is the Medical Segmentation Decathlon Task01 (1 oedema, 2 non-enhancing, 3 enhancing)."""

Mask = TypeVar("Mask", np.ndarray, torch.Tensor)


def _scheme(scheme: str) -> dict[int, int]:
    """The code table of `scheme`, or a LabelError listing the known schemes."""
    if scheme not in SCHEMES:
        raise LabelError(
            f"unknown label scheme {scheme!r}",
            hint=f"use one of {sorted(SCHEMES)} (data.label_scheme)",
        )
    return SCHEMES[scheme]


def _codes(mask: np.ndarray | torch.Tensor) -> list[float]:
    """The distinct values of a mask, as Python numbers."""
    values = torch.unique(mask) if isinstance(mask, torch.Tensor) else np.unique(mask)
    return [v.item() for v in values]


def _remap(mask: Mask, table: dict[int, int], what: str, patient: str | None) -> Mask:
    """Replace every code of `mask` by `table[code]`; codes not in `table` are an error."""
    unknown = sorted(set(_codes(mask)) - set(table))
    if unknown:
        shown = ", ".join(f"{c:g}" for c in unknown)
        raise LabelError(
            f"mask has codes {shown} that {what} does not define (codes {sorted(table)})",
            patient=patient,
            hint="check the mask file and the cohort's label_scheme",
        )
    out = torch.zeros_like(mask) if isinstance(mask, torch.Tensor) else np.zeros_like(mask)
    for source, target in table.items():
        if target:
            out[mask == source] = target
    return out


def to_internal(mask: Mask, scheme: str, *, patient: str | None = None) -> Mask:
    """Convert a mask from `scheme`'s codes to internal codes (same array type and dtype)."""
    return _remap(mask, _scheme(scheme), f"scheme {scheme!r}", patient)


def from_internal(mask: Mask, scheme: str, *, patient: str | None = None) -> Mask:
    """Convert a mask from internal codes to `scheme`'s codes (same array type and dtype)."""
    inverse = {internal: code for code, internal in _scheme(scheme).items()}
    return _remap(mask, inverse, "the internal scheme", patient)


def regions(mask: Mask, *, patient: str | None = None) -> Mask:
    """Binary ET, TC, WT channels (order `REGIONS`) of an internal-scheme mask.

    A leading channel axis of size 1 is dropped first, so ``(1, H, W, D)`` and ``(H, W, D)``
    both give ``(3, H, W, D)``, in the mask's dtype.
    """
    unknown = sorted(set(_codes(mask)) - set(range(len(INTERNAL_CLASSES))))
    if unknown:
        raise LabelError(
            f"mask has codes {', '.join(f'{c:g}' for c in unknown)}, not internal codes 0-3",
            patient=patient,
            hint="convert it with to_internal(mask, scheme) first",
        )
    if mask.ndim == 4 and mask.shape[0] == 1:
        mask = mask[0]
    if isinstance(mask, torch.Tensor):
        channels = [torch.isin(mask, mask.new_tensor(REGION_CLASSES[r])) for r in REGIONS]
        return torch.stack(channels).to(mask.dtype)
    channels = [np.isin(mask, REGION_CLASSES[r]) for r in REGIONS]
    return np.stack(channels).astype(mask.dtype)
