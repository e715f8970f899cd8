"""Segment a cohort with one segmenter or a fold ensemble: masks, region volumes, Dice.

Multi-task runs segment too, by their segmentation output (`TrainedModel.segmentation_module`):
predict.py writes their masks beside their class predictions.

Each mask comes from the members' probabilities averaged and mapped back to the grid of the
model's first sequence as read from disk (`radiogenomics.inference.masks`), and is
written as ``masks/<id>_seg.nii.gz`` with the codes of the case's label scheme (BraTS 2021
for DICOM cohorts). Where the case has a mask, the prediction is scored against it on that
same input grid, as BraTS evaluates at the original resolution (HD95 in mm).

A model trained with ``data.register=true`` predicts on the template grid: the mask is written
there (``masks/<id>_template_seg.nii.gz``) and through the patient's registration (saved as
``registration/<id>/``) on the native voxels of each registered series, the reference series'
as ``masks/<id>_seg.nii.gz`` and every other one as ``masks/<id>_<series>_seg.nii.gz``;
region volumes are measured on the reference series, scores on the grid of the case's own
mask (then in template space, as BraTS-layout masks are: the grid an unregistered NIfTI
case is scored on), and uncertainty maps stay on the template grid. With an `uncertainty`
estimator (TTA or MC dropout), every member gives N probability maps whose voxel-wise mean,
standard deviation and entropy are written beside the mask, on its grid, and summarised
inside the predicted tumour.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from radiogenomics.data.case import Case
from radiogenomics.data.cohorts import Cohort
from radiogenomics.data.labels import INTERNAL_CLASSES, REGIONS, to_internal
from radiogenomics.data.template_space import Registration
from radiogenomics.data.template_space import save as save_registration
from radiogenomics.data.template_transform import REGISTRATION_KEY
from radiogenomics.data.volume import Volume
from radiogenomics.errors import DataError, Failure, RadiogenomicsError
from radiogenomics.evaluation.segmentation_scores import region_volumes, segmentation_scores
from radiogenomics.inference.masks import (
    batch_probabilities,
    mask_on_input_grid,
    native_masks,
    on_truth_grid,
    probability_map,
    truth_on_grid,
    write_mask,
    write_uncertainty_maps,
)
from radiogenomics.inference.preprocess import CasePreprocessor, PreparedCase
from radiogenomics.inference.runner import UncertaintyEstimator, failure_of
from radiogenomics.inference.trained_models import TrainedModel
from radiogenomics.interpret.uncertainty import VoxelStatistics

log = logging.getLogger(__name__)


@dataclass
class MaskUncertainty:
    """Summary of a patient's voxel-wise uncertainty maps, inside its predicted tumour."""

    method: str
    samples: int
    """Probability maps summarised: samples per member times members."""
    tumour_voxels: int
    """Voxels of the predicted mask (any label), on the input grid."""
    entropy_tumour: float
    """Mean entropy (bits) over the predicted tumour; NaN when no tumour is predicted."""
    std_tumour: dict[str, float]
    """Per output channel (ET, TC, WT or background, NCR, ED, ET): mean standard deviation
    of its probability over the predicted tumour."""
    maps: list[Path]


@dataclass
class PatientSegmentation:
    """One patient's mask file, region volumes (ml) and, when it has a mask, its scores."""

    id: str
    mask: Path | None
    volumes: dict[str, float] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)
    """Dice, IoU and HD95 (mm) against the case's own mask, on the input grid."""
    failed: bool = False
    uncertainty: MaskUncertainty | None = None
    registration: Path | None = None
    """The patient's registration to template space (``data.register=true``), else None."""


@dataclass
class CohortSegmentation:
    """Segmentations of every patient of a cohort, in id order, and the failures."""

    members: list[str]
    patients: list[PatientSegmentation]
    failures: list[Failure] = field(default_factory=list)


