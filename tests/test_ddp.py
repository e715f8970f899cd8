"""Scale-out: DDP inside a multirun keeps one directory per job; cluster launchers compose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from radiogenomics import distributed as rc
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]


def test_ddp_multirun_keeps_one_directory_per_job(tiny_cohort, tmp_path) -> None:
    logs = tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "train.py", "-m", "data.fold=0,1", "trainer=ddp",
         "trainer.accelerator=cpu", "trainer.devices=2", f"data.root={tiny_cohort}",
         f"data.cache_dir={tmp_path}/cache", "data.synthetic=null",
         "data.spatial_size=[16,16,16]", "data.n_folds=2", "data.batch_size=2",
         "data.num_workers=0", "data.prepare_workers=0", "trainer.max_epochs=1",
         "~callbacks.progress_bar", f"paths.log_dir={logs}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in (logs / "train").iterdir()] == ["multiruns"]  # no stray runs/
    (sweep,) = (logs / "train" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        run = sweep / job
        assert len(list(run.rglob("config.yaml"))) == 2  # config.yaml + .hydra/config.yaml
        assert json.loads((run / "run_info.json").read_text())["fold"] == int(job)
        assert "test/auc" in pd.read_csv(run / "csv" / "metrics.csv")
        # both processes of the job ran that job, logging into its directory
        log = (run / "train.log").read_text()
        assert log.count(f"fold {job}/2:") == 2
    assert (sweep / "cv_summary.csv").exists()


def test_ddp_processes_run_the_job_not_the_sweep() -> None:
    command = rc.ddp_process_command(
        ["train.py", "-m", "-cn", "train", "data.fold=0,1", "model.optimizer.lr=1e-3"],
        ["data.fold=1", "model.optimizer.lr=1e-3"], "/logs/multiruns/x/1")
    assert command == ["train.py", "-cn", "train", "data.fold=1", "model.optimizer.lr=1e-3",
                       'hydra.run.dir="/logs/multiruns/x/1"', "hydra.output_subdir=null",
                       "hydra.mode=RUN"]


def test_ddp_session_leaves_no_distributed_settings_for_the_next_job(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("MASTER_PORT", "1234")
    with rc.ddp_session():
        os.environ.update(WORLD_SIZE="2", LOCAL_RANK="0", MASTER_PORT="5678")
    assert "WORLD_SIZE" not in os.environ and "LOCAL_RANK" not in os.environ
    assert os.environ["MASTER_PORT"] == "1234"


def test_slurm_launcher_asks_for_the_trainers_nodes_and_devices() -> None:
    cfg = compose_train(["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4",
                         "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)


def test_joblib_launcher_composes_for_parallel_local_sweeps() -> None:
    cfg = compose_train(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 2
