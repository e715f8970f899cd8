"""Cohort layouts on disk -> case records (see `radiogenomics.data.case`), patient by patient.

Every layout is a function ``layout(root, **options) -> Cohort`` taking the same options
(`Options`): `cases` sorted by id, and `skipped`, the `Failure` of each patient left out.
By default (``on_missing="raise"``) one CohortError lists every bad patient at once;
``on_missing="skip"`` keeps the good ones and reports the rest, so that a batch job never
drops a patient silently; ``on_missing="report"`` does the same and returns an empty cohort
when no patient is usable (a prediction still lists every one of them).

Modules: `base` (Cohort, Options, shared steps), `names` (ids, BraTS names), `tables` (label
tables), `patient_folders` (``<id>/<SEQ>/`` folders), one module per layout (`rsna`, `png`,
`brats`, `synthetic`), `registry` (layout names, labels) and `detect` (what predict.py reads).
"""

from .brats import brats2021_cohort, brats2023_cohort, brats_hgg_lgg_cohort
from .detect import LAYOUTS, detect_layout, patient_cohort, prediction_cohort
from .names import normalise_id
from .patient_folders import duplicate_problem, sequence_folders
from .png import png_cohort
from .record import ON_MISSING, Cohort, Layout, Options
from .registry import COHORTS, load_cohort, require_label
from .rsna import RSNA_FLAGGED, rsna_cohort
from .synthetic import masks_in_template_space, synthetic_cohort
from .tables import read_label_table, survival_class

__all__ = [
    "COHORTS", "LAYOUTS", "ON_MISSING", "RSNA_FLAGGED", "Cohort", "Layout", "Options",
    "brats2021_cohort", "brats2023_cohort", "brats_hgg_lgg_cohort", "detect_layout",
    "duplicate_problem", "load_cohort", "masks_in_template_space", "normalise_id",
    "patient_cohort", "png_cohort",
    "prediction_cohort", "read_label_table", "require_label", "rsna_cohort", "sequence_folders",
    "survival_class", "synthetic_cohort",
]