class CohortSegmenter:
    """Segment patients with `models` (an ensemble when more than one); see module docstring."""

    def __init__(self, models: list[TrainedModel], out_dir: str | Path, *,
                 uncertainty: UncertaintyEstimator | None = None) -> None:
        if not models or any(m.segmentation_module is None for m in models):
            raise RadiogenomicsError("CohortSegmenter needs models that segment (target seg, "
                                     "or multi-task runs)")
        if uncertainty is not None:
            for model in models:
                uncertainty.check(model.net, voxelwise=True)
        self.models = models
        self.out_dir = Path(out_dir)
        self.uncertainty = uncertainty
        self.preprocessor = CasePreprocessor(models[0].preprocess)
        self.modules = [m.segmentation_module for m in models]

    def segment_case(self, case: Case) -> PatientSegmentation:
        """One patient's mask, volumes, scores and uncertainty; DataError if unreadable."""
        prepared = self.preprocessor(case)
        modules = self.modules
        probabilities = np.mean([probability_map(m, prepared.image) for m in modules], axis=0)
        if not np.isfinite(probabilities).all():
            raise DataError("the model's output is not finite (NaN or inf): no mask written",
                            patient=case["id"], hint="check this patient's images (extreme or "
                            "empty intensities) and that the checkpoint is not diverged")
        mask = mask_on_input_grid(modules[0], self.preprocessor, prepared, probabilities, case)
        registration = prepared.sample.get(REGISTRATION_KEY)
        on_reference, saved = mask, None
        if registration is None:
            path = write_mask(mask, self.out_dir / "masks", case["id"])
        else:
            path, on_reference, saved = self._write_native(case["id"], mask, registration)
        volumes = region_volumes(on_reference.array, on_reference.affine,
                                 mask.meta["label_scheme"])
        scores = {}
        if case.get("seg"):
            scored = mask if registration is None else on_truth_grid(case, mask)
            predicted = to_internal(scored.array.astype(np.int64), mask.meta["label_scheme"])
            truth = truth_on_grid(case, scored)
            values = segmentation_scores(torch.from_numpy(predicted)[None, None],
                                         torch.from_numpy(truth)[None, None], scored.spacing)
            scores = {name: float(value[0]) for name, value in values.items()}
        patient = PatientSegmentation(case["id"], path, volumes, scores, registration=saved)
        if self.uncertainty is not None:
            patient.uncertainty = self._uncertainty(prepared, mask)
        return patient

    def _write_native(self, case_id: str, mask: Volume, registration: Registration
                      ) -> tuple[Path, Volume, Path]:
        """The template-space mask written as it is and on each registered series' voxels,
        and the registration saved; the reference series' mask file, that mask, the folder."""
        folder = self.out_dir / "masks"
        write_mask(mask, folder, f"{case_id}_template")
        reference = self.preprocessor.reference
        masks = native_masks(mask, registration)
        paths = {series: write_mask(native, folder, case_id if series == reference
                                    else f"{case_id}_{series}")
                 for series, native in masks.items()}
        saved = save_registration(registration, self.out_dir / "registration" / case_id).parent
        return paths[reference], masks[reference], saved

    def _uncertainty(self, prepared: PreparedCase, mask: Volume) -> MaskUncertainty:
        """Every member's probability maps, summarised and written on the mask's grid."""
        statistics = VoxelStatistics()
        for model, module in zip(self.models, self.modules):
            image = prepared.image.to(module.device)
            statistics.add(self.uncertainty.voxel_samples(
                lambda batch, module=module: batch_probabilities(module, batch), model.net,
                image))
        exclusive = self.modules[0].hparams.output == "labels"
        maps = statistics.summary(self.uncertainty.name, exclusive)
        channels = len(maps.mean)
        stacked = np.concatenate([maps.mean, maps.std, maps.entropy[None]])
        on_grid, affine = self.preprocessor.to_input_geometry(prepared, stacked)
        maps = dataclasses.replace(maps, mean=on_grid[:channels],
                                   std=on_grid[channels:2 * channels],
                                   entropy=on_grid[2 * channels])
        written = write_uncertainty_maps(maps, affine, self.out_dir / "masks", prepared.id)
        tumour = np.asarray(mask.array) > 0
        names = INTERNAL_CLASSES if exclusive else REGIONS
        found = bool(tumour.any())
        return MaskUncertainty(
            maps.method, maps.samples, int(tumour.sum()),
            float(maps.entropy[tumour].mean()) if found else float("nan"),
            {name: float(std[tumour].mean()) if found else float("nan")
             for name, std in zip(names, maps.std)},
            written)

    def segment(self, cohort: Cohort) -> CohortSegmentation:
        """Every patient of `cohort`, including those it skipped, in id order."""
        result = CohortSegmentation([m.name for m in self.models], [])
        result.failures += cohort.skipped
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
