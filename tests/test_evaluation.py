"""Evaluation: bootstrap AUC intervals, report figures and page, W&B images."""

from __future__ import annotations

import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger
from sklearn.metrics import roc_auc_score

from radiogenomics.evaluation.bootstrap import bootstrap_auc_ci
from radiogenomics.evaluation.overlays import plot_map_overlay
from radiogenomics.evaluation.report import (
    classification_metrics,
    log_report,
    write_classification_report,
    write_segmentation_report,
)


def _scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative, tied scores of `n` patients."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.round(np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1), 1)


def test_bootstrap_auc_ci_brackets_sklearns_auc_and_is_reproducible() -> None:
    y, p = _scores(60)
    auc, low, high = bootstrap_auc_ci(y, p, n=2000, seed=1)
    assert auc == pytest.approx(roc_auc_score(y, p))
    assert low < auc < high
    assert bootstrap_auc_ci(y, p, n=2000, seed=1) == (auc, low, high)


def test_bootstrap_resamples_center_on_the_auc_and_narrow_with_more_patients() -> None:
    small = bootstrap_auc_ci(*_scores(40), n=2000, seed=0)
    large = bootstrap_auc_ci(*_scores(640), n=2000, seed=0)
    assert large.high - large.low < (small.high - small.low) / 2
    assert large.low < large.estimate < large.high
    assert abs((large.low + large.high) / 2 - large.estimate) < 0.02


def test_bootstrap_of_a_perfect_ranking_is_one_and_one_class_is_refused() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    assert tuple(bootstrap_auc_ci(y, y * 0.8 + 0.1, n=200)) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="both classes"):
        bootstrap_auc_ci(np.ones(5), np.linspace(0, 1, 5))


def test_classification_report_writes_roc_confusion_calibration_and_a_page(tmp_path) -> None:
    y, p = _scores(50)
    report = write_classification_report(tmp_path, y, p[:, None], "mgmt", n_bootstrap=200,
                                         notes=["cohort: synthetic"])
    assert set(report.figures) == {"roc", "confusion", "calibration"}
    assert all(path.is_file() and path.stat().st_size > 1000 for path in report.figures.values())
    page = report.markdown.read_text()
    assert "AUC (95% bootstrap CI)" in page and f"{report.metrics['auc']:.3f}" in page
    assert "![roc](roc.png)" in page and "cohort: synthetic" in page
    assert report.metrics["accuracy"] == pytest.approx(np.mean((p >= 0.5) == y))
    assert report.metrics["n"] == 50


def test_report_of_one_class_has_no_auc_but_still_accuracy(tmp_path) -> None:
    report = write_classification_report(tmp_path, np.ones(4), np.array([[0.7], [0.2], [0.9],
                                                                        [0.6]]), "mgmt")
    assert np.isnan(report.metrics["auc"]) and report.metrics["accuracy"] == 0.75
    assert set(report.figures) == {"confusion"}
    assert "| auc | n/a |" in report.markdown.read_text()


def test_multiclass_metrics_use_the_most_probable_class() -> None:
    y = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7],
                              [0.5, 0.3, 0.2]])
    metrics = classification_metrics(y, probabilities)
    assert metrics["accuracy"] == 0.75
    assert metrics["auc"] == pytest.approx(roc_auc_score(y, probabilities, multi_class="ovr"))


def test_segmentation_report_tables_dice_per_patient(tmp_path) -> None:
    scores = {"00001": {"dice_et": 0.5, "dice_wt": 0.9, "hd95": 3.0},
              "00002": {"dice_et": 0.7, "dice_wt": 0.8, "hd95": 5.0}}
    report = write_segmentation_report(tmp_path, scores)
    assert report.metrics["dice_et"] == pytest.approx(0.6) and report.metrics["n"] == 2
    page = report.markdown.read_text()
    assert "| dice_wt | 0.850 |" in page and "| 00002 | 0.700 | 0.800 | 5.000 |" in page
    assert report.figures["dice"].is_file()


def test_overlay_refuses_a_map_on_another_grid(tmp_path) -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        plot_map_overlay(np.zeros((8, 8, 8)), np.zeros((8, 8, 4)), tmp_path / "x.png")


def test_report_figures_and_metrics_go_to_wandb_offline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    from radiogenomics.loggers import wandb_logger

    y, p = _scores(30)
    report = write_classification_report(tmp_path / "report", y, p[:, None], "mgmt",
                                         n_bootstrap=100)
    csv = CSVLogger(tmp_path, name="csv", version="")
    log_report(report, [wandb_logger(save_dir=str(tmp_path), name="predict-test"), csv])
    import wandb

    wandb.finish()
    run = next((tmp_path / "wandb").glob("offline-run-*"))
    images = list((run / "files" / "media" / "images").rglob("*.png"))
    assert sorted(image.name.split("_")[0] for image in images) == [
        "calibration", "confusion", "roc"]
    assert "test/auc" in (tmp_path / "csv" / "metrics.csv").read_text()
