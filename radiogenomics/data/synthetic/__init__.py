"""Synthetic brain-tumour MRI cohorts with every label, in the RSNA and BraTS layouts.

``generate_cohort(out, patients=24, seed=0, format="both")`` writes
``out/rsna`` (DICOM, Kaggle layout) and/or ``out/brats`` (NIfTI, BraTS 2021 layout);
``python -m radiogenomics.data.synthetic --help`` does the same from a shell.
"""

from .cohort import ensure_cohort, generate_cohort
from .settings import GENERATOR_VERSION, PRESETS, Settings

__all__ = ["GENERATOR_VERSION", "PRESETS", "Settings", "ensure_cohort", "generate_cohort"]
