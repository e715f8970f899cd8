"""What the trainable LightningModules share: set-up, loss logging, best score, optimizers."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, Metric

from radiogenomics.models.memory_format import channels_last_input, channels_last_net

SPLITS = ("train", "val", "test")


class TrainableModule(pl.LightningModule):
    """An injected net trained with injected optimizer and scheduler factories.

    The arguments of the subclass's ``__init__``, as they are when it calls this one, are
    the hyper-parameters saved in checkpoints (all but the net and the two factories);
    ``monitor`` and ``compile`` are read from them, and ``channels_last`` where the subclass
    has it. Subclasses implement `_step` (one batch of a split: its loss, logged by
    `_log_loss`) and `_log_epoch` (log a split's epoch metrics and return them);
    ``{BEST}_best`` logs the best validation ``BEST`` so far.
    """

    BEST: ClassVar[str]
    """The validation metric whose best (maximum) value is logged as ``{BEST}_best``."""

    def __init__(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None) -> None:
        super().__init__()
        # hyper-parameters are the subclass's arguments (its frame, not this one's); the
        # callables stay out so that checkpoints load with torch.load(weights_only=True)
        frame = inspect.currentframe()
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"],
                                  frame=frame.f_back if frame is not None else None)
        self.net = channels_last_net(net) if self._channels_last else net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.losses = nn.ModuleDict({f"{split}_loss": MeanMetric() for split in SPLITS})
        self.best = MaxMetric()

    @property
    def _channels_last(self) -> bool:
        return bool(self.hparams.get("channels_last", False))

    def forward(self, x: torch.Tensor, **options: Any) -> Any:
        """The net's output; `options` go to the net (e.g. ``segment=True``)."""
        return self.net(channels_last_input(x) if self._channels_last else x, **options)

    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        """The loss of one batch of `split`, with its metrics updated."""
        raise NotImplementedError

    def _log_epoch(self, split: str) -> dict[str, torch.Tensor]:
        """Log the epoch metrics of `split` (but the loss), reset them and return them."""
        raise NotImplementedError

    def _train_metrics(self) -> Iterable[Metric]:
        """The metrics that training batches update (but the loss): none by default."""
        return ()

    def _log_loss(self, split: str, loss: torch.Tensor, batch_size: int) -> None:
        """Add a batch's loss to ``{split}/loss``, its epoch mean."""
        self.losses[f"{split}_loss"](loss.detach())
        self.log(f"{split}/loss", self.losses[f"{split}_loss"], on_step=False, on_epoch=True,
                 prog_bar=split != "test", batch_size=batch_size)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def on_train_start(self) -> None:
        self.best.reset()

    def on_train_epoch_end(self) -> None:
        # a run resumed from a checkpoint taken after an epoch's last batch trains no batch
        # in that epoch: nothing to report (the interrupted run logged its batches)
        if any(metric.update_called for metric in self._train_metrics()):
            self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.best(self._log_epoch("val")[self.BEST])
        self.log(f"{self.BEST}_best", self.best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def setup(self, stage: str) -> None:
        if self.hparams.compile and stage == "fit":
            self.net = torch.compile(self.net)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.optimizer_factory(params=self.trainer.model.parameters())
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": self.hparams.monitor,
                                 "interval": "epoch", "frequency": 1}}
