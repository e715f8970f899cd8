"""Multi-process (DDP) plumbing: a job's extra processes run that job, its process group is
closed when it ends, processes started by torchrun or srun share one run directory that rank 0
alone writes, and the trainer settings fit the machines the run starts on."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator

from omegaconf import DictConfig

from radiogenomics.errors import ConfigError

DDP_COMMAND_ENV = "RADIOGENOMICS_DDP_COMMAND"
"""Where a job leaves the command line of its extra DDP processes (read by train.py)."""
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_FLAGS_WITH_VALUE = ("-cp", "-cn", "-cd", "--config-path", "--config-name", "--config-dir")
RANK_WITHOUT_FILES = ["hydra.output_subdir=null", "hydra.job_logging.root.handlers=[console]",
                      "~hydra.job_logging.handlers.file"]
"""Overrides of a process of rank > 0 started by torchrun or srun: no `.hydra/`, no log file
(its log goes to the console, which the launcher keeps): the run directory is rank 0's."""


def ddp_process_command(argv: list[str], overrides: list[str], output_dir: str) -> list[str]:
    """The command line of a job's extra DDP processes: that job alone, in its run directory.

    Lightning starts them by running the script again with its arguments: in a multirun that
    would start the whole sweep again, in new directories. This keeps the script and Hydra's
    config flags, drops ``-m`` and the sweep, and gives the job's own overrides.
    """
    flags: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg.startswith("-") and arg not in ("-m", "--multirun"):
            flags.append(arg)
            if arg in _FLAGS_WITH_VALUE:
                flags.append(next(args, ""))
    return [argv[0], *flags, *overrides, f'hydra.run.dir="{output_dir}"',
            "hydra.output_subdir=null", "hydra.mode=RUN"]


def share_job_with_ddp_processes() -> None:
    """Leave this job's command line where the DDP processes Lightning starts will find it."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        command = ddp_process_command(sys.argv, list(hydra_cfg.overrides.task),
                                      hydra_cfg.runtime.output_dir)
        os.environ[DDP_COMMAND_ENV] = json.dumps(command)


def adopt_parent_job() -> None:
    """In a DDP process that Lightning started for a job, run that job (not the command line
    that started the parent, which may be a whole multirun): call before ``hydra.main``."""
    if os.environ.get("LOCAL_RANK", "0") != "0" and DDP_COMMAND_ENV in os.environ:
        sys.argv = json.loads(os.environ[DDP_COMMAND_ENV])


def launched_rank() -> tuple[int, int] | None:
    """(global rank, world size) of a process that torchrun or srun started as one of several
    (as Lightning detects them: TorchElasticEnvironment, SLURMEnvironment); else None."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1")
    elif "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in (
            "bash", "interactive"):
        rank, world = os.environ.get("SLURM_PROCID", "0"), os.environ["SLURM_NTASKS"]
    else:
        return None
    return (int(rank), int(world)) if int(world) > 1 else None


def join_launched_job(argv: list[str] | None = None) -> None:
    """In a process that torchrun or srun started as one of several: check that every process
    is given the same run directory, and keep all but rank 0 from writing into it.

    Each process composes its own config, so the default run directory (named by the time)
    could differ between machines; ``hydra.run.dir`` on the command line names one folder,
    on a file system all machines share. Call before ``hydra.main``.
    """
    launched = launched_rank()
    if launched is None:
        return
    rank, world = launched
    argv = sys.argv if argv is None else argv
    if any(arg in ("-m", "--multirun") for arg in argv[1:]):
        raise ConfigError(f"a multirun cannot be started by torchrun or srun ({world} "
                          "processes would each start the sweep)", key="-m",
                          hint="start one run per torchrun/srun, or use hydra/launcher=slurm "
                               "for sweeps")
    if not any(arg.startswith("hydra.run.dir=") for arg in argv[1:]):
        raise ConfigError(f"this run has {world} processes started by torchrun or srun, each "
                          "with its own clock: they need one run directory", key="hydra.run.dir",
                          hint="add hydra.run.dir=<a folder on a file system every machine "
                               "sees>, the same on every machine (e.g. logs/train/runs/"
                               "$SLURM_JOB_ID)")
    if rank > 0:
        argv += [arg for arg in RANK_WITHOUT_FILES if arg not in argv]


@contextlib.contextmanager
def ddp_session() -> Iterator[None]:
    """Close the process group a job's DDP opened and restore the distributed environment
    variables, so that the next job of a multirun starts its own DDP processes."""
    before = {key: os.environ.get(key) for key in _DDP_ENV}
    try:
        yield
    finally:
        import torch.distributed as dist

        if before["WORLD_SIZE"] is None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_trainer(cfg: DictConfig) -> None:
    """Warn about settings that cannot work where the run is started (and turn off those
    that would fail on CPU only: SyncBatchNorm)."""
    import torch

    accelerator = cfg.trainer.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError("a GPU is asked for but no CUDA GPU is visible", key="trainer",
                          hint="use trainer=cpu, or trainer=default (picks the GPU when there "
                               "is one)")
    launched = launched_rank()
    devices, nodes = cfg.trainer.get("devices"), cfg.trainer.get("num_nodes", 1)
    if launched and isinstance(devices, int) and devices > 0 and devices * nodes != launched[1]:
        raise ConfigError(f"trainer.num_nodes={nodes} x trainer.devices={devices} is not the "
                          f"{launched[1]} processes torchrun or srun started",
                          key="trainer.num_nodes",
                          hint="set trainer.num_nodes to the machines (torchrun --nnodes, "
                               "srun --nodes) and trainer.devices to the processes on each "
                               "(--nproc_per_node, --ntasks-per-node)")
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps", -1)
    if max_epochs is not None and max_epochs < 1 and max_steps in (None, -1) \
            and not cfg.trainer.get("max_time") and not cfg.trainer.get("fast_dev_run"):
        raise ConfigError(f"{max_epochs} means no limit: the run would train forever",
                          key="trainer.max_epochs",
                          hint="give a number of epochs >= 1 (or trainer.max_steps / "
                               "trainer.max_time as the limit)")
    if not torch.cuda.is_available() and "16" in str(cfg.trainer.get("precision", "")):
        warnings.warn("16-bit precision on CPU is slow; consider trainer.precision=32",
                      stacklevel=2)
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and cfg.trainer.get("sync_batchnorm"):
        warnings.warn("SyncBatchNorm needs GPUs: trainer.sync_batchnorm is off for this CPU run",
                      stacklevel=2)
        cfg.trainer.sync_batchnorm = False
