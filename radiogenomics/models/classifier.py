"""LightningModule for patient-level classification (MGMT, grade, survival class)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from monai.losses import FocalLoss
from torch import nn
from torchmetrics import MaxMetric, MeanMetric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from radiogenomics.models.memory_format import channels_last_input, channels_last_net

SPLITS = ("train", "val", "test")
LOSSES = ("bce", "focal")


class ClassifierFocalLoss(nn.Module):
    """MONAI's focal loss on classifier outputs: one logit (binary) or one logit per class."""

    def __init__(self, binary: bool, gamma: float, pos_weight: float | None = None,
                 class_weights: list[float] | None = None) -> None:
        super().__init__()
        # pos_weight p weighs positives p times negatives, i.e. alpha = p / (1 + p)
        alpha = pos_weight / (1 + pos_weight) if binary and pos_weight is not None else None
        self.loss = FocalLoss(gamma=gamma, alpha=alpha, use_softmax=not binary,
                              to_onehot_y=not binary,
                              weight=None if binary or not class_weights else class_weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.loss(logits.reshape(len(logits), -1), target.reshape(len(target), 1))


class ClassificationModule(pl.LightningModule):
    """Train an injected network on one case-level target.

    Binary targets (``num_classes=2``) use one logit with BCE-with-logits (``pos_weight``
    for imbalance); more classes use cross-entropy (``class_weights``). ``loss="focal"``
    uses the focal loss instead (``focal_gamma``; same weights). Logs ``{split}/loss``,
    ``{split}/auc``, ``{split}/acc``, ``{split}/f1`` and ``val/auc_best``.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        target: str = "mgmt",
        num_classes: int = 2,
        pos_weight: float | None = None,
        class_weights: list[float] | None = None,
        monitor: str = "val/auc",
        compile: bool = False,
        loss: str = "bce",
        focal_gamma: float = 2.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"model.loss must be one of {LOSSES}, not {loss!r}")
        # optimizer/scheduler are callables: kept out of the checkpoint's hyper-parameters so
        # that checkpoints load with torch.load(weights_only=True)
        self.save_hyperparameters(logger=False, ignore=["net", "optimizer", "scheduler"])
        self.net = channels_last_net(net) if channels_last else net
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.binary = num_classes == 2
        if self.binary:
            weight = torch.tensor([pos_weight]) if pos_weight is not None else None
            self.criterion: nn.Module = nn.BCEWithLogitsLoss(pos_weight=weight)
            metrics = {"auc": BinaryAUROC(), "acc": BinaryAccuracy(), "f1": BinaryF1Score()}
        else:
            weight = torch.tensor(class_weights, dtype=torch.float) if class_weights else None
            self.criterion = nn.CrossEntropyLoss(weight=weight)
            metrics = {
                "auc": MulticlassAUROC(num_classes=num_classes),
                "acc": MulticlassAccuracy(num_classes=num_classes),
                "f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
            }
        if loss == "focal":
            self.criterion = ClassifierFocalLoss(self.binary, focal_gamma, pos_weight,
                                                 class_weights)
        # ModuleDict keys cannot be "train" (nn.Module.train), hence the "_metrics" suffix
        self.metrics = nn.ModuleDict({f"{split}_metrics": MetricCollection(metrics).clone(
            prefix=f"{split}/") for split in SPLITS})
        self.losses = nn.ModuleDict({f"{split}_loss": MeanMetric() for split in SPLITS})
        self.val_auc_best = MaxMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(channels_last_input(x) if self.hparams.channels_last else x)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Positive-class probability (binary) or class probabilities (multiclass)."""
        return torch.sigmoid(logits.squeeze(-1)) if self.binary else torch.softmax(logits, -1)

    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        logits = self(batch["image"])
        target = batch["label"]
        if (target < 0).any():
            raise ValueError(f"batch of patients {batch['id']} holds an unlabelled case")
        if self.binary:
            loss = self.criterion(logits.squeeze(-1), target.float())
        else:
            loss = self.criterion(logits, target.long())
        self.losses[f"{split}_loss"](loss.detach())
        self._update_metrics(split, batch, self.probabilities(logits.detach()))
        self.log(f"{split}/loss", self.losses[f"{split}_loss"], on_step=False, on_epoch=True,
                 prog_bar=split != "test", batch_size=len(target))
        return loss

    def _update_metrics(self, split: str, batch: dict[str, Any],
                        probabilities: torch.Tensor) -> None:
        """Accumulate one batch into the split's metrics."""
        self.metrics[f"{split}_metrics"].update(probabilities, batch["label"].long())

    def on_train_start(self) -> None:
        self.val_auc_best.reset()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_epoch(self, split: str) -> dict[str, torch.Tensor]:
        values = self.metrics[f"{split}_metrics"].compute()
        self.log_dict(values, prog_bar=split == "val")
        self.metrics[f"{split}_metrics"].reset()
        return values

    def on_train_epoch_end(self) -> None:
        # a run resumed from a checkpoint taken after an epoch's last batch trains no batch
        # in that epoch: nothing to report (the interrupted run logged its batches)
        if any(metric.update_called for metric in self.metrics["train_metrics"].values()):
            self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        self.val_auc_best(values["val/auc"])
        self.log("val/auc_best", self.val_auc_best.compute(), prog_bar=True)

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"id": list(batch["id"]), "probability": self.probabilities(self(batch["image"]))}

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
