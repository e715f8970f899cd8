"""Calibration: each calibrator improves miscalibrated scores on new patients, keeps their ranking,
round-trips through JSON; a sweep's calibrator is fitted from its out-of-fold predictions and
applied by predict.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss, roc_auc_score

from radiogenomics import cv
from radiogenomics.errors import RadiogenomicsError
from radiogenomics.evaluation.calibration import (
    CALIBRATION_FILE,
    CALIBRATORS,
    fit_calibrator,
    load_calibrator,
    save_calibrator,
)
from radiogenomics.evaluation.statistics import expected_calibration_error
from tests.test_cv import write_run


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn with probability sigmoid(z) and a model that reports sigmoid(3z + 1):
    too sure of itself and biased towards the positive class."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    y = (rng.uniform(size=n) < expit(z)).astype(int)
    return y, expit(3 * z + 1)


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_calibrators_lower_ece_and_brier_on_new_patients(method: str) -> None:
    fit_y, fit_p = _overconfident(2000, seed=0)
    y, p = _overconfident(2000, seed=1)
    calibrated = fit_calibrator(method, fit_y, fit_p).apply(p)
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, p) / 2
    assert brier_score_loss(y, calibrated) < brier_score_loss(y, p) - 0.01
    if method == "isotonic":  # a step function: neighbouring scores may become ties
        assert roc_auc_score(y, calibrated) == pytest.approx(roc_auc_score(y, p), abs=0.01)
    else:  # strictly increasing: the ranking, hence the AUC, is unchanged
        assert np.array_equal(np.argsort(calibrated, kind="stable"), np.argsort(p, kind="stable"))
        assert roc_auc_score(y, calibrated) == roc_auc_score(y, p)


def test_temperature_and_platt_recover_the_distortion() -> None:
    y, p = _overconfident(20000, seed=2)
    assert fit_calibrator("temperature", y, p).temperature == pytest.approx(3.0, rel=0.25)
    platt = fit_calibrator("platt", y, p)
    # the model's logit is 3z + 1; the truth is z = (logit - 1) / 3
    assert platt.slope == pytest.approx(1 / 3, rel=0.1)
    assert platt.intercept == pytest.approx(-1 / 3, abs=0.1)


@pytest.mark.parametrize("method", sorted(CALIBRATORS))
def test_a_calibrator_round_trips_through_json(method: str, tmp_path: Path) -> None:
    y, p = _overconfident(300, seed=3)
    calibrator = fit_calibrator(method, y, p)
    path = save_calibrator(calibrator, tmp_path / CALIBRATION_FILE, n=300)
    saved = json.loads(path.read_text())
    assert saved["method"] == method and saved["fitted_on"] == {"n": 300}
    new = np.linspace(0, 1, 101)
    assert np.array_equal(load_calibrator(path).apply(new), calibrator.apply(new))


def test_isotonic_applies_as_sklearn_predicts() -> None:
    y, p = _overconfident(500, seed=4)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    new = np.r_[-0.1, np.linspace(0, 1, 57), 1.1]
    assert fit_calibrator("isotonic", y, p).apply(new) == pytest.approx(reference.predict(new))


def test_unknown_methods_one_class_and_broken_files_are_refused(tmp_path: Path) -> None:
    y, p = _overconfident(50, seed=5)
    with pytest.raises(ValueError, match="choose none, temperature, platt, isotonic"):
        fit_calibrator("beta", y, p)
    with pytest.raises(ValueError, match="both classes"):
        fit_calibrator("platt", np.ones(4), np.linspace(0.2, 0.8, 4))
    (tmp_path / "broken.json").write_text('{"method": "platt"}')
    with pytest.raises(RadiogenomicsError, match="broken.json is not a calibration file"):
        load_calibrator(tmp_path / "broken.json")


def _fake_sweep(folder: Path) -> pd.DataFrame:
    """Two finished folds whose out-of-fold predictions are overconfident."""
    tables = []
    for fold in (0, 1):
        y, p = _overconfident(60, seed=10 + fold)
        table = pd.DataFrame({"id": [f"{fold}{i:04d}" for i in range(60)], "label": y,
                              "probability": p})
        write_run(folder / str(fold), fold, ["calibration=platt"], 0.7, table)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def test_cv_command_fits_the_calibrator_on_the_pooled_out_of_fold_predictions(
        tmp_path: Path, capsys) -> None:
    pooled = _fake_sweep(tmp_path)
    cv.main([str(tmp_path), "--bootstrap", "50", "--calibration", "isotonic"])
    saved = json.loads((tmp_path / CALIBRATION_FILE).read_text())
    assert saved["method"] == "isotonic" and saved["fitted_on"]["n"] == len(pooled)
    expected = fit_calibrator("isotonic", pooled["label"], pooled["probability"])
    new = np.linspace(0, 1, 11)
    assert load_calibrator(tmp_path / CALIBRATION_FILE).apply(new) == pytest.approx(
        expected.apply(new))
    assert "calibration" in capsys.readouterr().out


def test_the_multirun_callback_calibrates_when_the_sweep_asks(tmp_path: Path) -> None:
    _fake_sweep(tmp_path)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}},
                               "calibration": "none"})
    summary = cv.CrossValidationSummary(n_bootstrap=50)
    summary.on_multirun_end(config)
    assert (tmp_path / "cv_summary.csv").is_file() and not (tmp_path / CALIBRATION_FILE).exists()
    config.calibration = "temperature"
    summary.on_multirun_end(config)
    assert json.loads((tmp_path / CALIBRATION_FILE).read_text())["method"] == "temperature"


def test_cv_summary_has_per_fold_and_pooled_statistics(tmp_path: Path) -> None:
    pooled = _fake_sweep(tmp_path)
    result = cv.summarize_cv(tmp_path, n_bootstrap=100)
    folds = result.folds.set_index("fold")
    fold0 = pooled.iloc[:60]
    assert folds.loc[0, "oof/auc"] == pytest.approx(roc_auc_score(fold0.label, fold0.probability))
    assert folds.loc[0, "oof/brier"] == pytest.approx(brier_score_loss(fold0.label,
                                                                       fold0.probability))
    assert folds.loc[0, "oof/auc_low"] < folds.loc[0, "oof/auc"] < folds.loc[0, "oof/auc_high"]
    assert 0 <= folds.loc[0, "oof/auc_p_vs_chance"] < 0.05
    summary = result.summary.set_index("metric")
    assert summary.loc["oof/auc_pooled", "p_value"] < 0.05
    assert summary.loc["oof/ece_pooled", "mean"] == pytest.approx(
        expected_calibration_error(pooled.label, pooled.probability))
    brier = summary.loc["oof/brier_pooled"]
    assert brier["low"] < brier["mean"] < brier["high"]
    assert summary.loc["oof/brier", "mean"] == pytest.approx(folds["oof/brier"].mean())


def test_a_sweep_of_several_configurations_is_not_calibrated_as_one(tmp_path: Path,
                                                                    capsys) -> None:
    for job, (fold, lr) in enumerate([(0, "1e-3"), (1, "1e-3"), (0, "1e-4"), (1, "1e-4")]):
        y, p = _overconfident(20, seed=job)
        write_run(tmp_path / str(job), fold, [f"model.optimizer.lr={lr}"], 0.7,
                  pd.DataFrame({"id": [f"{fold}{i:04d}" for i in range(20)], "label": y,
                                "probability": p}))
    with pytest.raises(SystemExit) as exit_:
        cv.main([str(tmp_path), "--bootstrap", "20", "--calibration", "platt"])
    assert exit_.value.code == 2
    assert "several configurations" in capsys.readouterr().err
    assert not (tmp_path / CALIBRATION_FILE).exists()
