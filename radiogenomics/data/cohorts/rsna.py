"""The RSNA-MICCAI 2021 layout: ``root/<split>/<id>/<SEQ>/Image-N.dcm``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radiogenomics.errors import CohortError

from .patient_folders import series_cohort
from .record import Cohort, Options, existing_dir, subfolders

RSNA_FLAGGED: tuple[str, ...] = ("00109", "00123", "00709")
"""RSNA-MICCAI 2021 cases the organisers flagged as unusable."""


def rsna_cohort(root: str | Path, **options: Any) -> Cohort:
    """RSNA-MICCAI 2021: ``root/<split>/<id>/<SEQ>/Image-N.dcm``, image = the series folder.

    MGMT from ``root/<split>_labels.csv`` (required for the train split unless
    `allow_unlabelled`); grade, age and survival from ``root/clinical.csv`` when present.
    `options`: see `Options`; `exclude` defaults to `RSNA_FLAGGED`; `require_seg` and
    `image_format` do not apply.
    """
    opts = Options.of(options, exclude=RSNA_FLAGGED)
    root = existing_dir(root, "RSNA cohort root", "set data.root to the folder holding train/")
    present = [p.name for p in subfolders(root)]
    split_dir = existing_dir(root / opts.split, f"split folder {opts.split!r}",
                             f"data.root must hold {opts.split}/; it holds {present}")
    labels_file: Path | None = root / f"{opts.split}_labels.csv"
    if not labels_file.is_file():
        if opts.split == "train" and not opts.allow_unlabelled:
            raise CohortError("MGMT label table is missing", path=labels_file,
                              hint="copy train_labels.csv (BraTS21ID,MGMT_value) into data.root; "
                                   "predict.py reads cohorts without labels")
        labels_file = None
    return series_cohort("rsna", split_dir, ".dcm", labels_file, [root / "clinical.csv"], opts)
