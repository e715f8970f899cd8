"""LightningModule for joint tumour segmentation and case classification (MGMT or grade)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from radiogenomics.models.base import SPLITS
from radiogenomics.models.classifier import ClassificationModule
from radiogenomics.models.segmenter import (
    SegmentationScores,
    output_channels,
    segmentation_label_map,
    segmentation_loss,
    segmentation_probabilities,
    segmentation_target,
)

TERMS = ("cls_loss", "seg_loss")
"""The two loss terms, logged apart as ``{split}/cls_loss`` and ``{split}/seg_loss``."""


def mask_present(batch: dict[str, Any]) -> torch.Tensor:
    """(B,) which cases of a batch have a tumour mask: ``has_seg`` when the batch says,
    else all of them when it holds ``seg``, else none."""
    if "has_seg" in batch:
        return torch.as_tensor(batch["has_seg"], dtype=torch.bool, device=batch["image"].device)
    return torch.full((len(batch["image"]),), "seg" in batch, dtype=torch.bool,
                      device=batch["image"].device)


class MultiTaskModule(ClassificationModule):
    """Train a net that gives ``(segmentation logits, class logits)`` on ``label`` and ``seg``.

    Takes `ClassificationModule`'s arguments and the segmentation's. The loss is
    ``cls_weight`` times the classifier's loss (``loss``: bce | focal) plus ``seg_weight``
    times the segmenter's (``seg_loss`` of ``output`` regions or labels, as
    `SegmentationModule`); a term of weight 0 is left out, so it gives no gradient. Cases
    without a mask (``has_seg`` false, or no ``seg`` in the batch) count in the
    classification term only. Logs the classifier's ``{split}/auc``,
    ``acc``, ``f1`` and ``val/auc_best``, the segmenter's per-case scores over the cases
    with masks (``val|test/dice``, ``dice_wt``...; not logged when no case has one), and both
    terms unweighted. Called on images, the module (and its net) gives the class logits, the
    classifier's contract that predict.py uses; `heads` gives both outputs, and
    `segmentation_head` the masks' side as a segmenter (predict.py writes masks with it).
    """

    def __init__(self, *args: Any, output: str = "regions", seg_loss: str = "dice_ce",
                 threshold: float = 0.5, cls_weight: float = 1.0, seg_weight: float = 1.0,
                 **kwargs: Any) -> None:
        if cls_weight < 0 or seg_weight < 0 or cls_weight == seg_weight == 0:
            raise ValueError("model.cls_weight and model.seg_weight must be >= 0, not both 0 "
                             f"(got {cls_weight} and {seg_weight})")
        super().__init__(*args, **kwargs)
        self.channels = output_channels(output)
        self.seg_criterion = segmentation_loss(seg_loss, output)
        self.scores = SegmentationScores()
        self.terms = nn.ModuleDict({f"{split}_{term}": MeanMetric()
                                    for split in SPLITS for term in TERMS})

    def heads(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segmentation logits (B, K, ...) and class logits (B, num_classes or 1)."""
        segmentation, logits = self(image, segment=True)
        if segmentation.shape[1] != self.channels:
            raise ValueError(
                f"the net gives {segmentation.shape[1]} segmentation channels but model.output="
                f"{self.hparams.output} needs {self.channels}: set model.net.out_channels")
        return segmentation, logits

    def segmentation_head(self) -> SegmentationHead:
        """This module seen as a segmenter (`SegmentationHead`), for predict.py's masks."""
        return SegmentationHead(self)

    def _step(self, batch: dict[str, Any], split: str) -> torch.Tensor:
        segmentation, logits = self.heads(batch["image"])
        masked = mask_present(batch)
        terms = {"cls_loss": self._classification_loss(logits, batch)}
        if masked.any():
            seg = batch["seg"][masked]
            terms["seg_loss"] = self.seg_criterion(
                segmentation[masked], segmentation_target(seg, self.hparams.output))
            if split != "train":
                probabilities = segmentation_probabilities(segmentation[masked].detach(),
                                                           self.hparams.output)
                self.scores.update(split, segmentation_label_map(
                    probabilities, self.hparams.output, self.hparams.threshold), seg)
        weights = {"cls_loss": self.hparams.cls_weight, "seg_loss": self.hparams.seg_weight}
        weighted = [weights[term] * value for term, value in terms.items() if weights[term] > 0]
        # a batch with nothing to learn (no mask, cls_weight=0) gives a loss of zero gradient
        loss = sum(weighted) if weighted else logits.sum() * 0
        size = len(logits)
        for term, value in terms.items():
            self.terms[f"{split}_{term}"](value.detach())
            self.log(f"{split}/{term}", self.terms[f"{split}_{term}"], on_step=False,
                     on_epoch=True, batch_size=size)
        self._log_loss(split, loss, size)
        self._update_metrics(split, batch, self.probabilities(logits.detach()))
        return loss

    def _log_epoch(self, split: str) -> dict[str, torch.Tensor]:
        values = super()._log_epoch(split)
        if split != "train" and self.scores.updated(split):
            segmentation = self.scores.compute(split)
            self.log_dict(segmentation, prog_bar=split == "val")
            values.update(segmentation)
        return values


class SegmentationHead(nn.Module):
    """A `MultiTaskModule`'s segmentation output with a segmenter's contract (``logits``,
    ``probabilities``, ``label_map``, ``hparams.output``), as `radiogenomics.inference.masks`
    reads segmenters: whole volumes, no sliding window."""

    def __init__(self, module: MultiTaskModule) -> None:
        super().__init__()
        self.module = module
        self.hparams = module.hparams
        self.training = module.training  # eval() and train() then act on the module's mode

    @property
    def device(self) -> torch.device:
        return self.module.device

    @property
    def net(self) -> nn.Module:
        return self.module.net

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Segmentation logits (B, K, ...) of whole volumes."""
        return self.module.heads(image)[0]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid region probabilities or softmax label probabilities."""
        return segmentation_probabilities(logits, self.hparams.output)

    def label_map(self, probabilities: torch.Tensor) -> torch.Tensor:
        """Internal label map (B, 1, ...) of region or label probabilities (B, K, ...)."""
        return segmentation_label_map(probabilities, self.hparams.output,
                                      self.hparams.threshold)
