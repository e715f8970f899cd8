"""Classification from 2D slices, evaluated per patient after aggregating its slices."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_f1_score,
)

from radiogenomics.evaluation.aggregation import PatientAggregation
from radiogenomics.models.base import SPLITS
from radiogenomics.models.classifier import ClassificationModule

EVALUATED = ("val", "test")


def patient_metrics(scores: torch.Tensor, targets: torch.Tensor, num_classes: int,
                    prefix: str) -> dict[str, torch.Tensor]:
    """AUC, accuracy and macro F1 of patient-level scores, keyed ``{prefix}auc`` etc."""
    if num_classes == 2:
        values = {"auc": binary_auroc(scores, targets), "acc": binary_accuracy(scores, targets),
                  "f1": binary_f1_score(scores, targets)}
    else:
        values = {
            "auc": multiclass_auroc(scores, targets, num_classes),
            "acc": multiclass_accuracy(scores, targets, num_classes),
            "f1": multiclass_f1_score(scores, targets, num_classes, average="macro"),
        }
    return {f"{prefix}{name}": value for name, value in values.items()}


class SliceClassificationModule(ClassificationModule):
    """`ClassificationModule` for 2D nets trained on slices of each patient.

    Training is per slice. Validation and test log slice metrics as ``{split}/slice_auc``,
    ``{split}/slice_acc``, ``{split}/slice_f1``, and patient metrics as ``{split}/auc``,
    ``{split}/acc``, ``{split}/f1`` after aggregating each patient's slices (``aggregate``:
    ``mean`` probability or majority ``vote``); ``val/auc_best`` follows the patient AUC.
    A batch of volumes (one item per patient) works too: aggregation is then the identity.
    """

    def __init__(self, *args: Any, aggregate: str = "mean", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for split in SPLITS:
            key = f"{split}_metrics"
            self.metrics[key] = self.metrics[key].clone(prefix=f"{split}/slice_")
        self.patients = nn.ModuleDict({split: PatientAggregation(aggregate) for split in EVALUATED})

    def _update_metrics(self, split: str, batch: dict[str, Any],
                        probabilities: torch.Tensor) -> None:
        super()._update_metrics(split, batch, probabilities)
        if split in self.patients:
            self.patients[split].update(list(batch["id"]), probabilities, batch["label"])

    def _log_patients(self, split: str) -> dict[str, torch.Tensor]:
        scores, targets = self.patients[split].compute()
        self.patients[split].reset()
        # Metric.compute squeezes one-element results: restore one row per patient
        targets = targets.reshape(-1)
        scores = scores.reshape(-1) if self.binary else scores.reshape(len(targets), -1)
        values = patient_metrics(scores, targets, self.hparams.num_classes, f"{split}/")
        self.log_dict(values, prog_bar=split == "val")
        return values

    def _log_epoch(self, split: str) -> dict[str, torch.Tensor]:
        values = super()._log_epoch(split)
        if split in self.patients:
            values.update(self._log_patients(split))
        return values
