"""The training spine: train.py trains, checkpoints, logs, resumes and fails clearly."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict

from radiogenomics.errors import LabelError
from radiogenomics.train import train
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]


def test_fast_dev_run_trains_cnn3d(train_cfg) -> None:
    cfg = train_cfg("debug=fdr", "data.spatial_size=[16,16,16]")
    metrics, objects = train(cfg)
    assert "train/loss" in metrics and torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert "test/auc" in metrics


def test_two_epochs_write_best_and_last_checkpoints_and_metrics_csv(train_cfg) -> None:
    cfg = train_cfg("trainer.max_epochs=2", "callbacks=default", "logger=csv",
                    "~callbacks.progress_bar")
    metrics, _ = train(cfg)
    run = Path(cfg.paths.output_dir)
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints
    assert any(name.startswith("epoch_") for name in checkpoints)
    with open(run / "csv" / "metrics.csv") as table:
        rows = list(csv.DictReader(table))
    assert {"train/loss", "val/auc", "val/auc_best", "test/auc"} <= set(rows[0])
    assert {int(r["epoch"]) for r in rows if r.get("val/auc")} == {0, 1}
    assert (run / "config.yaml").exists() and (run / "run_info.json").exists()
    assert (run / "splits.json").exists()
    assert 0.0 <= metrics["val/auc_best"] <= 1.0


def test_resume_continues_from_checkpoint(train_cfg) -> None:
    cfg = train_cfg("trainer.max_epochs=1", "callbacks=default", "~callbacks.progress_bar",
                    "test=false")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    steps_per_epoch = torch.load(last, weights_only=True)["global_step"]
    assert steps_per_epoch > 0
    resumed = train_cfg("trainer.max_epochs=2", "callbacks=default", "~callbacks.progress_bar",
                        "test=false", "ckpt_path=last")
    _, objects = train(resumed)
    # one more epoch, not two: training went on from the checkpoint
    assert objects["trainer"].global_step == 2 * steps_per_epoch
    assert torch.load(last, weights_only=True)["global_step"] == 2 * steps_per_epoch


def test_wandb_offline_run_writes_its_directory(train_cfg, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = train_cfg("debug=fdr", "logger=wandb")
    with open_dict(cfg):
        cfg.logger = compose_train(["logger=wandb"]).logger
        cfg.logger.wandb.save_dir = cfg.paths.output_dir
        cfg.logger.csv.save_dir = cfg.paths.output_dir
    train(cfg)
    runs = list((Path(cfg.paths.output_dir) / "wandb").glob("offline-run-*"))
    assert runs, "no offline W&B run directory"
    assert list(runs[0].glob("*.wandb"))


def test_wrong_override_is_a_clear_hydra_error() -> None:
    with pytest.raises(ConfigCompositionException, match="model=no_such_model|no_such_model"):
        compose_train(["model=no_such_model"])


def test_model_asking_for_a_missing_label_names_a_data_config(train_cfg, tiny_cohort,
                                                              tmp_path) -> None:
    rsna = tmp_path / "rsna"  # the RSNA layout as Kaggle ships it: MGMT labels only
    rsna.mkdir()
    (rsna / "train").symlink_to(tiny_cohort / "rsna" / "train")
    shutil.copy(tiny_cohort / "rsna" / "train_labels.csv", rsna)
    cfg = train_cfg("data=rsna", f"data.root={rsna}", "model.target=grade",
                    "debug=fdr", "data.spatial_size=[16,16,16]", "data.n_folds=2",
                    "data.num_workers=0", "data.prepare_workers=0")
    with pytest.raises(LabelError, match="data=synthetic|data=brats_hgg_lgg"):
        train(cfg)


def test_train_py_runs_from_the_command_line(tiny_cohort, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "train.py", "debug=fdr", f"data.root={tiny_cohort}",
         f"data.cache_dir={tmp_path / 'cache'}", "data.synthetic=null",
         "data.spatial_size=[16,16,16]", "data.n_folds=2", "data.batch_size=2",
         f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final metrics" in result.stdout + result.stderr
    assert "run directory" in result.stdout + result.stderr
