"""The leakage audit: checks that no patient, scan or slice of the training data reaches the
validation or test data, and that a model trained on permuted labels scores at chance.

``radiogenomics audit RUN_OR_SWEEP`` (or ``--data`` with a data config) prints one verdict line
per check (`checks.Verdict`) and exits 0 when every check passes, `EXIT_LEAK` when one fails.
Slice-level splits inflate accuracy by 30-55% (Yagis et al., Sci Rep 2021): this is the
evidence that a reported score comes from patients the model never saw.
"""

from radiogenomics.audit.checks import Verdict

EXIT_LEAK = 4
"""Exit status of ``radiogenomics audit`` when a check fails."""

__all__ = ["EXIT_LEAK", "Verdict"]
