"""The case record every cohort produces and every datamodule consumes.

A case is a plain dict so that MONAI dictionary transforms can work on it::

    {
        "id": "00012",                       # patient id as in the source (RSNA: 5 digits)
        "images": {"FLAIR": path, "T1w": path, "T1wCE": path, "T2w": path},
        "seg": path | None,                  # tumour mask (NIfTI), if the source has one
        "labels": {"mgmt": 0|1, "grade": 0|1 (1 = HGG), "age": float,
                   "survival_days": float, "survival_class": 0|1|2},
        "source": "rsna" | "brats2021" | ... ,
        "label_scheme": "brats2021" | ...    # scheme of the mask file on disk
    }

An image path is a DICOM series folder or a NIfTI file. Sequences always use the
canonical names below; a label the source does not provide is simply absent.
"""

from __future__ import annotations

from typing import Any

SEQUENCES: tuple[str, ...] = ("FLAIR", "T1w", "T1wCE", "T2w")
"""Canonical sequence names (those of the RSNA-MICCAI folders)."""

LABELS: tuple[str, ...] = ("mgmt", "grade", "age", "survival_days", "survival_class")
"""Case-level labels a cohort may carry."""

CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "mgmt": ("unmethylated", "methylated"),
    "grade": ("LGG", "HGG"),
    "survival_class": ("short", "mid", "long"),  # < 300 days, 300-450 days, > 450 days
}
"""What the codes of each class label mean, in code order: 0 and 1 of the binary labels,
0, 1, 2 of the survival groups."""

Case = dict[str, Any]


def canonical_sequence(name: str) -> str:
    """Map a sequence name from any supported layout to its canonical name."""
    key = name.strip().lower().replace("-", "").replace("_", "")
    aliases = {
        "flair": "FLAIR", "t2f": "FLAIR", "t2flair": "FLAIR",
        "t1": "T1w", "t1w": "T1w", "t1n": "T1w",
        "t1ce": "T1wCE", "t1wce": "T1wCE", "t1c": "T1wCE", "t1gd": "T1wCE", "t1post": "T1wCE",
        "t2": "T2w", "t2w": "T2w",
    }
    if key not in aliases:
        raise KeyError(f"unknown MRI sequence name {name!r}; expected one of {SEQUENCES}")
    return aliases[key]
