"""Multi-process (DDP) training: what every process must do alike."""

from __future__ import annotations

import lightning.pytorch as pl


class SyncEpochMetrics(pl.Callback):
    """Compute the epoch's logged metrics on every process before a progress bar reads them.

    Metrics logged as torchmetrics objects are synchronised across processes when first
    computed. At the end of a training epoch the progress bar, which lives on process 0 only,
    computes them before the LightningModule's own epoch-end hook does, so the processes
    would enter different collectives (a crash with gloo, a hang with NCCL; Lightning issue
    #21264). This callback, first in the list, computes them on every process beforehand.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            trainer.callback_metrics  # noqa: B018 (computing the metrics is the point)
