"""K-fold cross-validation: folds as one multirun, the summary of all folds, one W&B group."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from sklearn.metrics import roc_auc_score

from radiogenomics import cv

ROOT = Path(__file__).resolve().parents[1]
DICOM_NAME, DICOM_ID = "Doe^Jane", "MRN-7731"


def train_command(cohort: Path, tmp_path: Path, *overrides: str) -> list[str]:
    """`python train.py` on the tiny cohort: CPU, 16-voxel inputs, 1 epoch, logs in tmp."""
    return [sys.executable, "train.py", f"data.root={cohort}", f"data.cache_dir={tmp_path}/cache",
            "data.synthetic=null", "data.spatial_size=[16,16,16]", "data.batch_size=2",
            "data.num_workers=0", "data.prepare_workers=0", "trainer=cpu",
            "trainer.max_epochs=1", "~callbacks.progress_bar", f"paths.log_dir={tmp_path}/logs",
            *overrides]


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline W&B run file (LevelDB-style log of 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data, position, chunk, records = path.read_bytes(), 7, b"", []
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        length, kind = struct.unpack("<HB", data[position + 4:position + 7])
        if left < 7 or (length == 0 and kind == 0):
            position += left
            continue
        chunk += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    return records


@pytest.fixture
def named_cohort(tiny_cohort: Path, tmp_path: Path) -> Path:
    """The tiny cohort with real-looking patient names and ids in its T1wCE DICOM headers."""
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort, ignore=shutil.ignore_patterns("splits_*", ".cache"))
    for path in cohort.glob("rsna/train/*/T1wCE/*.dcm"):
        dataset = pydicom.dcmread(path)
        dataset.PatientName, dataset.PatientID = DICOM_NAME, DICOM_ID
        dataset.save_as(path)
    return cohort


def test_cv_shorthand_runs_folds_and_summarises_them_in_one_wandb_group(named_cohort,
                                                                          tmp_path) -> None:
    result = subprocess.run(
        train_command(named_cohort, tmp_path, "cv=kfold", "data.n_folds=2", "logger=wandb",
                      "data.sequences=[T1wCE]"),
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    folds = pd.read_csv(sweep / "cv_folds.csv")
    assert sorted(folds["fold"]) == [0, 1] and folds["test/auc"].notna().all()
    summary = pd.read_csv(sweep / "cv_summary.csv").set_index("metric")
    assert summary.loc["test/auc", "mean"] == pytest.approx(folds["test/auc"].mean())
    assert summary.loc["test/auc", "sd"] == pytest.approx(folds["test/auc"].std(ddof=1))
    # every training patient is validated once: pooled out-of-fold predictions cover them all
    oof = pd.read_csv(sweep / "oof_predictions.csv", dtype={"id": str})
    train_ids = sorted(p.name for p in (named_cohort / "rsna" / "train").iterdir())
    assert sorted(oof["id"]) == train_ids
    pooled = summary.loc["oof/auc_pooled"]
    assert pooled["mean"] == pytest.approx(roc_auc_score(oof["label"], oof["probability"]))
    assert pooled["low"] <= pooled["mean"] <= pooled["high"] and pooled["n"] == len(train_ids)
    assert (sweep / "cv_summary.png").stat().st_size > 0

    runs = {p.parent.parent.parent.name: wandb_records(p)
            for p in sweep.glob("**/wandb/offline-run-*/*.wandb")}
    assert set(runs) == {"0", "1", sweep.name}  # two folds + the summary run
    groups = {next(r.run.run_group for r in records if r.WhichOneof("record_type") == "run")
              for records in runs.values()}
    assert groups == {f"train-{sweep.name}"}
    for fold in ("0", "1"):
        (media,) = sweep.glob(f"{fold}/wandb/offline-run-*/files/media/images/val_oof")
        assert {p.name.split("_")[0] for p in media.glob("*.png")} >= {"roc", "confusion"}
    assert list(sweep.glob("wandb/offline-run-*/files/media/images/cv/summary_*.png"))
    for path in sweep.glob("**/wandb/**/*"):
        if path.is_file():
            content = path.read_bytes()
            assert DICOM_NAME.encode() not in content and DICOM_ID.encode() not in content, path


def write_run(folder: Path, fold: int, overrides: list[str], test_auc: float,
              predictions: pd.DataFrame) -> None:
    """A finished run directory as train.py leaves it (only what the summary reads)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(
        "".join(f"- {o}\n" for o in [f"data.fold={fold}", *overrides]))
    (folder / "run_info.json").write_text(json.dumps({"fold": fold}))
    (folder / "csv").mkdir()
    pd.DataFrame({"epoch": [0, 0], "step": [1, 2], "val/auc": [0.5, np.nan],
                  "test/auc": [np.nan, test_auc]}).to_csv(folder / "csv" / "metrics.csv",
                                                            index=False)
    predictions.assign(fold=fold).to_csv(folder / cv.OOF_FILE, index=False)


def test_summary_pools_predictions_and_separates_configurations(tmp_path) -> None:
    rng = np.random.default_rng(0)
    tables = {}
    for job, (fold, lr) in enumerate([(0, "1e-3"), (1, "1e-3"), (0, "1e-4"), (1, "1e-4")]):
        ids = [f"{fold}{i:04d}" for i in range(10)]
        tables[job] = pd.DataFrame({"id": ids, "label": [0, 1] * 5,
                                    "probability": rng.uniform(size=10)})
        write_run(tmp_path / str(job), fold, [f"model.optimizer.lr={lr}"], 0.6 + 0.1 * job,
                  tables[job])
    result = cv.summarize_cv(tmp_path, n_bootstrap=200)
    summary = result.summary.set_index(["group", "metric"])
    assert set(result.summary["group"]) == {"model.optimizer.lr=1e-3", "model.optimizer.lr=1e-4"}
    assert summary.loc[("model.optimizer.lr=1e-4", "test/auc"), "mean"] == pytest.approx(0.85)
    pooled = pd.concat([tables[0], tables[1]])
    assert summary.loc[("model.optimizer.lr=1e-3", "oof/auc_pooled"), "mean"] == pytest.approx(
        roc_auc_score(pooled["label"], pooled["probability"]))
    assert {p.name for p in result.files.values()} == {
        "cv_folds.csv", "cv_summary.csv", "cv_summary.png", "oof_predictions.csv"}


def test_summary_command_explains_a_directory_without_folds(tmp_path, capsys) -> None:
    write_run(tmp_path / "0", 0, [], 0.7, pd.DataFrame({"id": ["a", "b"], "label": [0, 1],
                                                        "probability": [0.2, 0.8]}))
    with pytest.raises(SystemExit) as stopped:
        cv.main([str(tmp_path)])
    assert stopped.value.code == 2
    assert "at least two folds" in capsys.readouterr().err
