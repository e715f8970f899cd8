"""More than one machine: README's torchrun command on two "machines" (two torchrun agents on
loopback, gloo) ends as one machine with the same global batch does, fills the shared cache
once, and leaves the run folder to rank 0."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from radiogenomics import distributed
from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.datamodule import MRIDataModule
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.errors import ConfigError, DataError
from tests.test_readme import readme_commands

ROOT = Path(__file__).resolve().parents[1]
RUN = "logs/train/runs/two-machines"
TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_torchrun_cpu(node_rank: int, port: int) -> list[str]:
    """README's torchrun command for CPU machines, for machine `node_rank` of two on loopback."""
    (command,) = [c for c in readme_commands()
                  if c.startswith("torchrun ") and "trainer=ddp_cpu" in c]
    assert f"hydra.run.dir={RUN}" in command and "--node_rank 0" in command
    command = (command.replace("--node_rank 0", f"--node_rank {node_rank}")
               .replace("HOST0", "127.0.0.1").replace("--master_port 29500",
                                                        f"--master_port {port}"))
    args = shlex.split(command)
    args[0] = str(Path(sys.executable).parent / "torchrun")
    args[args.index("train.py")] = str(ROOT / "train.py")
    return args


def tiny(cohort: Path) -> list[str]:
    """Two epochs on the tiny cohort: 4 training patients, batch 2 on each of 2 processes."""
    return [f"data.root={cohort}", "data.synthetic=null", "data.spatial_size=[16,16,16]",
            "data.batch_size=2", "data.n_folds=2", "data.num_workers=0",
            "data.prepare_workers=0", "trainer.max_epochs=2", "~callbacks.progress_bar"]


