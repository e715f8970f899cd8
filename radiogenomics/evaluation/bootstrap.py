"""Stratified bootstrap confidence intervals of patient-level metrics.

Positives and negatives are resampled separately (Efron & Tibshirani 1993, the stratified
bootstrap), so every resample keeps the cohort's class counts and always has an AUC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.stats import rankdata

RowStatistic = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(R, N) labels and (R, N) scores -> (R,) values: a metric of each of R resamples at once."""


class ConfidenceInterval(NamedTuple):
    """A point estimate and the bounds of its confidence interval."""

    estimate: float
    low: float
    high: float


def binary_inputs(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0/1 integers and scores as floats, both 1-D and of one length."""
    y = np.asarray(y).astype(int).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.size} labels, {p.size} scores")
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError(f"binary labels must be 0 or 1; got {sorted(set(y))}")
    return y, p


def stratified_resamples(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """(n, N) row indices: each row draws the positives from the positives and the negatives
    from the negatives, with replacement."""
    rng = np.random.default_rng(seed)
    rows = np.empty((n, y.size), dtype=int)
    start = 0
    for members in (np.flatnonzero(y == 1), np.flatnonzero(y == 0)):
        rows[:, start:start + members.size] = rng.choice(members, size=(n, members.size))
        start += members.size
    return rows


def auc_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row in its Mann-Whitney form (ties count one half); NaN for a row of
    one class."""
    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    rank_sum = (ranks * labels).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def bootstrap_ci(
    y: np.ndarray, p: np.ndarray, statistic: RowStatistic, n: int = 1000, seed: int = 0,
    level: float = 0.95,
) -> ConfidenceInterval:
    """`statistic` of labels `y` and scores `p`, with a stratified percentile bootstrap interval
    of `n` resamples at confidence `level`."""
    y, p = binary_inputs(y, p)
    estimate = float(statistic(y[None], p[None])[0])
    rows = stratified_resamples(y, n, seed)
    values = statistic(y[rows], p[rows])
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return ConfidenceInterval(estimate, float(low), float(high))


def bootstrap_auc_ci(
    y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95
) -> ConfidenceInterval:
    """ROC AUC of binary labels `y` and scores `p`, with a stratified percentile bootstrap
    interval. Needs at least one patient of each class."""
    y, p = binary_inputs(y, p)
    if len(np.unique(y)) != 2:
        raise ValueError(f"the AUC needs both classes among the labels; got {sorted(set(y))}")
    return bootstrap_ci(y, p, auc_rows, n, seed, level)
