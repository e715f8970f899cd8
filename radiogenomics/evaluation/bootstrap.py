"""Bootstrap confidence intervals of patient-level metrics."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score


class ConfidenceInterval(NamedTuple):
    """A point estimate and the bounds of its confidence interval."""

    estimate: float
    low: float
    high: float


def bootstrap_auc_ci(
    y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95
) -> ConfidenceInterval:
    """ROC AUC of binary labels `y` and scores `p`, with a percentile bootstrap interval.

    Patients are resampled with replacement `n` times; resamples holding one class only
    have no AUC and are left out. Needs at least one patient of each class.
    """
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.size} labels, {p.size} scores")
    if len(np.unique(y)) != 2:
        raise ValueError(f"the AUC needs both classes among the labels; got {sorted(set(y))}")
    estimate = float(roc_auc_score(y, p))
    rows = np.random.default_rng(seed).integers(0, y.size, size=(n, y.size))
    labels, scores = y[rows], p[rows]
    positives = labels.sum(axis=1)
    negatives = y.size - positives
    both = (positives > 0) & (negatives > 0)
    # Mann-Whitney form of the AUC, computed for every resample at once (ties count one half)
    ranks = rankdata(scores[both], axis=1)
    rank_sum = (ranks * labels[both]).sum(axis=1)
    pos, neg = positives[both], negatives[both]
    aucs = (rank_sum - pos * (pos + 1) / 2) / (pos * neg)
    if aucs.size == 0:
        return ConfidenceInterval(estimate, float("nan"), float("nan"))
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(aucs, [tail, 100 - tail])
    return ConfidenceInterval(estimate, float(low), float(high))
