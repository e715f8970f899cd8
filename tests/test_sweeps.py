"""Optuna sweeps through `python train.py -m hparams_search=...`, and the local comparison."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from radiogenomics import compare

ROOT = Path(__file__).resolve().parents[1]


def sweep_command(cohort: Path, tmp_path: Path, *overrides: str) -> list[str]:
    """An Optuna sweep of cnn3d on the tiny cohort: CPU, 16-voxel inputs, 1 epoch per trial,
    no checkpoints and no test (what the sweep optimises is the validation AUC)."""
    return [sys.executable, "train.py", "-m", "hparams_search=cnn3d_optuna",
            f"data.root={cohort}", f"data.cache_dir={tmp_path}/cache", "data.synthetic=null",
            "data.spatial_size=[16,16,16]", "data.n_folds=2", "data.num_workers=0",
            "data.prepare_workers=0", "trainer=cpu", "trainer.max_epochs=1", "callbacks=none",
            "test=false", f"paths.log_dir={tmp_path}/logs", *overrides]


def test_optuna_sweep_optimises_the_metric_and_resumes_from_its_database(tiny_cohort,
                                                                         tmp_path) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = ["hydra.sweeper.study_name=tiny", f"hydra.sweeper.storage={storage}",
             "hydra.sweeper.sampler.n_startup_trials=2"]
    first = subprocess.run(sweep_command(tiny_cohort, tmp_path, "hydra.sweeper.n_trials=2",
                                         "hydra.sweep.dir=" + str(tmp_path / "first"), *study),
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    results = yaml.safe_load((tmp_path / "first" / "optimization_results.yaml").read_text())
    trials = optuna.load_study(study_name="tiny", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert results["best_value"] == max(t.value for t in trials)
    assert set(results["best_params"]) == {"model.optimizer.lr", "data.batch_size",
                                           "data.sequences"}
    # each trial trained with what Optuna asked for
    for trial, job in zip(trials, ("0", "1")):
        config = yaml.safe_load((tmp_path / "first" / job / "config.yaml").read_text())
        assert config["model"]["optimizer"]["lr"] == pytest.approx(
            trial.params["model.optimizer.lr"])
        assert config["data"]["batch_size"] == trial.params["data.batch_size"]
    table = pd.read_csv(tmp_path / "first" / "comparison.csv")
    assert len(table) == 2 and table["val/auc_best"].is_monotonic_decreasing

    again = subprocess.run(sweep_command(tiny_cohort, tmp_path, "hydra.sweeper.n_trials=1",
                                         "hydra.sweep.dir=" + str(tmp_path / "again"), *study),
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 3


def write_run(folder: Path, overrides: list[str], val_auc: list[float]) -> None:
    """A run directory with its overrides and a CSV log of `val_auc` by epoch."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (folder / "csv").mkdir()
    pd.DataFrame({"epoch": range(len(val_auc)), "step": range(len(val_auc)), "val/auc": val_auc,
                  "val/auc_best": pd.Series(val_auc).cummax()}).to_csv(
        folder / "csv" / "metrics.csv", index=False)


def test_comparison_ranks_runs_by_metric_and_shows_what_varied(tmp_path, capsys) -> None:
    write_run(tmp_path / "0", ["model.optimizer.lr=0.01", "trainer=cpu"], [0.5, 0.55])
    write_run(tmp_path / "1", ["model.optimizer.lr=0.001", "trainer=cpu"], [0.6, 0.7, 0.65])
    compare.main([str(tmp_path)])
    printed = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert list(table["run"]) == [1, 0]
    assert list(table["val/auc_best"]) == [0.7, 0.55]
    assert list(table["epochs"]) == [3, 2]
    assert "model.optimizer.lr" in table and "trainer" not in table
    assert printed.index("0.001") < printed.index("0.01")
    assert (tmp_path / "comparison.png").stat().st_size > 0


def test_comparison_names_the_logged_metrics_when_asked_for_another(tmp_path, capsys) -> None:
    write_run(tmp_path / "0", ["model.optimizer.lr=0.01"], [0.5])
    with pytest.raises(SystemExit):
        compare.main([str(tmp_path), "--metric", "val/dice_best"])
    assert "val/auc_best" in capsys.readouterr().err
