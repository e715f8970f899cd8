"""Statistics of binary predictions against independent references: sklearn, scipy, a direct
O(n1 * n0) DeLong, a published example, and their behaviour on simulated cohorts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm
from sklearn.metrics import brier_score_loss, roc_auc_score

from radiogenomics.evaluation.bootstrap import bootstrap_auc_ci, stratified_resamples
from radiogenomics.evaluation.statistics import (
    auc_p_vs_chance,
    binary_statistics,
    brier_ci,
    delong_auc_ci,
    delong_covariance,
    delong_test,
    ece_ci,
    expected_calibration_error,
)


def _cohort(n: int, separation: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities whose logits differ by `separation` between classes; rounded to
    two decimals so that ties occur."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = separation * (y - 0.5) + rng.normal(0, 1, n)
    return y, np.round(1 / (1 + np.exp(-logits)), 2)


def _direct_delong(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) as written: psi over every (positive, negative) pair, the structural
    components V10 and V01, and S = S10 / m + S01 / n."""
    aucs, v10s, v01s = [], [], []
    for score in scores:
        pos, neg = score[y == 1], score[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        aucs.append(psi.mean())
        v10s.append(psi.mean(axis=1))
        v01s.append(psi.mean(axis=0))
    m, n = int(y.sum()), int((1 - y).sum())
    return np.array(aucs), np.cov(np.array(v10s)) / m + np.cov(np.array(v01s)) / n


def test_delong_matches_the_direct_pairwise_computation_with_ties() -> None:
    y, p_a = _cohort(80, seed=1)
    p_b = np.round(np.clip(p_a + np.random.default_rng(2).normal(0, 0.2, 80), 0, 1), 1)
    aucs, covariance = delong_covariance(y, np.stack([p_a, p_b]))
    direct_aucs, direct_covariance = _direct_delong(y, np.stack([p_a, p_b]))
    assert aucs == pytest.approx(direct_aucs, abs=1e-12)
    assert aucs[0] == pytest.approx(roc_auc_score(y, p_a))
    assert covariance == pytest.approx(direct_covariance, abs=1e-12)
    test = delong_test(y, p_a, p_b)
    variance = direct_covariance[0, 0] + direct_covariance[1, 1] - 2 * direct_covariance[0, 1]
    assert test.se == pytest.approx(np.sqrt(variance))
    assert test.z == pytest.approx((direct_aucs[0] - direct_aucs[1]) / np.sqrt(variance))
    assert test.p_value == pytest.approx(2 * norm.sf(abs(test.z)))
    assert test.low == pytest.approx(test.difference - 1.959964 * test.se, abs=1e-6)
    single = delong_auc_ci(y, p_a)
    assert single.high - single.estimate == pytest.approx(1.959964 * np.sqrt(
        direct_covariance[0, 0]), abs=1e-6)


def test_delong_on_hanley_and_mcneils_rating_example() -> None:
    """Hanley & McNeil, Radiology 1982;143:29-36, Table 1: five-point ratings of 58 normal and
    51 abnormal CT images; published AUC 0.893 and SE 0.032 (their own approximation, which
    DeLong's U-statistic variance should be close to)."""
    normal = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
    abnormal = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
    y = np.r_[np.ones(abnormal.size), np.zeros(normal.size)]
    ratings = np.r_[abnormal, normal].astype(float)
    interval = delong_auc_ci(y, ratings)
    assert round(interval.estimate, 3) == 0.893
    se = (interval.high - interval.low) / (2 * 1.959964)
    assert se == pytest.approx(0.032, abs=0.003)


def test_delong_separates_a_better_model_from_an_equally_good_one() -> None:
    rng = np.random.default_rng(3)
    p_values = []
    for _ in range(300):  # two scorers of one distribution: p < 0.05 about 5% of the time
        y = rng.integers(0, 2, 120)
        signal = y - 0.5
        p_values.append(delong_test(y, signal + rng.normal(0, 1, 120),
                                    signal + rng.normal(0, 1, 120)).p_value)
    assert 0.02 < np.mean(np.array(p_values) < 0.05) < 0.09
    assert np.median(p_values) > 0.35
    y = rng.integers(0, 2, 300)
    twin = (y - 0.5) + rng.normal(0, 1, 300)
    better = 3 * (y - 0.5) + rng.normal(0, 1, 300)
    clear = delong_test(y, better, twin)
    assert clear.p_value < 1e-4 and clear.difference > 0 and clear.low > 0
    assert delong_test(y, twin, twin).p_value == 1.0


def test_delong_standard_error_matches_the_spread_of_the_auc_over_cohorts() -> None:
    rng = np.random.default_rng(4)
    aucs, ses = [], []
    for _ in range(300):
        y = np.r_[np.ones(40), np.zeros(60)].astype(int)
        p = y + rng.normal(0, 1.2, 100)
        interval = delong_auc_ci(y, p)
        aucs.append(interval.estimate)
        ses.append((interval.high - interval.low) / (2 * 1.959964))
    assert np.mean(ses) == pytest.approx(np.std(aucs, ddof=1), rel=0.15)


def test_p_vs_chance_is_the_one_sided_mann_whitney_test() -> None:
    y, p = _cohort(60, separation=1.5)
    expected = mannwhitneyu(p[y == 1], p[y == 0], alternative="greater").pvalue
    assert auc_p_vs_chance(y, p) == pytest.approx(expected)
    assert auc_p_vs_chance(y, p) < 0.01
    assert auc_p_vs_chance(y, 1 - p) > 0.99  # worse than chance is not evidence of skill
    noise_y, noise_p = _cohort(60, separation=0.0, seed=5)
    assert auc_p_vs_chance(noise_y, noise_p) > 0.05


def test_stratified_resamples_keep_the_class_counts() -> None:
    y = np.array([1, 0, 0, 1, 0, 0, 0])
    rows = stratified_resamples(y, 50, seed=0)
    assert rows.shape == (50, 7)
    assert (y[rows].sum(axis=1) == 2).all()
    assert len(np.unique(rows)) == 7  # every patient is drawn somewhere


def test_stratified_auc_interval_covers_the_true_auc_and_narrows_with_n() -> None:
    # true AUC of logits shifted by d with unit normal noise: Phi(d / sqrt(2))
    truth = norm.cdf(1.0 / np.sqrt(2))
    covered = 0
    for seed in range(40):
        y, p = _cohort(120, separation=1.0, seed=seed)
        interval = bootstrap_auc_ci(y, p, n=400, seed=seed)
        covered += interval.low <= truth <= interval.high
    assert covered >= 34  # a 95% interval misses about 2 of 40
    small = bootstrap_auc_ci(*_cohort(50), n=1000)
    large = bootstrap_auc_ci(*_cohort(800), n=1000)
    assert large.high - large.low < (small.high - small.low) / 2


def test_tiny_cohorts_always_have_an_auc_in_every_resample() -> None:
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    p = np.linspace(0.1, 0.9, 8)
    interval = bootstrap_auc_ci(y, p, n=500)
    assert interval.estimate == pytest.approx(roc_auc_score(y, p))
    assert np.isfinite([interval.low, interval.high]).all()


def test_brier_is_sklearns_and_its_interval_brackets_it() -> None:
    y, p = _cohort(100)
    interval = brier_ci(y, p, n=500)
    assert interval.estimate == pytest.approx(brier_score_loss(y, p))
    assert interval.low < interval.estimate < interval.high


def _reference_ece(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for k in range(n_bins):
        upper = p <= edges[k + 1] if k == n_bins - 1 else p < edges[k + 1]
        inside = (p >= edges[k]) & upper
        if inside.any():
            total += inside.mean() * abs(p[inside].mean() - y[inside].mean())
    return total


def test_ece_is_the_count_weighted_gap_of_equal_width_bins() -> None:
    y = np.r_[np.ones(7), np.zeros(3)]
    assert expected_calibration_error(y, np.full(10, 0.7)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(10, 0.9)) == pytest.approx(0.2)
    rng = np.random.default_rng(6)
    p = rng.uniform(size=200)
    p[:5] = [0.0, 1.0, 0.5, 0.25, 0.75]  # the bin edges
    y = (rng.uniform(size=200) < p ** 2).astype(int)
    assert expected_calibration_error(y, p) == pytest.approx(_reference_ece(y, p))
    interval = ece_ci(y, p, n=500)
    assert interval.low < interval.estimate < interval.high


def test_binary_statistics_gathers_every_number_of_a_report() -> None:
    y, p = _cohort(90, separation=1.5)
    stats = binary_statistics(y, p, n_bootstrap=300, seed=1)
    metrics = stats.metrics()
    assert metrics["auc"] == pytest.approx(roc_auc_score(y, p))
    assert metrics["auc_low"] < metrics["auc"] < metrics["auc_high"]
    assert metrics["auc_delong_low"] < metrics["auc"] < metrics["auc_delong_high"]
    assert metrics["auc_p_vs_chance"] == pytest.approx(auc_p_vs_chance(y, p))
    assert metrics["brier"] == pytest.approx(brier_score_loss(y, p))
    assert metrics["ece"] == pytest.approx(expected_calibration_error(y, p))
    assert stats.n == 90 and stats.n_positive == int(y.sum())
    one_positive = binary_statistics(np.array([1, 0, 0, 0]), np.array([0.9, 0.2, 0.4, 0.1]),
                                     n_bootstrap=50)
    assert np.isnan(one_positive.auc_delong.low) and one_positive.auc.estimate == 1.0


def test_delong_needs_two_patients_of_each_class() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        delong_test(np.array([1, 0, 0]), np.array([0.9, 0.1, 0.2]), np.array([0.5, 0.4, 0.3]))
