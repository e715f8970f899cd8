"""LightningModule for patient-level classification (MGMT, grade, survival class)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from monai.losses import FocalLoss
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassF1Score,
)

from radiogenomics.models.base import SPLITS, TrainableModule

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


class ClassificationModule(TrainableModule):
    """Train an injected network on one case-level target.

    Binary targets (``num_classes=2``) use one logit with BCE-with-logits (``pos_weight``
    for imbalance); more classes use cross-entropy (``class_weights``). ``loss="focal"``
    uses the focal loss instead (``focal_gamma``; same weights). Logs ``{split}/loss``,
    ``{split}/auc``, ``{split}/acc``, ``{split}/f1`` and ``val/auc_best``.
    """

    BEST = "val/auc"

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
        if loss not in LOSSES:
            raise ValueError(f"model.loss must be one of {LOSSES}, not {loss!r}")
        super().__init__(net, optimizer, scheduler)
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

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Positive-class probability (binary) or class probabilities (multiclass)."""
        return torch.sigmoid(logits.squeeze(-1)) if self.binary else torch.softmax(logits, -1)

    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self._classification_loss(logits, batch)
        self._log_loss(split, loss, len(logits))
        self._update_metrics(split, batch, self.probabilities(logits.detach()))
        return loss

    def _classification_loss(self, logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """The criterion of a batch's logits against its ``label``s (all must be labelled)."""
        target = batch["label"]
        if (target < 0).any():
            raise ValueError(f"batch of patients {batch['id']} holds an unlabelled case")
        if self.binary:
            return self.criterion(logits.squeeze(-1), target.float())
        return self.criterion(logits, target.long())

    def _update_metrics(self, split: str, batch: dict[str, Any],
                        probabilities: torch.Tensor) -> None:
        """Accumulate one batch into the split's metrics."""
        self.metrics[f"{split}_metrics"].update(probabilities, batch["label"].long())

    def _log_epoch(self, split: str) -> dict[str, torch.Tensor]:
        values = self.metrics[f"{split}_metrics"].compute()
        self.log_dict(values, prog_bar=split == "val")
        self.metrics[f"{split}_metrics"].reset()
        return values

    def _train_metrics(self) -> Iterable[Metric]:
        return self.metrics["train_metrics"].values()

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        return {"id": list(batch["id"]), "probability": self.probabilities(self(batch["image"]))}
