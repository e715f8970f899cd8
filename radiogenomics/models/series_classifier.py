"""MRI series recognition: sequence and acquisition plane of a slice, and series tagging."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from radiogenomics.data.readers import load_volume
from radiogenomics.data.series import (
    PLANE_CLASSES,
    SEQUENCE_CLASSES,
    SeriesSlicing,
    acquisition_axis,
    cut_series,
)
from radiogenomics.errors import DataError
from radiogenomics.evaluation.aggregation import PatientAggregation
from radiogenomics.models.base import SPLITS, TrainableModule

HEADS: dict[str, tuple[str, ...]] = {"sequence": SEQUENCE_CLASSES, "plane": PLANE_CLASSES}


class SeriesModule(TrainableModule):
    """Train a two-head net (``{"sequence": logits, "plane": logits}``) on labelled slices.

    The loss is the sum of both cross-entropies. Logs per slice ``{split}/loss``,
    ``{split}/acc_sequence``, ``{split}/acc_plane``, ``{split}/acc`` (their mean) and
    ``val/acc_best``; validation and test also log per series (class probabilities of its
    slices averaged, as `tag_series` does) ``{split}/series_acc_sequence`` and
    ``{split}/series_acc_plane``.
    """

    BEST = "val/acc"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/acc",
        compile: bool = False,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        self.criterion = nn.CrossEntropyLoss()
        self.accuracy = nn.ModuleDict({
            f"{split}_{head}": MulticlassAccuracy(num_classes=len(classes), average="micro")
            for split in SPLITS for head, classes in HEADS.items()
        })
        self.by_series = nn.ModuleDict({f"{split}_{head}": PatientAggregation("mean")
                                        for split in ("val", "test") for head in HEADS})

    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        logits = self(batch["image"])
        loss = sum(self.criterion(logits[head], batch[head].long()) for head in HEADS)
        self._log_loss(split, loss, len(batch["image"]))
        series = [f"{patient}/{name}" for patient, name in zip(batch["id"], batch["series"])]
        for head in HEADS:
            self.accuracy[f"{split}_{head}"].update(logits[head].detach(), batch[head].long())
            if f"{split}_{head}" in self.by_series:
                probabilities = torch.softmax(logits[head].detach(), dim=-1)
                self.by_series[f"{split}_{head}"].update(series, probabilities, batch[head])
        return loss

    def _log_epoch(self, split: str) -> dict[str, torch.Tensor]:
        values = {f"{split}/acc_{head}": self.accuracy[f"{split}_{head}"].compute()
                  for head in HEADS}
        values[f"{split}/acc"] = torch.stack(list(values.values())).mean()
        for head in HEADS:
            self.accuracy[f"{split}_{head}"].reset()
            if f"{split}_{head}" in self.by_series:
                scores, targets = self.by_series[f"{split}_{head}"].compute()
                self.by_series[f"{split}_{head}"].reset()
                targets = targets.reshape(-1)  # compute() squeezes a single series
                predicted = scores.reshape(len(targets), -1).argmax(dim=-1)
                values[f"{split}/series_acc_{head}"] = (predicted == targets).float().mean()
        self.log_dict(values, prog_bar=split == "val")
        return values

    def _train_metrics(self) -> Iterable[Metric]:
        return (self.accuracy[f"train_{head}"] for head in HEADS)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        logits = self(batch["image"])
        return {"id": list(batch["id"]), "series": list(batch["series"]),
                **{head: torch.softmax(logits[head], dim=-1) for head in HEADS}}


@torch.no_grad()
def tag_series(module: nn.Module, study_folder: str | Path,
               slicing: SeriesSlicing | None = None) -> list[dict[str, Any]]:
    """Sequence and plane of every series (sub-folder or NIfTI file) of an unlabelled study.

    Slices are cut across each series' acquisition axis (its stacking axis when the
    geometry is unknown) as in training (``slicing``: the data config's, default
    ``SeriesSlicing()``); their class probabilities are averaged. ``probability`` is that
    of the predicted (sequence, plane) pair. Series that cannot be read are reported with
    ``sequence=None`` and the reason in ``error``.
    """
    slicing = slicing or SeriesSlicing()
    study = Path(study_folder)
    if not study.is_dir():
        raise DataError("study folder does not exist", path=study,
                        hint="give the folder that holds one sub-folder per series")
    series = sorted(p for p in study.iterdir() if not p.name.startswith(".") and (
        p.is_dir() or p.name.lower().endswith((".nii", ".nii.gz"))))
    if not series:
        raise DataError("study folder holds no series", path=study,
                        hint="expected one sub-folder (DICOM or PNG) or NIfTI file per series")
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    tags = []
    for path in series:
        try:
            volume = load_volume(path)
        except DataError as error:
            tags.append({"series": path.name, "sequence": None, "plane": None,
                         "probability": 0.0, "error": str(error)})
            continue
        slices = torch.from_numpy(cut_series(volume, acquisition_axis(volume), slicing))
        logits = module(slices.to(device))
        tag: dict[str, Any] = {"series": path.name}
        for head, classes in HEADS.items():
            probabilities = torch.softmax(logits[head], dim=-1).mean(dim=0)
            best = int(probabilities.argmax())
            tag[head] = classes[best]
            tag[f"{head}_probability"] = float(probabilities[best])
        tag["probability"] = tag["sequence_probability"] * tag["plane_probability"]
        tags.append(tag)
    module.train(was_training)
    return tags
