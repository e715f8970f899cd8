"""Loggers: factories that never fail for lack of a W&B account or network, a CSV logger
that survives resumption, and what a run sends to (and closes in) its loggers."""

from __future__ import annotations

import csv
import logging
import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from radiogenomics.extras import require
from radiogenomics.files import atomic_write

log = logging.getLogger(__name__)


def wandb_logged_in() -> bool:
    """Whether W&B has credentials here (env var or netrc), without contacting a server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_logger(save_dir: str, project: str = "radiogenomics", name: str | None = None,
                 group: str | None = None, offline: bool | None = None,
                 log_model: bool | str = False, **kwargs: Any) -> WandbLogger:
    """W&B logger: online when logged in, offline otherwise (``WANDB_MODE`` wins if set)."""
    require("wandb")
    mode = os.environ.get("WANDB_MODE")
    if offline is None:
        offline = mode in ("offline", "dryrun") or (mode != "online" and not wandb_logged_in())
    if offline and mode not in ("offline", "dryrun", "disabled"):
        log.info("W&B: no login found, logging offline (sync later with `wandb sync`)")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=save_dir, project=project, name=name, group=group,
                       offline=offline, log_model=False if offline else log_model, **kwargs)


def tensorboard_logger(save_dir: str, **kwargs: Any) -> TensorBoardLogger:
    """TensorBoard logger (extra ``[tensorboard]``)."""
    require("tensorboard")
    return TensorBoardLogger(save_dir=save_dir, **kwargs)


def _kept(row: dict[str, str], epoch: int, step: int | None) -> bool:
    if row.get("epoch"):
        return int(float(row["epoch"])) <= epoch
    return step is None or not row.get("step") or int(float(row["step"])) < step


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that it keeps an existing ``metrics.csv`` (and its
    columns) instead of deleting it: ``CSVLogger.continue_from`` decides what to keep."""

    def _check_log_dir_exists(self) -> None:
        self.metrics_keys = self._header()

    def _header(self) -> list[str]:
        if not self._fs.isfile(self.metrics_file_path):
            return []
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            return sorted(next(csv.reader(handle), []))


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger`` whose ``metrics.csv`` survives a resumed run.

    Lightning's logger deletes an existing ``metrics.csv`` when it starts; this one keeps it
    until train.py calls ``continue_from``: from scratch, the file starts again; resuming
    from a checkpoint of epoch E, the rows of epochs up to E are kept (those of a killed
    later epoch are dropped, the resumed run logs them again) and new rows are appended.
    """

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and rank_zero_only.rank == 0:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return super().experiment

    def continue_from(self, epoch: int | None, step: int | None = None) -> None:
        """Keep the metrics of epochs up to `epoch` (a resumed checkpoint's), or none (None).

        Rows without an epoch (the learning rate) are kept up to, not including, `step`.
        """
        if rank_zero_only.rank != 0:
            return
        writer = self.experiment
        path = Path(writer.metrics_file_path)
        rows: list[dict[str, str]] = []
        if epoch is not None and path.is_file():
            with open(path, newline="") as handle:
                # a later epoch's rows come again; so do test rows, when the run tests again
                rows = [row for row in csv.DictReader(handle)
                        if _kept(row, epoch, step)
                        and not any(v for k, v in row.items() if k.startswith("test/"))]
        if not rows:
            path.unlink(missing_ok=True)
            writer.metrics_keys = []
            return
        keys = list(writer.metrics_keys)
        with atomic_write(path) as tmp, open(tmp, "w", newline="") as handle:
            out = csv.DictWriter(handle, fieldnames=keys)
            out.writeheader()
            out.writerows(rows)


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


def drop_logger_callbacks(callbacks: list[Any], loggers: list[Logger]) -> list[Any]:
    """Without a logger, LearningRateMonitor cannot work: leave it out instead of failing."""
    from lightning.pytorch.callbacks import LearningRateMonitor

    if loggers:
        return callbacks
    kept = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if len(kept) < len(callbacks):
        log.info("no logger: the learning-rate monitor is off")
    return kept


def close_wandb() -> None:
    """Finish the W&B run of this process, if one was started."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
