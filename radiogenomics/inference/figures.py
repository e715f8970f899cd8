"""Figures of one patient over its own scan: a classifier's map, a segmenter's masks.

The scan is the model's first sequence as `radiogenomics.data.readers.load_volume` reads it
(RAS+, its own full resolution, before any resampling or resizing); a map computed on the
network's input is brought onto it by inverting the preprocessing
(`CasePreprocessor.to_input_geometry`, as for the NIfTI maps and masks).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiogenomics.data.case import Case
from radiogenomics.data.labels import to_internal
from radiogenomics.data.readers import load_volume
from radiogenomics.data.volume import Volume
from radiogenomics.errors import DataError
from radiogenomics.evaluation.overlays import plot_map_overlay, plot_segmentation_overlay
from radiogenomics.evaluation.report import class_names
from radiogenomics.inference.masks import truth_on_grid
from radiogenomics.inference.preprocess import CasePreprocessor

log = logging.getLogger(__name__)

MAP_NAMES = {"gradcam": "Grad-CAM", "attention": "attention"}
"""How a figure names the map of each explainer."""


@dataclass
class MapView:
    """What a map overlay shows: the scan, the map and the tumour mask on one grid."""

    scan: Volume
    heatmap: np.ndarray
    """The map on the scan's grid, 0 where the network saw nothing (cropped background)."""
    tumour: np.ndarray | None
    """The case's own tumour mask (any label) on the scan's grid, None when it has none."""


def reference_scan(case: Case, preprocessor: CasePreprocessor) -> Volume:
    """The case's first model sequence at its own resolution, in RAS+."""
    sequence = preprocessor.reference
    return load_volume(case["images"][sequence], patient=case["id"])


def map_view(case: Case, heatmap: np.ndarray, preprocessor: CasePreprocessor) -> MapView:
    """A map already brought onto the input's grid (`CasePreprocessor.to_input_geometry`),
    over the case's scan, with the case's tumour mask when it has one (and it can be read:
    an unreadable mask is a warning, not a failed patient)."""
    scan = reference_scan(case, preprocessor)
    if heatmap.shape != scan.array.shape:
        raise ValueError(f"map {heatmap.shape} does not lie on the scan {scan.array.shape}")
    tumour = None
    if case.get("seg"):
        try:
            tumour = truth_on_grid(case, scan) > 0
        except DataError as err:  # the prediction stands; only the figure loses the outline
            log.warning("patient %s: tumour mask not drawn on the map: %s", case["id"], err)
    return MapView(scan, heatmap, tumour)


def prediction_title(case_id: str, target: str, probabilities: np.ndarray,
                     label: float | None = None, threshold: float = 0.5) -> str:
    """``patient 00012: predicted methylated, P(methylated) = 0.73 (true: methylated)``."""
    probabilities = np.asarray(probabilities, dtype=float).ravel()
    if probabilities.size == 1:
        names = class_names(target, 2)
        chosen = int(probabilities[0] >= threshold)
        shown = f"P({names[1]}) = {probabilities[0]:.2f}"
    else:
        names = class_names(target, probabilities.size)
        chosen = int(np.argmax(probabilities))
        shown = f"P({names[chosen]}) = {probabilities[chosen]:.2f}"
    title = f"patient {case_id}: predicted {names[chosen]}, {shown}"
    if label is not None and np.isfinite(label):
        title += f" (true: {names[int(label)]})"
    return title


def write_map_figure(view: MapView, path: Path, explainer: str, title: str) -> Path:
    """The three-view overlay of a MapView (see `evaluation.overlays.plot_map_overlay`)."""
    name = MAP_NAMES.get(explainer, explainer)
    return plot_map_overlay(view.scan.array, view.heatmap, path, spacing=view.scan.spacing,
                            tumour=view.tumour, title=f"{title}\n{name} map", name=name)


RANKS: tuple[str, ...] = ("best", "median", "worst")


def ranked_cases(dice: dict[str, float]) -> dict[str, str]:
    """The patient of best, median (the lower one of an even count) and worst `dice`
    (id -> whole-tumour Dice), ties broken by id; fewer entries for fewer patients."""
    order = sorted(dice, key=lambda pid: (-dice[pid], pid))
    if not order:
        return {}
    picks = {"best": order[0], "median": order[(len(order) - 1) // 2], "worst": order[-1]}
    chosen: dict[str, str] = {}
    for rank in RANKS:
        if picks[rank] not in chosen.values():
            chosen[rank] = picks[rank]
    return chosen


def write_segmentation_figure(case: Case, mask: Path, preprocessor: CasePreprocessor,
                              path: Path, title: str, truth: np.ndarray | None = None) -> Path:
    """Scan, the case's own mask and the predicted `mask` (a written NIfTI) side by side;
    `truth` (internal codes on the scan's voxels) when the case's mask is not in the scan's
    world (registered cases: `masks.truth_on_series`)."""
    scan = reference_scan(case, preprocessor)
    written = load_volume(mask, patient=case["id"])
    scheme = case.get("label_scheme") or "brats2021"
    predicted = to_internal(np.rint(written.array).astype(np.int64), scheme, patient=case["id"])
    if truth is None:
        truth = truth_on_grid(case, scan)
    return plot_segmentation_overlay(scan.array, truth, predicted, path, spacing=scan.spacing,
                                     title=title)
