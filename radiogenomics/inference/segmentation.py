"""Segment a cohort with one segmenter or a fold ensemble: masks, region volumes, Dice.

Each mask comes from `radiogenomics.inference.masks.predict_mask` (members' probabilities
averaged, mapped back to the grid of the model's first sequence as read from disk) and is
written as ``masks/<id>_seg.nii.gz`` with the codes of the case's label scheme (BraTS 2021
for DICOM cohorts). Where the case has a mask, the prediction is scored against it on that
same input grid, as BraTS evaluates at the original resolution (HD95 in mm).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor

from radiogenomics.data.case import Case
from radiogenomics.data.cohorts import Cohort
from radiogenomics.data.errors import DataError, RadiogenomicsError
from radiogenomics.data.labels import to_internal
from radiogenomics.data.readers import Volume, load_volume
from radiogenomics.evaluation.segmentation import region_volumes, segmentation_scores
from radiogenomics.inference.masks import predict_mask, write_mask
from radiogenomics.inference.models import TrainedModel
from radiogenomics.inference.runner import Failure, failure_of

log = logging.getLogger(__name__)


@dataclass
class PatientSegmentation:
    """One patient's mask file, region volumes (ml) and, when it has a mask, its scores."""

    id: str
    mask: Path | None
    volumes: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    """Dice, IoU and HD95 (mm) against the case's own mask, on the input grid."""
    failed: bool = False


@dataclass
class CohortSegmentation:
    """Segmentations of every patient of a cohort, in id order, and the failures."""

    members: list[str]
    patients: list[PatientSegmentation]
    failures: list[Failure] = field(default_factory=list)


def truth_on_grid(case: Case, grid: Volume) -> np.ndarray:
    """The case's own mask in internal codes, resampled (nearest) onto `grid`'s voxels."""
    truth = load_volume(case["seg"], patient=case["id"])
    codes = to_internal(np.rint(truth.array).astype(np.int64),
                        case.get("label_scheme") or "brats2021", patient=case["id"])
    if codes.shape == grid.array.shape and np.allclose(truth.affine, grid.affine, atol=1e-4):
        return codes
    source = MetaTensor(torch.from_numpy(codes[None]).float(), affine=truth.affine)
    target = MetaTensor(torch.zeros(1, *grid.array.shape), affine=grid.affine)
    resampled = mt.ResampleToMatch(mode="nearest", padding_mode="zeros")(source, target)
    return resampled[0].round().long().numpy()


class CohortSegmenter:
    """Segment patients with `models` (an ensemble when more than one); see module docstring."""

    def __init__(self, models: list[TrainedModel], out_dir: str | Path) -> None:
        if not models or not models[0].is_segmenter:
            raise RadiogenomicsError("CohortSegmenter needs segmentation models (target seg)")
        if models[0].preprocess.slab is not None:
            raise RadiogenomicsError(
                f"{models[0].run_dir} was trained with data.slab={models[0].preprocess.slab}: "
                "its masks cannot be mapped back to the scan -> train segmenters with "
                "data.slab=null")
        self.models = models
        self.out_dir = Path(out_dir)

    def segment_case(self, case: Case) -> PatientSegmentation:
        """One patient's mask, volumes and scores; DataError if it cannot be read."""
        mask = predict_mask([m.module for m in self.models], case, self.models[0].preprocess)
        path = write_mask(mask, self.out_dir / "masks", case["id"])
        volumes = region_volumes(mask.array, mask.affine, mask.meta["label_scheme"])
        scores = {}
        if case.get("seg"):
            predicted = to_internal(mask.array.astype(np.int64), mask.meta["label_scheme"])
            truth = truth_on_grid(case, mask)
            values = segmentation_scores(torch.from_numpy(predicted)[None, None],
                                         torch.from_numpy(truth)[None, None], mask.spacing)
            scores = {name: float(value[0]) for name, value in values.items()}
        return PatientSegmentation(case["id"], path, volumes, scores)

    def segment(self, cohort: Cohort) -> CohortSegmentation:
        """Every patient of `cohort`, including those it skipped, in id order."""
        result = CohortSegmentation([m.name for m in self.models], [])
        result.failures += [Failure(pid, "", "", reason) for pid, reason in cohort.skipped]
        for case in cohort.cases:
            try:
                result.patients.append(self.segment_case(case))
            except DataError as err:
                log.warning("patient %s cannot be segmented: %s", case["id"], err)
                result.failures.append(failure_of(case["id"], case["images"], err))
        for pid in sorted({f.patient for f in result.failures}):
            result.patients.append(PatientSegmentation(pid, None, failed=True))
        result.patients.sort(key=lambda p: p.id)
        return result
