"""Predict a cohort with one model or a fold ensemble: probabilities, maps, uncertainty, failures.

Each patient is preprocessed once and given to every member; the ensemble's probability is
the mean of its members' (as the RSNA-MICCAI 2021 winner averaged its folds). A patient
that cannot be read still gets a prediction, the documented `fallback`, and a `Failure`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from radiogenomics.data.case import Case
from radiogenomics.data.cohorts import Cohort
from radiogenomics.data.nifti import write_nifti
from radiogenomics.data.template_space import to_native
from radiogenomics.data.template_transform import REGISTRATION_KEY
from radiogenomics.errors import DataError, Failure, RadiogenomicsError
from radiogenomics.inference.figures import map_view, prediction_title, write_map_figure
from radiogenomics.inference.preprocess import CasePreprocessor, PreparedCase
from radiogenomics.inference.trained_models import TrainedModel
from radiogenomics.interpret.uncertainty import UncertaintySummary, summarise

log = logging.getLogger(__name__)


class Explainer(Protocol):
    """Grad-CAM or attention: an (X, Y, Z) map in [0, 1] of a (C, X, Y, Z) image."""

    name: str

    def check(self, net: nn.Module) -> None: ...

    def __call__(self, net: nn.Module, image: torch.Tensor, axis: int | None = None
                 ) -> np.ndarray: ...


class UncertaintyEstimator(Protocol):
    """TTA or MC dropout: (N, K) probability samples of a (C, X, Y, Z) image, or (N, K, X, Y, Z)
    probability maps on its grid (`voxel_samples`, for segmenters)."""

    name: str

    def check(self, net: nn.Module, voxelwise: bool = False) -> None: ...

    def __call__(self, forward: Callable[[torch.Tensor], torch.Tensor], net: nn.Module,
                 image: torch.Tensor) -> torch.Tensor: ...

    def voxel_samples(self, forward: Callable[[torch.Tensor], torch.Tensor], net: nn.Module,
                      image: torch.Tensor) -> torch.Tensor: ...


@dataclass
class PatientPrediction:
    """The prediction of one patient: ensemble mean, each member's, and its label if known."""

    id: str
    probabilities: np.ndarray
    """(K,): the positive class's probability (K = 1) or one per class."""
    members: np.ndarray
    """(M, K): each member's probabilities (empty for a failed patient)."""
    label: float | None = None
    failed: bool = False
    uncertainty: UncertaintySummary | None = None


@dataclass
class CohortPrediction:
    """Predictions of every patient of a cohort, in id order, and the failures."""

    target: str
    members: list[str]
    patients: list[PatientPrediction]
    failures: list[Failure] = field(default_factory=list)
    maps: list[Path] = field(default_factory=list)


def _n_outputs(model: TrainedModel) -> int:
    num_classes = int(model.module.hparams.get("num_classes", 2))
    return 1 if num_classes == 2 else num_classes


def fallback_probabilities(n_outputs: int, fallback: float) -> np.ndarray:
    """What a patient that failed gets: `fallback` (binary) or a uniform distribution."""
    if n_outputs == 1:
        return np.array([fallback])
    return np.full(n_outputs, 1.0 / n_outputs)


def failure_of(case_id: str, images: dict[str, str], error: DataError) -> Failure:
    """A Failure naming the series whose file or folder the error points at."""
    series = ""
    if error.path:
        bad = Path(error.path)
        series = next((s for s, p in images.items() if bad == Path(p) or Path(p) in bad.parents),
                      "")
    return Failure(case_id, str(error), series, error.path or "")


