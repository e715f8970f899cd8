"""Per-case tumour segmentation scores as the BraTS challenge computes them; region volumes.

Dice, IoU and the 95th-percentile Hausdorff distance come from MONAI's metric functions
(those behind `DiceMetric`, `MeanIoU` and `HausdorffDistanceMetric`). Empty regions follow
BraTS: prediction and truth both empty scores Dice 1 and HD95 0 (MONAI's
``ignore_empty=False``); a region present in only one of them scores Dice 0 and the largest
possible HD95, the diagonal of the grid.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

from radiogenomics.data.labels import ED, NCR, REGIONS, regions, to_internal

SCORES: tuple[str, ...] = (
    "dice_et", "dice_tc", "dice_wt", "dice_ncr", "dice_ed", "dice", "iou", "hd95",
)
"""Names of the per-case scores `segmentation_scores` returns; ``dice`` is the mean over regions."""

_LABEL_SCORES = {"dice_ncr": NCR, "dice_ed": ED}


def _region_channels(labels: torch.Tensor) -> torch.Tensor:
    """(B, 3, *spatial) binary ET, TC, WT channels of a batch of internal label maps."""
    return torch.stack([regions(mask) for mask in labels]).float()


def _hd95(prediction: torch.Tensor, truth: torch.Tensor,
          spacing: Sequence[float] | None) -> torch.Tensor:
    """(B, C) HD95 of binary channels, with the BraTS values for empty channels."""
    with warnings.catch_warnings():  # empty channels are handled below
        warnings.simplefilter("ignore", UserWarning)
        distance = compute_hausdorff_distance(prediction, truth, include_background=True,
                                              percentile=95, spacing=spacing)
    spatial = prediction.shape[2:]
    steps = spacing if spacing is not None else [1.0] * len(spatial)
    diagonal = float(np.linalg.norm([n * s for n, s in zip(spatial, steps)]))
    has_prediction = prediction.flatten(2).any(-1)
    has_truth = truth.flatten(2).any(-1)
    distance = torch.where(has_prediction & has_truth, distance.to(prediction.device),
                           torch.full_like(distance, diagonal, device=prediction.device))
    return torch.where(~has_prediction & ~has_truth, torch.zeros_like(distance), distance)


def segmentation_scores(
    prediction: torch.Tensor, truth: torch.Tensor, spacing: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """Per-case scores (each of shape (B,)) of internal label maps of shape (B, 1, *spatial).

    Dice of each region (ET, TC, WT) and label (NCR, ED), their region mean ``dice``, the
    region-mean IoU and HD95. HD95 is in voxels, or in mm when `spacing` (mm) is given.
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and truth "
                         f"{tuple(truth.shape)} must have the same shape")
    predicted, true = _region_channels(prediction), _region_channels(truth)
    dice = compute_dice(predicted, true, include_background=True, ignore_empty=False)
    scores = {f"dice_{name.lower()}": dice[:, c] for c, name in enumerate(REGIONS)}
    for name, code in _LABEL_SCORES.items():
        label_dice = compute_dice((prediction == code).float(), (truth == code).float(),
                                  include_background=True, ignore_empty=False)
        scores[name] = label_dice[:, 0]
    scores["dice"] = dice.mean(1)
    scores["iou"] = compute_iou(predicted, true, include_background=True,
                                ignore_empty=False).mean(1)
    scores["hd95"] = _hd95(predicted, true, spacing).mean(1)
    return scores


def region_volumes(mask: np.ndarray, affine: np.ndarray,
                   label_scheme: str = "brats2021") -> dict[str, float]:
    """Volume in ml of each BraTS region (``ET_ml``, ``TC_ml``, ``WT_ml``) of a mask on disk.

    `mask` holds the codes of `label_scheme`; `affine` maps its voxels to mm.
    """
    internal = to_internal(np.rint(np.asarray(mask)).astype(np.int64), label_scheme)
    voxel_ml = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0
    channels = regions(internal)
    return {f"{name}_ml": float(channels[c].sum()) * voxel_ml for c, name in enumerate(REGIONS)}
