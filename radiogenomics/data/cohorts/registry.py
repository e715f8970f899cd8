"""Layout names (``data.layout``) -> layout functions, and which layouts give which label."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from radiogenomics.data.case import Case
from radiogenomics.errors import CohortError, LabelError

from .brats import brats2021_cohort, brats2023_cohort, brats_hgg_lgg_cohort
from .png import png_cohort
from .record import Cohort, Layout
from .rsna import rsna_cohort
from .synthetic import synthetic_cohort

log = logging.getLogger(__name__)

COHORTS: dict[str, Layout] = {
    "rsna": rsna_cohort,
    "brats2021": brats2021_cohort,
    "brats2023": brats2023_cohort,
    "brats_hgg_lgg": brats_hgg_lgg_cohort,
    "png": png_cohort,
    "synthetic": synthetic_cohort,
}
"""Layout name (``data.layout``) -> cohort function."""


def load_cohort(layout: str, root: str | Path, **options: Any) -> Cohort:
    """The cohort of `layout` at `root`; `options` (see `Options`) go to that layout's function."""
    if layout not in COHORTS:
        raise CohortError(f"unknown cohort layout {layout!r}",
                          hint=f"use one of {', '.join(COHORTS)}")
    return COHORTS[layout](root, **options)


_PROVIDERS = {
    "mgmt": "data=rsna, data=synthetic, or data=brats with a clinical.csv or train_labels.csv",
    "grade": "data=brats_hgg_lgg or data=synthetic",
    "seg": "data=brats or data=synthetic",
    "survival": "data=synthetic, or data=brats with a survival_info.csv",
    "age": "data=synthetic, or data=brats with a survival_info.csv or clinical.csv",
    "sequence": "any cohort",
    "plane": "any cohort",
}
_PROVIDERS["survival_days"] = _PROVIDERS["survival_class"] = _PROVIDERS["survival"]


def _has_label(case: Case, label: str) -> bool:
    if label == "seg":
        return case.get("seg") is not None
    if label in ("sequence", "plane"):
        return bool(case["images"])
    return ("survival_class" if label == "survival" else label) in case["labels"]


def require_label(cases: Iterable[Case], label: str, cohort_name: str) -> list[Case]:
    """The cases that carry `label`; a LabelError naming data configs that have it if none do.

    Cases without it are left out with a logged warning naming them (e.g. BraTS cases that
    are not in the RSNA label table).
    """
    if label not in _PROVIDERS:
        raise LabelError(f"unknown target label {label!r}", hint=f"use one of {list(_PROVIDERS)}")
    cases = list(cases)
    labelled = [case for case in cases if _has_label(case, label)]
    if not labelled:
        raise LabelError(
            f"the {cohort_name} cohort provides no {label!r} label "
            f"(none of its {len(cases)} cases has one)",
            hint=f"choose a data config that has it: {_PROVIDERS[label]}",
        )
    missing = [case["id"] for case in cases if not _has_label(case, label)]
    if missing:
        log.warning("%s cohort: %d of %d cases have no %r label and are left out: %s",
                    cohort_name, len(missing), len(cases), label, ", ".join(missing))
    return labelled
