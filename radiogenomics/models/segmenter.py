"""LightningModule for tumour segmentation: BraTS regions (sigmoid) or labels (softmax)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss, FocalLoss
from torch import nn
from torchmetrics import MeanMetric

from radiogenomics.data.labels import ED, ET, INTERNAL_CLASSES, NCR, REGIONS, regions
from radiogenomics.evaluation.segmentation_scores import SCORES, segmentation_scores
from radiogenomics.models.base import SPLITS, TrainableModule

OUTPUTS: tuple[str, ...] = ("regions", "labels")
"""``regions``: one sigmoid channel per BraTS region (ET, TC, WT); ``labels``: softmax over
the four internal labels (background, NCR, ED, ET)."""

LOSSES: tuple[str, ...] = ("dice_ce", "dice", "focal", "dice_focal")
"""Dice + cross-entropy, Dice, focal, Dice + focal (MONAI losses)."""


def output_channels(output: str) -> int:
    """Channels a net must produce for `output`."""
    if output not in OUTPUTS:
        raise ValueError(f"model.output must be one of {OUTPUTS}, not {output!r}")
    return len(REGIONS) if output == "regions" else len(INTERNAL_CLASSES)


class _LossSum(nn.Module):
    """The sum of several losses of the same logits and target."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.terms = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.terms)


def segmentation_loss(name: str, output: str) -> nn.Module:
    """The MONAI loss `name` set up for `output` (sigmoid regions or softmax labels).

    MONAI's DiceCELoss takes softmax cross-entropy over any multi-channel input and
    DiceFocalLoss a sigmoid focal term: each is used only where that is right, the other
    output gets Dice plus the right term.
    """
    output_channels(output)
    if output == "regions":
        dice: nn.Module = DiceLoss(sigmoid=True)
        losses = {"dice_ce": _LossSum(dice, nn.BCEWithLogitsLoss()), "dice": dice,
                  "focal": FocalLoss(use_softmax=False), "dice_focal": DiceFocalLoss(sigmoid=True)}
    else:
        dice = DiceLoss(softmax=True, to_onehot_y=True)
        focal = FocalLoss(use_softmax=True, to_onehot_y=True)
        losses = {"dice_ce": DiceCELoss(softmax=True, to_onehot_y=True), "dice": dice,
                  "focal": focal, "dice_focal": _LossSum(dice, focal)}
    if name not in losses:
        raise ValueError(f"model.loss must be one of {LOSSES}, not {name!r}")
    return losses[name]


def labels_from_regions(channels: torch.Tensor) -> torch.Tensor:
    """Internal label map (B, 1, ...) of binary ET, TC, WT channels (B, 3, ...), nested as
    BraTS does: WT outside TC is ED, TC outside ET is NCR, ET is ET."""
    et, tc, wt = (channels[:, [REGIONS.index(r)]].bool() for r in ("ET", "TC", "WT"))
    labels = torch.zeros_like(et, dtype=torch.int64)
    labels[wt] = ED
    labels[tc] = NCR
    labels[et] = ET
    return labels


def segmentation_target(seg: torch.Tensor, output: str) -> torch.Tensor:
    """The loss target of internal label maps (B, 1, ...): region channels or the labels."""
    if output == "regions":
        return torch.stack([regions(mask) for mask in seg]).float()
    return seg


def segmentation_probabilities(logits: torch.Tensor, output: str) -> torch.Tensor:
    """Sigmoid region probabilities or softmax label probabilities."""
    return torch.sigmoid(logits) if output == "regions" else torch.softmax(logits, dim=1)


def segmentation_label_map(probabilities: torch.Tensor, output: str,
                           threshold: float) -> torch.Tensor:
    """Internal label map (B, 1, ...) of region or label probabilities (B, K, ...)."""
    if output == "regions":
        return labels_from_regions(probabilities > threshold)
    return probabilities.argmax(dim=1, keepdim=True)


