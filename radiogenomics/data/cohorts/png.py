"""PNG conversions of RSNA: ``root/<id>/<SEQ>/Image-N.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radiogenomics.errors import CohortError

from .patient_folders import series_cohort
from .record import Cohort, Options, check_single_split, existing_dir
from .rsna import RSNA_FLAGGED


def png_cohort(root: str | Path, **options: Any) -> Cohort:
    """PNG conversions of RSNA: ``root/<id>/<SEQ>/Image-N.png``, image = the series folder.

    MGMT from ``root/train_labels.csv``, else ``root/../train_labels.csv``. The whole folder
    is the ``train`` split. `options`: see `Options`; `exclude` defaults to `RSNA_FLAGGED`;
    `require_seg` and `image_format` do not apply.
    """
    opts = Options.of(options, exclude=RSNA_FLAGGED)
    check_single_split(opts.split, "png", root)
    root = existing_dir(root, "PNG cohort root", "set data.root to the folder of <id>/ folders")
    candidates = [root / "train_labels.csv", root.parent / "train_labels.csv"]
    labels_file = next((p for p in candidates if p.is_file()), None)
    if labels_file is None and not opts.allow_unlabelled:
        raise CohortError("MGMT label table is missing", path=candidates[0],
                          hint=f"put train_labels.csv in {root} or {root.parent}; "
                               "predict.py reads cohorts without labels")
    clinical = [labels_file.parent / "clinical.csv"] if labels_file else []
    return series_cohort("png", root, ".png", labels_file, clinical, opts)
