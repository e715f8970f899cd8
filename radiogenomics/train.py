"""Train a model: `radiogenomics train [data=...] [model=...] [trainer=...] [key=value ...]`
(also `python train.py ...` in a checkout).

Composes the config, instantiates the datamodule, model, callbacks, loggers and trainer,
fits, tests the best checkpoint and returns `optimized_metric` for sweepers.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig

from radiogenomics import config as rc
from radiogenomics.callbacks import DataSetupRecord, DivergenceGuard, EpochSeed, SyncEpochMetrics
from radiogenomics.distributed import adopt_parent_job, check_trainer, join_launched_job
from radiogenomics.loggers import drop_logger_callbacks, log_hyperparameters
from radiogenomics.model_card import write_model_card
from radiogenomics.models.compat import check_input_size, check_model_fits_data
from radiogenomics.models.survival import train_estimator
from radiogenomics.runs import (
    check_checkpoint,
    continue_logs,
    data_setup,
    resolve_ckpt_path,
    save_run_info,
)

log = logging.getLogger("train")


@rc.task_wrapper
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    check_trainer(cfg)

    log.info("instantiating model <%s>", cfg.model._target_)
    model: pl.LightningModule = rc.instantiate(cfg.model)
    check_model_fits_data(model, cfg.data)  # a 2D model on volumes or the reverse: stop now
    check_input_size(model, cfg.data)  # an input smaller than the net's kernels: stop now
    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule: pl.LightningDataModule = rc.instantiate(cfg.data)
    callbacks = rc.instantiate_group(cfg.get("callbacks"), "callback")
    loggers = rc.instantiate_group(cfg.get("logger"), "logger")
    setup = data_setup(cfg.data)
    # always on: stop on divergence, record the data setup, seed each epoch (exact resumption)
    callbacks = [SyncEpochMetrics(), *drop_logger_callbacks(callbacks, loggers),
                 DivergenceGuard(), DataSetupRecord(setup),
                 *([EpochSeed(cfg.seed)] if cfg.get("seed") is not None else [])]
    if not isinstance(model, pl.LightningModule):  # scikit-learn models (survival grouping)
        metrics = train_estimator(model, datamodule, loggers, cfg.paths.output_dir, cfg.test)
        save_run_info(cfg, cfg.paths.output_dir, datamodule)
        write_model_card(cfg, cfg.paths.output_dir, model, datamodule, metrics)
        return metrics, {"datamodule": datamodule, "model": model}
    log.info("instantiating trainer <%s>", cfg.trainer._target_)
    trainer: pl.Trainer = rc.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    log_hyperparameters(cfg, model, loggers)
    if cfg.get("train"):
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.output_dir)
        checkpoint = check_checkpoint(ckpt_path, model, setup) if ckpt_path else None
        continue_logs(loggers, checkpoint)  # metrics.csv: from scratch, or the epochs kept
        # checkpoints hold tensors and plain values only: never unpickle code
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if trainer.is_global_zero:
        save_run_info(cfg, cfg.paths.output_dir, datamodule)
    train_metrics = dict(trainer.callback_metrics)

    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint: testing the current weights")
        trainer.test(model=model, datamodule=datamodule, ckpt_path=best or None,
                     weights_only=True)
        log.info("best checkpoint: %s", best or "-")
    metrics = {**train_metrics, **trainer.callback_metrics}
    metrics = {k: float(v) for k, v in metrics.items()}
    if trainer.is_global_zero:
        write_model_card(cfg, cfg.paths.output_dir, model, datamodule, metrics)
    log.info("final metrics:\n%s", "\n".join(f"  {k:<16} {v:.4f}" for k, v in
                                                sorted(metrics.items())))
    return metrics, {"datamodule": datamodule, "model": model, "trainer": trainer}


@hydra.main(version_base="1.3", config_path=rc.CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    return rc.metric_value(metrics, cfg.get("optimized_metric"))


def _launched_main() -> None:
    join_launched_job()  # torchrun/srun: one run directory, written by rank 0 alone
    main()


def cli() -> None:
    """The command line: one message and exit 2 for a user error (see `config.run_cli`)."""
    adopt_parent_job()  # a DDP process of a job runs that job, not the parent's multirun
    rc.run_cli(_launched_main)


if __name__ == "__main__":
    cli()