class SegmentationScores(nn.Module):
    """Per-case means of the segmentation scores (`SCORES`) of the val and test splits."""

    def __init__(self) -> None:
        super().__init__()
        self.means = nn.ModuleDict({f"{split}_{name}": MeanMetric()
                                    for split in SPLITS[1:] for name in SCORES})

    def update(self, split: str, prediction: torch.Tensor, seg: torch.Tensor) -> None:
        """Add the scores of predicted label maps against the true ones (B, 1, ...)."""
        for name, values in segmentation_scores(prediction, seg).items():
            self.means[f"{split}_{name}"].update(values)

    def updated(self, split: str) -> bool:
        """Whether any case of `split` was scored since the last `compute`."""
        return self.means[f"{split}_{SCORES[0]}"].update_called

    def compute(self, split: str) -> dict[str, torch.Tensor]:
        """``{split}/{score}`` means of the epoch, then reset."""
        values = {}
        for name in SCORES:
            metric = self.means[f"{split}_{name}"]
            values[f"{split}/{name}"] = metric.compute()
            metric.reset()
        return values


class SegmentationModule(TrainableModule):
    """Train an injected segmentation net on ``seg`` batches of internal label maps.

    ``patch_size`` is the size of the training patches the datamodule crops: validation,
    test and prediction then segment whole volumes by sliding windows of that size (null:
    the net sees whole volumes). Logs ``{split}/loss``, per-case means of
    ``val|test/{dice_et,dice_tc,dice_wt,dice_ncr,dice_ed,dice,iou,hd95}`` (HD95 in voxels of
    the network's grid) and ``val/dice_best``.
    """

    BEST = "val/dice"

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        output: str = "regions",
        loss: str = "dice_ce",
        patch_size: Sequence[int] | None = None,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        threshold: float = 0.5,
        target: str = "seg",
        monitor: str = "val/dice",
        compile: bool = False,
        channels_last: bool = False,
    ) -> None:
        if target != "seg":
            raise ValueError(f"a segmenter needs model.target=seg, not {target!r}")
        # a tuple in the hyper-parameters whatever sequence the config gave
        patch_size = tuple(int(n) for n in patch_size) if patch_size is not None else None
        super().__init__(net, optimizer, scheduler)
        self.channels = output_channels(output)
        self.criterion = segmentation_loss(loss, output)
        self.scores = SegmentationScores()

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits of whole volumes: by sliding windows of the patch size when there is one."""
        patch = self.hparams.patch_size
        if patch is None:
            return self(image)
        return sliding_window_inference(image, roi_size=list(patch),
                                        sw_batch_size=self.hparams.sw_batch_size,
                                        predictor=self, overlap=self.hparams.overlap,
                                        mode="gaussian")

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid region probabilities or softmax label probabilities."""
        return segmentation_probabilities(logits, self.hparams.output)

    def label_map(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Internal label map (B, 1, ...) of region or label probabilities (B, K, ...)."""
        return segmentation_label_map(probabilities, self.hparams.output,
                                      self.hparams.threshold)

    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        image, seg = batch["image"], batch["seg"]
        logits = self(image) if split == "train" else self.logits(image)
        if logits.shape[1] != self.channels:
            raise ValueError(
                f"the net gives {logits.shape[1]} channels but model.output="
                f"{self.hparams.output} needs {self.channels}: set model.net.out_channels")
        loss = self.criterion(logits, segmentation_target(seg, self.hparams.output))
        self._log_loss(split, loss, len(image))
        if split != "train":
            self.scores.update(split, self.label_map(self.probabilities(logits.detach())), seg)
        return loss

    def _log_epoch(self, split: str) -> dict[str, torch.Tensor]:
        values = self.scores.compute(split)
        self.log_dict(values)
        return values

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Any]:
        """Internal label maps (B, 1, ...) of the batch, on the preprocessed grid."""
        return {"id": list(batch["id"]),
                "seg": self.label_map(self.probabilities(self.logits(batch["image"])))}
