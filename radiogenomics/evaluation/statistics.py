"""Statistics of binary predictions: AUC against chance, DeLong's AUC variance and paired test,
Brier score and expected calibration error, each with its confidence interval.

Intervals of the AUC, Brier score and ECE come from the stratified bootstrap of
`evaluation.bootstrap`; DeLong's come from the AUC's asymptotic (U-statistic) variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.stats import mannwhitneyu, norm, rankdata

from radiogenomics.evaluation.bootstrap import (
    ConfidenceInterval,
    binary_inputs,
    bootstrap_auc_ci,
    bootstrap_ci,
)

ECE_BINS = 10
"""Equal-width probability bins of the expected calibration error."""


class DeLongComparison(NamedTuple):
    """DeLong's test of two correlated AUCs (the same patients scored by two models)."""

    auc_a: float
    auc_b: float
    difference: float
    """``auc_a - auc_b``."""
    se: float
    z: float
    p_value: float
    """Two-sided, H0: the two AUCs are equal."""
    low: float
    high: float
    """Confidence interval of the difference."""


@dataclass(frozen=True)
class BinaryStatistics:
    """What a report says of binary predictions; `metrics` gives the flat metric names."""

    n: int
    n_positive: int
    auc: ConfidenceInterval
    """Stratified bootstrap interval."""
    auc_delong: ConfidenceInterval
    """DeLong interval (NaN with fewer than two patients of a class)."""
    auc_p_vs_chance: float
    """One-sided Mann-Whitney p-value of H0: AUC = 0.5 against AUC > 0.5."""
    brier: ConfidenceInterval
    ece: ConfidenceInterval

    def metrics(self) -> dict[str, float]:
        """``auc, auc_low, auc_high, auc_p_vs_chance, auc_delong_low, ..., ece_high``."""
        flat = {"auc": self.auc.estimate, "auc_low": self.auc.low, "auc_high": self.auc.high,
                "auc_p_vs_chance": self.auc_p_vs_chance,
                "auc_delong_low": self.auc_delong.low, "auc_delong_high": self.auc_delong.high}
        for name in ("brier", "ece"):
            interval = getattr(self, name)
            flat.update({name: interval.estimate, f"{name}_low": interval.low,
                         f"{name}_high": interval.high})
        return {name: float(value) for name, value in flat.items()}


def _both_classes(y: np.ndarray, at_least: int = 1) -> None:
    counts = np.bincount(y, minlength=2)
    if counts.min() < at_least:
        raise ValueError(f"needs at least {at_least} patient(s) of each class; got "
                         f"{counts[1]} positive and {counts[0]} negative")


def auc_p_vs_chance(y: np.ndarray, p: np.ndarray) -> float:
    """One-sided p-value of H0: AUC = 0.5 against AUC > 0.5: the Mann-Whitney U test of the
    positives' scores against the negatives' (U / (n1 * n0) is the AUC)."""
    y, p = binary_inputs(y, p)
    _both_classes(y)
    return float(mannwhitneyu(p[y == 1], p[y == 0], alternative="greater").pvalue)


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (K,) of K scorers (K, N) of the same patients and DeLong's covariance (K, K) of
    them, by the midrank algorithm of Sun & Xu (2014). Needs two patients of each class."""
    y = np.asarray(y).astype(int).ravel()
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    _both_classes(y, at_least=2)
    positives, negatives = scores[:, y == 1], scores[:, y == 0]
    m, n = positives.shape[1], negatives.shape[1]
    within_positives = rankdata(positives, axis=1)
    within_negatives = rankdata(negatives, axis=1)
    overall = rankdata(np.concatenate([positives, negatives], axis=1), axis=1)
    aucs = (overall[:, :m].sum(axis=1) / m - (m + 1) / 2) / n
    # structural components: the share of the other class each patient outranks
    v10 = (overall[:, :m] - within_positives) / n
    v01 = 1.0 - (overall[:, m:] - within_negatives) / m
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, covariance


def delong_auc_ci(y: np.ndarray, p: np.ndarray, level: float = 0.95) -> ConfidenceInterval:
    """AUC with DeLong's Wald interval (AUC ± z·SE, clipped to [0, 1])."""
    y, p = binary_inputs(y, p)
    aucs, covariance = delong_covariance(y, p)
    half = norm.ppf(0.5 + level / 2) * np.sqrt(covariance[0, 0])
    return ConfidenceInterval(float(aucs[0]), float(max(aucs[0] - half, 0.0)),
                              float(min(aucs[0] + half, 1.0)))


