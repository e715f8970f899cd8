"""The one place that imports Hydra: configs into objects, run bookkeeping, the task wrapper."""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

import radiogenomics

log = logging.getLogger(__name__)


def _n_logits(num_classes: int) -> int:
    return 1 if int(num_classes) == 2 else int(num_classes)


def register_resolvers() -> None:
    """OmegaConf resolvers used by conf/: ``${len:...}`` and ``${n_logits:...}``."""
    for name, fn in {"len": lambda x: len(x), "n_logits": _n_logits}.items():
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


def save_run_info(cfg: DictConfig, output_dir: str | Path,
                  datamodule: pl.LightningDataModule | None = None) -> Path:
    """Write the resolved config, package version, git commit and split file into the run dir."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    info: dict[str, Any] = {
        "radiogenomics_version": radiogenomics.__version__,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "python": sys.version.split()[0],
        "command": sys.argv,
    }
    splits = getattr(datamodule, "splits", None)
    if splits is not None:
        (out / "splits.json").write_text(json.dumps(splits, indent=1))
        info["fold"] = getattr(datamodule, "fold", None)
    skipped = getattr(datamodule, "skipped", None)
    if skipped:
        info["skipped_patients"] = skipped
    (out / "run_info.json").write_text(json.dumps(info, indent=1))
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
    """The value a sweeper optimises, with a clear error when the metric was never logged."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not logged; logged metrics are "
                       f"{sorted(metrics)} -> set optimized_metric to one of them")
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
        try:
            return task(cfg)
        except Exception as err:
            log.error("run failed: %s: %s", type(err).__name__, err)
            raise
        finally:
            log.info("run directory: %s", output_dir)
            close_wandb()

    return wrapped


def check_trainer(cfg: DictConfig) -> None:
    """Warn about settings that cannot work where the run is started."""
    import torch

    accelerator = cfg.trainer.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError("trainer=gpu asked for but no CUDA GPU is visible -> "
                           "use trainer=cpu or trainer=default (auto)")
    if not torch.cuda.is_available() and "16" in str(cfg.trainer.get("precision", "")):
        warnings.warn("16-bit precision on CPU is slow; consider trainer.precision=32",
                      stacklevel=2)



def drop_logger_callbacks(callbacks: list[Any], loggers: list[Logger]) -> list[Any]:
    """Without a logger, LearningRateMonitor cannot work: leave it out instead of failing."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    if loggers:
        return callbacks
    kept = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if len(kept) < len(callbacks):
        log.info("no logger: the learning-rate monitor is off")
    return kept
