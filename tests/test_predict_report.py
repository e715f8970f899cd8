"""predict.py on a labelled cohort: the report's statistics, a sweep's calibration applied to the
fold ensemble, and DeLong's test against a second model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss

from radiogenomics.evaluation.calibration import (
    CALIBRATION_FILE,
    PlattScaling,
    save_calibrator,
)
from radiogenomics.evaluation.statistics import delong_test
from radiogenomics.inference.runner import labelled
from tests.test_predict import _predict
from tests.test_predict import folds as folds  # noqa: F401 (the 2-fold sweep fixture)


def _labelled_train(tiny_cohort: Path) -> list[str]:
    return [f"data.root={tiny_cohort}", "data.split=train"]


def test_predict_applies_the_sweeps_calibration_and_says_so(folds, tiny_cohort,
                                                            tmp_path) -> None:
    calibrated_sweep = tmp_path / "sweep"
    shutil.copytree(folds, calibrated_sweep)
    raw, _ = _predict(tmp_path / "raw", f"ckpt_path={calibrated_sweep}",
                      *_labelled_train(tiny_cohort))
    calibrator = PlattScaling(slope=0.5, intercept=1.0)  # a visible change of every probability
    save_calibrator(calibrator, calibrated_sweep / CALIBRATION_FILE, n=8)
    result, report = _predict(tmp_path / "calibrated", f"ckpt_path={calibrated_sweep}",
                              *_labelled_train(tiny_cohort))
    expected = calibrator.apply(np.array([p.probabilities[0] for p in raw.patients]))
    submission = pd.read_csv(tmp_path / "calibrated" / "submission.csv")
    assert submission.MGMT_value.to_numpy() == pytest.approx(expected)
    predictions = pd.read_csv(tmp_path / "calibrated" / "predictions.csv")
    assert predictions.probability.to_numpy() == pytest.approx(expected)
    members = predictions[["member_0", "member_1"]].mean(axis=1).to_numpy()
    assert members == pytest.approx([p.probabilities[0] for p in raw.patients], abs=1e-6)
    _, y, probabilities = labelled(result)
    assert report.metrics["brier"] == pytest.approx(brier_score_loss(y, probabilities[:, 0]))
    page = report.markdown.read_text()
    assert "probabilities calibrated: Platt scaling" in page and CALIBRATION_FILE in page
    assert "Probabilities were calibrated by Platt scaling" in page
    # calibrate=false: the raw ensemble again
    _predict(tmp_path / "off", f"ckpt_path={calibrated_sweep}", "calibrate=false",
             *_labelled_train(tiny_cohort))
    off = pd.read_csv(tmp_path / "off" / "submission.csv")
    assert off.MGMT_value.to_numpy() == pytest.approx([p.probabilities[0] for p in raw.patients])


def test_report_gives_every_statistic_and_delongs_test_against_a_second_model(
        folds, tiny_cohort, tmp_path) -> None:
    result, report = _predict(tmp_path / "a", f"ckpt_path={folds / '0'}",
                              f"compare_ckpt_path={folds / '1'}", *_labelled_train(tiny_cohort))
    other, _ = _predict(tmp_path / "b", f"ckpt_path={folds / '1'}", *_labelled_train(tiny_cohort))
    _, y, p_a = labelled(result)
    _, _, p_b = labelled(other)
    expected = delong_test(y, p_a[:, 0], p_b[:, 0])
    metrics = report.metrics
    assert metrics["delong_p"] == pytest.approx(expected.p_value)
    assert metrics["delong_difference"] == pytest.approx(expected.difference)
    assert metrics["delong_n"] == len(y)
    for name in ("auc", "auc_low", "auc_high", "auc_p_vs_chance", "auc_delong_low", "brier",
                 "brier_low", "ece", "ece_high", "accuracy", "f1", "n", "n_positive"):
        assert np.isfinite(metrics[name]), name
    page = report.markdown.read_text()
    for text in ("AUC (95% bootstrap CI)", "AUC (95% DeLong CI)", "Mann-Whitney U",
                 "Brier score", "ECE, 10 bins", "## Comparison with another model (DeLong",
                 f"`{folds / '1'}`", "## Methods", "Sun & Xu", "Efron & Tibshirani"):
        assert text in page, text
