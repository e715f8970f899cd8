"""The one place that imports Hydra: configs into objects, run bookkeeping, the task wrapper."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import hydra.experimental.callback
import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

import radiogenomics
from radiogenomics.files import atomic_write

log = logging.getLogger(__name__)


def _n_logits(num_classes: int) -> int:
    return 1 if int(num_classes) == 2 else int(num_classes)


def _seg_channels(output: str) -> int:
    from radiogenomics.models.segmenter import output_channels

    return output_channels(output)


def _sweep_group(default: str) -> str:
    """The W&B group of a job: ``<default>-<multirun folder>`` in a multirun, else `default`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return default
    return f"{default}-{Path(HydraConfig.get().sweep.dir).name}"


HOME_ENV = "RADIOGENOMICS_HOME"
"""Environment variable naming the folder that holds ``data/`` and ``logs/``."""


def home_dir() -> str:
    """The folder of ``data/`` and ``logs/``: ``$RADIOGENOMICS_HOME``, else the current folder.

    Resolved without Hydra's runtime (unlike ``${hydra:runtime.cwd}``), so that it also
    resolves where Hydra has not set its runtime yet: a multirun's sweep folder.
    """
    return os.path.abspath(os.path.expanduser(os.environ.get(HOME_ENV) or os.getcwd()))


def register_resolvers() -> None:
    """Resolvers of conf/: ``${home_dir:}``, ``${len:...}``, ``${n_logits:...}``,
    ``${seg_channels:...}`` and ``${sweep_group:...}``."""
    resolvers = {"home_dir": home_dir, "len": lambda x: len(x), "n_logits": _n_logits,
                 "seg_channels": _seg_channels, "sweep_group": _sweep_group}
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def instantiate(cfg: DictConfig | None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with the project's resolvers registered."""
    return hydra.utils.instantiate(cfg, **kwargs)


def instantiate_group(cfg: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every entry of a callbacks/logger dict; entries without ``_target_`` are off."""
    objects: list[Any] = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{kind} config must be a dict of configs, got {type(cfg).__name__}")
    for name, entry in cfg.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info("instantiating %s <%s> (%s)", kind, entry._target_, name)
            obj = hydra.utils.instantiate(entry)
            if obj is not None:
                objects.append(obj)
    return objects


def git_commit(cwd: Path | None = None) -> str | None:
    """Commit hash of the code that runs (with ``-dirty`` when there are local changes)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty.strip() else "")


def _write_atomic(path: Path, text: str) -> None:
    """Write a text file that no reader sees half-written."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def save_run_info(cfg: DictConfig, output_dir: str | Path,
                  datamodule: pl.LightningDataModule | None = None) -> Path:
    """Write the resolved config, package version, git commit and split file into the run dir."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    info: dict[str, Any] = {
        "radiogenomics_version": radiogenomics.__version__,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "python": sys.version.split()[0],
        "command": sys.argv,
    }
    splits = getattr(datamodule, "splits", None)
    if splits is not None:
        _write_atomic(out / "splits.json", json.dumps(splits, indent=1))
        info["fold"] = getattr(datamodule, "fold", None)
    skipped = getattr(datamodule, "skipped", None)
    if skipped:
        info["skipped_patients"] = {f.patient: f.reason for f in skipped}
    _write_atomic(out / "run_info.json", json.dumps(info, indent=1))
    return out


def log_hyperparameters(cfg: DictConfig, model: pl.LightningModule,
                        loggers: list[Logger]) -> None:
    """Send the resolved config and parameter counts to every logger."""
    if not loggers:
        return
    params = OmegaConf.to_container(cfg, resolve=True)
    params["model/params/total"] = sum(p.numel() for p in model.parameters())
    params["model/params/trainable"] = sum(
        p.numel() for p in model.parameters() if p.requires_grad)
    for logger in loggers:
        logger.log_hyperparams(params)


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value a sweeper optimises; ``None`` (a failed trial for a sweeper) with a warning
    when the metric was not logged: a run that had nothing left to train (a finished run
    resumed) has no validation metrics, a misspelt name never has any."""
    if not name:
        return None
    if name not in metrics:
        log.warning("optimized_metric=%r was not logged in this run; logged metrics are %s "
                    "(a sweep needs one of them)", name, sorted(metrics))
        return None
    return float(metrics[name])


def close_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


def task_wrapper(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report a failure clearly, say where the run lives and always close W&B."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> Any:
        output_dir = cfg.paths.get("output_dir")
        share_job_with_ddp_processes()
        try:
            with ddp_session():
                return task(cfg)
        except Exception as err:
            user_error = user_error_of(err)
            if user_error is not None and not full_errors_asked():
                log.error("%s: %s", type(user_error).__name__, user_error)
                err.reported = True  # printed once: run_cli adds no second copy
            else:
                log.error("run failed: %s: %s", type(err).__name__, err)
            raise
        finally:
            log.info("run directory: %s", output_dir)
            close_wandb()

    return wrapped


EXIT_USER_ERROR = 2
"""Exit status of a run stopped by bad data or a bad config (the message says what to do)."""
_FULL_ERROR_ENV = "HYDRA_FULL_ERROR"


def full_errors_asked() -> bool:
    """Whether the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(_FULL_ERROR_ENV) == "1" and not os.environ.get("_RG_FULL_ERROR_SET")