def delong_test(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray,
                level: float = 0.95) -> DeLongComparison:
    """DeLong's paired test of AUC(`p_a`) = AUC(`p_b`) on the same patients' labels `y`."""
    y, p_a = binary_inputs(y, p_a)
    _, p_b = binary_inputs(y, p_b)
    aucs, covariance = delong_covariance(y, np.stack([p_a, p_b]))
    difference = float(aucs[0] - aucs[1])
    se = float(np.sqrt(max(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1], 0.0)))
    if se == 0.0:  # identical rankings: no difference and no spread
        z, p_value = 0.0, 1.0 if difference == 0.0 else 0.0
    else:
        z = difference / se
        p_value = float(2 * norm.sf(abs(z)))
    half = float(norm.ppf(0.5 + level / 2)) * se
    return DeLongComparison(float(aucs[0]), float(aucs[1]), difference, se, float(z), p_value,
                            difference - half, difference + half)


def _brier_rows(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return ((scores - labels) ** 2).mean(axis=1)


def _ece_rows(labels: np.ndarray, scores: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """ECE of each row: sum over bins of (bin size / N) * |mean score - positive fraction|,
    i.e. |sum of (score - label) in the bin| / N."""
    bins = np.clip((scores * n_bins).astype(int), 0, n_bins - 1)
    n_rows = labels.shape[0]
    keys = (bins + n_bins * np.arange(n_rows)[:, None]).ravel()
    gaps = np.bincount(keys, weights=(scores - labels).ravel(), minlength=n_rows * n_bins)
    return np.abs(gaps.reshape(n_rows, n_bins)).sum(axis=1) / labels.shape[1]


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE over `n_bins` equal-width probability bins, each weighted by its patient count."""
    y, p = binary_inputs(y, p)
    return float(_ece_rows(y[None], p[None], n_bins)[0])


def brier_ci(y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 0,
             level: float = 0.95) -> ConfidenceInterval:
    """Brier score (mean squared error of the probabilities) with a stratified bootstrap
    interval."""
    return bootstrap_ci(y, p, _brier_rows, n, seed, level)


def ece_ci(y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95,
           n_bins: int = ECE_BINS) -> ConfidenceInterval:
    """Expected calibration error with a stratified bootstrap interval."""
    return bootstrap_ci(y, p, lambda labels, scores: _ece_rows(labels, scores, n_bins), n, seed,
                        level)


def binary_statistics(y: np.ndarray, p: np.ndarray, n_bootstrap: int = 1000, seed: int = 0,
                      level: float = 0.95) -> BinaryStatistics:
    """Every statistic above of labels `y` (both classes present) and probabilities `p`."""
    y, p = binary_inputs(y, p)
    n_positive = int(y.sum())
    if min(n_positive, y.size - n_positive) >= 2:
        delong = delong_auc_ci(y, p, level)
    else:
        delong = ConfidenceInterval(float("nan"), float("nan"), float("nan"))
    return BinaryStatistics(
        n=int(y.size), n_positive=n_positive,
        auc=bootstrap_auc_ci(y, p, n_bootstrap, seed, level),
        auc_delong=delong,
        auc_p_vs_chance=auc_p_vs_chance(y, p),
        brier=brier_ci(y, p, n_bootstrap, seed, level),
        ece=ece_ci(y, p, n_bootstrap, seed, level),
    )