class CohortPredictor:
    """Predict patients with `models` (an ensemble when more than one); see module docstring."""

    def __init__(
        self,
        models: list[TrainedModel],
        out_dir: str | Path | None = None,
        *,
        fallback: float = 0.5,
        explainer: Explainer | None = None,
        uncertainty: UncertaintyEstimator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not models:
            raise RadiogenomicsError("no model to predict with")
        if models[0].is_segmenter:
            raise RadiogenomicsError(f"{models[0].run_dir} is a segmentation model -> "
                                     "predict it with CohortSegmenter")
        if explainer is not None and out_dir is None:
            raise ValueError("maps need an out_dir to be written to")
        for model in models:
            for tool in (explainer, uncertainty):
                if tool is not None:
                    tool.check(model.net)
        self.models = models
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.fallback = fallback
        self.explainer = explainer
        self.uncertainty = uncertainty
        self.device = torch.device(device)
        self.preprocessor = CasePreprocessor(models[0].preprocess, models[0].roi_masks)
        self.n_outputs = _n_outputs(models[0])
        self.target = models[0].target

    def predict_case(self, case: Case) -> tuple[PatientPrediction, list[Path]]:
        """One patient's prediction and the map files written; DataError if unreadable."""
        prepared = self.preprocessor(case)
        image = prepared.image.to(self.device)
        members = torch.cat([model.probabilities(image[None]) for model in self.models])
        members_np = members.double().cpu().numpy()
        prediction = PatientPrediction(case["id"], members_np.mean(axis=0), members_np,
                                       case["labels"].get(self.target))
        if self.uncertainty is not None:
            samples = torch.cat([self.uncertainty(model.probabilities, model.net, image)
                                 for model in self.models])
            prediction.uncertainty = summarise(samples, self.uncertainty.name)
        maps = (self._explain(case, prepared, image, prediction)
                if self.explainer is not None else [])
        return prediction, maps

    def _explain(self, case: Case, prepared: PreparedCase, image: torch.Tensor,
                 prediction: PatientPrediction) -> list[Path]:
        """Mean map of the members as a NIfTI file on the input's grid, and its PNG overlay
        on the scan at the scan's own resolution, titled with the prediction."""
        heatmap = np.mean([self.explainer(model.net, image, model.axis) for model in self.models],
                          axis=0)
        folder = self.out_dir / "maps"
        stem = f"{prepared.id}_{self.explainer.name}"
        array, affine = self.preprocessor.to_input_geometry(prepared, heatmap)
        registration = prepared.sample.get(REGISTRATION_KEY)
        if registration is not None:  # from the template grid onto the reference series
            native = to_native(array, affine, registration, self.preprocessor.reference, 1)
            array, affine = native.array, native.affine
        written = [write_nifti(array.astype(np.float32), affine, folder / f"{stem}.nii.gz")]
        title = prediction_title(prepared.id, self.target, prediction.probabilities,
                                 prediction.label)
        view = map_view(case, array, self.preprocessor)
        written.append(write_map_figure(view, folder / f"{stem}.png", self.explainer.name, title))
        return written

    def predict(self, cohort: Cohort) -> CohortPrediction:
        """Every patient of `cohort`, including those it skipped, in id order."""
        result = CohortPrediction(self.target, [m.name for m in self.models], [])
        result.failures += cohort.skipped
        for case in cohort.cases:
            try:
                prediction, maps = self.predict_case(case)
            except DataError as err:
                log.warning("patient %s cannot be predicted: %s", case["id"], err)
                result.failures.append(failure_of(case["id"], case["images"], err))
                continue
            result.patients.append(prediction)
            result.maps += maps
        failed = {f.patient for f in result.failures}
        labels = {case["id"]: case["labels"].get(self.target) for case in cohort.cases}
        for pid in sorted(failed):
            result.patients.append(PatientPrediction(
                pid, fallback_probabilities(self.n_outputs, self.fallback),
                np.empty((0, self.n_outputs)), labels.get(pid), failed=True))
        result.patients.sort(key=lambda p: p.id)
        return result


def resolve_device(device: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def labelled(result: CohortPrediction) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids, labels and probabilities of the patients that were predicted and carry a label."""
    rows = [p for p in result.patients if not p.failed and p.label is not None]
    if not rows:
        return [], np.empty(0), np.empty((0, 1))
    y = np.array([p.label for p in rows], dtype=float)
    return [p.id for p in rows], y, np.array([p.probabilities for p in rows], dtype=float)
