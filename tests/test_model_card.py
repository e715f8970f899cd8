"""The model card: every run writes model_card.md, whose numbers are the run's own."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import brier_score_loss, roc_auc_score

from radiogenomics.model_card import MODEL_CARD, audit_lines, split_lines, write_model_card
from radiogenomics.train import train

SECTIONS = ("Model", "Data", "Test metrics", "Validation predictions", "Calibration",
            "Leakage audit", "Intended use and limits", "Versions")


def _cell(card: str, row: str) -> str:
    """The value cell of the table row named `row`."""
    lines = [line for line in card.splitlines() if line.startswith(f"| {row} |")]
    assert len(lines) == 1, f"no single row {row!r} in the card"
    return lines[0].split("|")[2].strip()


def _estimate(card: str, row: str) -> float:
    """The estimate of a ``value (low to high)`` cell."""
    return float(_cell(card, row).split(" (")[0])


def _ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins, weighted by their counts."""
    which = np.clip((p * bins).astype(int), 0, bins - 1)
    return sum(abs((p - y)[which == b].sum()) for b in range(bins)) / len(y)


def test_a_classifier_run_writes_a_card_with_the_runs_own_numbers(train_cfg) -> None:
    cfg = train_cfg("callbacks=oof_predictions", "callbacks.oof_predictions.report=false",
                    "logger=csv")
    metrics, objects = train(cfg)
    run = Path(cfg.paths.output_dir)
    card = (run / MODEL_CARD).read_text()

    for section in SECTIONS:
        assert f"\n## {section}\n" in card
    assert "_Not available" not in card
    assert "0 = unmethylated, 1 = methylated" in card
    parameters = sum(p.numel() for p in objects["model"].parameters())
    assert f"Parameters: {parameters:,}" in card
    datamodule = objects["datamodule"]
    assert (f"Patients: {len(datamodule.train_cases)} train, {len(datamodule.val_cases)} "
            f"validation, {len(datamodule.test_cases)} test") in card
    assert "patient-level 2-fold, stratified by `mgmt`, fold 0 (0-based) of 2, seed 42" in card

    logged = pd.read_csv(run / "csv" / "metrics.csv")
    tested = logged.dropna(subset=["test/auc"]).iloc[-1]
    assert _cell(card, "test/auc") == f"{tested['test/auc']:.4f}"
    assert _cell(card, "test/auc") == f"{metrics['test/auc']:.4f}"

    predictions = pd.read_csv(run / "val_predictions.csv")
    y, p = predictions["label"].to_numpy(), predictions["probability"].to_numpy()
    assert _estimate(card, "AUC") == pytest.approx(roc_auc_score(y, p), abs=5e-4)
    assert _estimate(card, "Brier score") == pytest.approx(brier_score_loss(y, p), abs=5e-4)
    assert _estimate(card, "ECE, 10 bins") == pytest.approx(_ece(y, p), abs=5e-4)
    chance = mannwhitneyu(p[y == 1], p[y == 0], alternative="greater").pvalue
    assert float(_cell(card, "p-value of AUC > 0.5 (one-sided Mann-Whitney U)")) == (
        pytest.approx(chance, abs=5e-4))

    assert "`PASS id-overlap: no patient in two parts" in card
    assert "FAIL" not in card
    assert "calibration=none" in card
    assert "0.62 AUC" in card and "Trained on synthetic data" in card
    info = json.loads((run / "run_info.json").read_text())
    assert f"Git commit: `{info['git_commit'] or 'unknown (not a git checkout)'}`" in card
    assert f"torch {info['versions']['torch']}" in card


def test_a_segmenter_run_card_gives_its_dice_and_no_roc_statistics(train_cfg) -> None:
    cfg = train_cfg("model=unet", "debug=fdr", "data.cohort_options.image_format=nifti",
                    "data.spatial_size=[32,32,32]")  # 16 voxels: 1 after the U-Net's 4 strides
    metrics, _ = train(cfg)
    card = (Path(cfg.paths.output_dir) / MODEL_CARD).read_text()
    assert _cell(card, "test/dice_wt") == f"{metrics['test/dice_wt']:.4f}"
    assert "regions ET, TC, WT" in card
    assert "auc" not in card.split("## Versions")[0].lower()  # (the command names the test)
    assert "`PASS id-overlap" in card and "_Not available" not in card


def test_a_part_that_cannot_be_computed_is_named_in_the_card_and_the_log(
        train_cfg, tmp_path, caplog) -> None:
    cfg = train_cfg()
    run = tmp_path / "unfinished"
    with caplog.at_level(logging.WARNING, logger="radiogenomics.model_card"):
        path = write_model_card(cfg, run, model=None, datamodule=None, metrics={})
    card = path.read_text()
    assert "_Not available: ValueError: the datamodule holds no patients" in card
    assert "_Not available: FileNotFoundError: no run_info.json" in card
    assert "No test metric: the run did not test" in card
    warned = " ".join(record.getMessage() for record in caplog.records)
    for section in ("Model", "Data", "Leakage audit", "Versions"):
        assert f"section {section!r} not written" in warned


def test_a_slice_level_split_is_a_warning_and_failed_audit_lines() -> None:
    cases = [{"id": "00001"}, {"id": "00002"}]
    datamodule = SimpleNamespace(
        train_cases=cases, val_cases=cases, test_cases=cases, test_split="val", fold=0,
        part_items=lambda: {"train": [("00001", 3), ("00002", 4)], "val": [("00001", 5)]})
    setup = {"target": "mgmt", "fold": 0, "n_folds": 10, "split_seed": 42, "split_unit": "slice"}
    lines = "\n".join(split_lines(setup, datamodule) + audit_lines(datamodule, "run"))
    assert "WARNING: slice-level" in lines and "patient-level" not in lines
    assert "`FAIL id-overlap" in lines and "`FAIL slice-overlap" in lines