def user_error_of(err: BaseException) -> BaseException | None:
    """The error a user can fix, if `err` is (or wraps) one: a ``RadiogenomicsError`` or a
    config error of Hydra or OmegaConf. ``None`` for anything else, which is a bug."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from radiogenomics.errors import RadiogenomicsError

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, RadiogenomicsError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return err if isinstance(err, HydraException | OmegaConfBaseException) else None


def _resolved_path(cfg: DictConfig, key: str) -> Path | None:
    """The absolute path at `key` of `cfg`, or None where it is unset or needs Hydra's runtime."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception:  # an interpolation of Hydra's runtime: not known before the job starts
        return None
    return Path(os.path.abspath(os.path.expanduser(str(value)))) if value else None


def check_output_places(cfg: DictConfig, run_dir_key: str) -> None:
    """Refuse, before anything is written, output places that would write under ``data.root``
    or cannot be folders: the run (or sweep) folder, the logs, the cache and splits folders."""
    from radiogenomics.errors import ConfigError

    home = _resolved_path(cfg, "paths.root_dir")
    if home is not None and home.exists() and not home.is_dir():
        raise ConfigError(f"{home} is a file, not a folder", key=f"{HOME_ENV} (paths.root_dir)",
                          hint=f"set {HOME_ENV} to a folder (data/ and logs/ go there)")
    outputs = {key: _resolved_path(cfg, key) for key in (
        run_dir_key, "paths.log_dir", "data.cache_dir", "data.splits_dir")}
    data_root = _resolved_path(cfg, "data.root")
    if data_root is not None and data_root.is_dir():
        real_root = data_root.resolve()
        for key, place in outputs.items():
            if place is not None and place.resolve().is_relative_to(real_root):
                raise ConfigError(
                    f"{place} lies inside data.root {data_root}: nothing is ever written under "
                    "the data", key=key,
                    hint=f"run from another folder, or set {HOME_ENV} (or {key}) to a folder "
                         "outside the data")
    run_dir = outputs[run_dir_key]
    if run_dir is not None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot make the output folder {run_dir}: {err.strerror}",
                              key=run_dir_key, hint="choose a folder you can write to") from err


class OutputPlacesCheck(hydra.experimental.callback.Callback):
    """Hydra callback: `check_output_places` before Hydra creates the run or sweep folder."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, run_dir_key: str) -> None:
        from radiogenomics.errors import RadiogenomicsError

        try:
            check_output_places(config, run_dir_key)
        except RadiogenomicsError as err:  # Hydra turns callback errors into warnings
            sys.stderr.write(f"error: {type(err).__name__}: {err}\n")
            raise SystemExit(EXIT_USER_ERROR) from err


def run_cli(main: Callable[[], Any]) -> None:
    """Run a Hydra entry point as a command: errors a user can fix print one message and exit
    with status 2 (no traceback unless ``HYDRA_FULL_ERROR=1``); Ctrl-C exits with 130; any
    other exception is a bug and keeps its traceback."""
    from radiogenomics import interrupt

    asked = full_errors_asked()
    if not asked:  # let Hydra raise, so that the errors are printed here
        os.environ[_FULL_ERROR_ENV] = "1"
        os.environ["_RG_FULL_ERROR_SET"] = "1"
    interrupt.install()
    try:
        main()
    except (KeyboardInterrupt, SystemExit) as stop:
        if interrupt.requested():
            sys.stderr.write("interrupted (Ctrl-C)\n")
            sys.exit(interrupt.EXIT_INTERRUPTED)
        if isinstance(stop, KeyboardInterrupt):
            sys.exit(interrupt.EXIT_INTERRUPTED)
        raise
    except Exception as err:
        user_error = None if asked else user_error_of(err)
        if user_error is None:
            raise
        if not getattr(err, "reported", False):
            text = str(user_error)
            cause = user_error.__cause__
            if cause is not None and str(cause) not in text:
                text += f"\n{cause}"
            sys.stderr.write(f"error: {text}\n")
        sys.stderr.write(f"(set {_FULL_ERROR_ENV}=1 to see the traceback)\n")
        sys.exit(EXIT_USER_ERROR)


DDP_COMMAND_ENV = "RADIOGENOMICS_DDP_COMMAND"
"""Where a job leaves the command line of its extra DDP processes (read by train.py)."""
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
_FLAGS_WITH_VALUE = ("-cp", "-cn", "-cd", "--config-path", "--config-name", "--config-dir")


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
        from radiogenomics.errors import ConfigError

        raise ConfigError("a GPU is asked for but no CUDA GPU is visible", key="trainer",
                          hint="use trainer=cpu, or trainer=default (picks the GPU when there "
                               "is one)")
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps", -1)
    if max_epochs is not None and max_epochs < 1 and max_steps in (None, -1) \
            and not cfg.trainer.get("max_time") and not cfg.trainer.get("fast_dev_run"):
        from radiogenomics.errors import ConfigError

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



def drop_logger_callbacks(callbacks: list[Any], loggers: list[Logger]) -> list[Any]:
    """Without a logger, LearningRateMonitor cannot work: leave it out instead of failing."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    if loggers:
        return callbacks
    kept = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if len(kept) < len(callbacks):
        log.info("no logger: the learning-rate monitor is off")
    return kept