def env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in ("RADIOGENOMICS_HOME",
                                                                 "HYDRA_FULL_ERROR")},
            "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_all(commands: list[tuple[list[str], Path]]) -> list[str]:
    """Run the commands at once, each in its folder; their outputs (each must succeed)."""
    processes = [subprocess.Popen(args, cwd=cwd, env=env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for args, cwd in commands]
    try:
        outputs = [process.communicate(timeout=TIMEOUT)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-4000:]
    return outputs


@pytest.fixture(scope="module")
def two_machines(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The 2-machine run (both started from the shared folder); beside it, at the same time,
    the 1-machine run of 2 processes with the same global batch, and `radiogenomics prepare`
    with the same data overrides."""
    base = tmp_path_factory.mktemp("multinode")
    shared, one, prepared = base / "shared", base / "one-machine", base / "prepared"
    for folder in (shared, one, prepared):
        folder.mkdir()
    port = free_port()
    overrides = tiny(tiny_cohort)
    data = [o for o in overrides if o.startswith("data.")]
    outputs = run_all([
        *[([*readme_torchrun_cpu(rank, port), *overrides], shared) for rank in (0, 1)],
        ([sys.executable, str(ROOT / "train.py"), "trainer=ddp_cpu", "trainer.devices=2",
          f"hydra.run.dir={RUN}", *overrides], one),
        ([sys.executable, "-m", "radiogenomics", "prepare", *data], prepared)])
    return SimpleNamespace(shared=shared, run=shared / RUN, outputs=outputs[:2], one=one / RUN,
                           prepared=prepared)


def test_two_machines_end_with_the_metrics_of_one_machine_with_the_same_global_batch(
        two_machines: SimpleNamespace) -> None:
    """2 machines x 1 process x batch 2 against 1 machine x 2 processes x batch 2: the same
    DistributedSampler shards (rank = node rank x devices + local rank), the same averaged
    gradients, the same epoch metrics gathered from both processes."""
    two = pd.read_csv(two_machines.run / "csv" / "metrics.csv")
    one = pd.read_csv(two_machines.one / "csv" / "metrics.csv")
    assert list(two.columns) == list(one.columns)
    assert {"train/loss", "val/auc", "val/loss", "test/auc", "test/loss"} <= set(two.columns)
    assert two["epoch"].max() == 2 and two["train/loss"].notna().sum() == 2
    pd.testing.assert_frame_equal(two, one, rtol=1e-5, atol=1e-6)
    losses = two["train/loss"].dropna()
    assert losses.iloc[0] != losses.iloc[1]  # it trained: equal metrics are not two no-ops


def test_the_shared_cache_is_filled_once_by_rank_0(two_machines: SimpleNamespace) -> None:
    rank0, rank1 = two_machines.outputs
    assert "preprocessing cache: 10 prepared, 0 already cached" in rank0
    assert "preparing cache" not in rank1 and "preprocessing cache" not in rank1
    cache = two_machines.shared / "data" / "cache" / "synthetic"
    entries = list(cache.iterdir())
    assert len(entries) == 10 and not [e for e in entries if e.name.startswith(".")]
    assert len(list((two_machines.shared / "data" / "splits").rglob("*.json"))) == 1


def test_rank_1_writes_nothing_into_the_run_folder(two_machines: SimpleNamespace) -> None:
    rank0, rank1 = two_machines.outputs
    runs = two_machines.shared / "logs" / "train" / "runs"
    assert [p.name for p in runs.iterdir()] == ["two-machines"]
    for name in ("config.yaml", "run_info.json", "model_card.md", "csv/metrics.csv",
                 "checkpoints/last.ckpt", ".hydra/config.yaml"):
        assert (two_machines.run / name).is_file(), name
    log = (two_machines.run / "train.log").read_text()
    assert log.count("fold 0/2:") == 1 and log.count("final metrics") == 1  # rank 0's alone
    assert "fold 0/2:" in rank1 and "final metrics" in rank1  # rank 1 logged to its console
    assert "handlers=[console]" not in (two_machines.run / ".hydra" / "hydra.yaml").read_text()
    assert "model card:" in rank0 and "model card:" not in rank1


def test_prepare_fills_the_cache_and_splits_that_the_run_reads(
        two_machines: SimpleNamespace) -> None:
    prepared = two_machines.prepared
    made, read = (folder / "data" / "cache" / "synthetic" for folder in (prepared,
                                                                          two_machines.shared))
    assert sorted(p.name for p in made.iterdir()) == sorted(p.name for p in read.iterdir())
    (splits,) = (prepared / "data" / "splits").rglob("*.json")
    assert json.loads(splits.read_text()) == json.loads(
        (two_machines.run / "splits.json").read_text())
    assert [p.name for p in (prepared / "logs").iterdir()] == ["prepare"]  # nothing trained


# ------------------------------------------------------------------- the pieces, one by one
TORCHRUN_RANK_1 = {"TORCHELASTIC_RUN_ID": "none", "RANK": "1", "WORLD_SIZE": "2"}


@pytest.fixture
def torchrun_env(monkeypatch: pytest.MonkeyPatch):
    for key in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)

    def set_env(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(key, value)
    return set_env


def test_processes_of_rank_above_0_get_no_hydra_folder_and_no_log_file(torchrun_env) -> None:
    torchrun_env(**TORCHRUN_RANK_1)
    argv = ["train.py", "hydra.run.dir=/shared/run"]
    distributed.join_launched_job(argv)
    assert argv[2:] == distributed.RANK_WITHOUT_FILES
    torchrun_env(RANK="0")
    argv = ["train.py", "hydra.run.dir=/shared/run"]
    distributed.join_launched_job(argv)
    assert argv == ["train.py", "hydra.run.dir=/shared/run"]


def test_srun_processes_are_recognised_but_an_interactive_shell_is_not(torchrun_env) -> None:
    torchrun_env(SLURM_NTASKS="8", SLURM_PROCID="3", SLURM_JOB_NAME="train")
    assert distributed.launched_rank() == (3, 8)
    torchrun_env(SLURM_JOB_NAME="bash")
    assert distributed.launched_rank() is None
    torchrun_env(SLURM_JOB_NAME="train", SLURM_NTASKS="1")
    assert distributed.launched_rank() is None


@pytest.mark.parametrize("argv, key", [(["train.py"], "hydra.run.dir"),
                                       (["train.py", "-m", "hydra.run.dir=x"], "-m")])
def test_a_launched_process_without_one_run_folder_stops_with_a_message(
        torchrun_env, argv: list[str], key: str) -> None:
    torchrun_env(**TORCHRUN_RANK_1)
    with pytest.raises(ConfigError) as error:
        distributed.join_launched_job(list(argv))
    assert error.value.key == key


def test_nodes_times_devices_must_be_the_processes_started(torchrun_env, train_cfg) -> None:
    cfg = train_cfg("trainer=ddp_cpu", "trainer.num_nodes=1")
    torchrun_env(**TORCHRUN_RANK_1)
    with pytest.raises(ConfigError, match="not the 2 processes"):
        distributed.check_trainer(cfg)
    cfg.trainer.num_nodes = 2
    distributed.check_trainer(cfg)


@pytest.mark.parametrize("shared, local_rank, node_rank, prepares", [
    (True, 0, 0, True), (True, 0, 1, False), (True, 1, 0, False),
    (False, 0, 1, True), (False, 1, 1, False)])
def test_the_cache_is_written_only_where_lightning_runs_prepare_data(
        tiny_cohort: Path, tmp_path: Path, shared: bool, local_rank: int, node_rank: int,
        prepares: bool) -> None:
    def datamodule() -> MRIDataModule:
        return MRIDataModule("synthetic", str(tiny_cohort), sequences=["T1wCE"],
                             spatial_size=[8, 8, 8], n_folds=2, cache_dir=str(tmp_path),
                             prepare_workers=0, shared_cache=shared)

    datamodule().prepare_data()  # by the process that prepares (no trainer: this one)
    process = datamodule()
    assert process.prepare_data_per_node is not shared
    process.trainer = SimpleNamespace(local_rank=local_rank, node_rank=node_rank)
    process.setup("fit")
    assert process.cache.read_only is not prepares


def test_a_read_only_cache_never_rebuilds_a_damaged_entry(tiny_cohort: Path,
                                                          tmp_path: Path) -> None:
    case = load_cohort("synthetic", tiny_cohort)[0]
    cache = PreprocessCache(tmp_path, PreprocessConfig(sequences=("T1wCE",),
                                                       spatial_size=(8, 8, 8)))
    cache.prepare([case], progress=False)
    image = cache.entry(case) / "image.npy"
    image.write_bytes(image.read_bytes()[:-8])
    reader = PreprocessCache(tmp_path, cache.config)
    reader.read_only = True
    with pytest.raises(DataError, match="only reads the cache"):
        reader.load(case)
    assert image.stat().st_size == cache.entry(case).joinpath("image.npy").stat().st_size
