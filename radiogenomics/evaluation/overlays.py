"""Figures drawn over a scan: a model's map (Grad-CAM, attention) and tumour masks.

Every array is an (X, Y, Z) volume in RAS+ voxel order (as `radiogenomics.data.readers`
reads scans) on one grid of voxel `spacing` (mm). Slices are shown in the radiological
convention, as a reading room would: the patient's left on the image's right (axial,
coronal), anterior on the left (sagittal), superior and anterior up; letters at the
edges say so. As in `radiogenomics.evaluation.plots`, `plot_*` saves a PNG and returns its
path, `draw_*` returns the open Figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colors
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from radiogenomics.evaluation.plots import plt, save_figure

VIEWS: tuple[tuple[str, int], ...] = (("axial", 2), ("coronal", 1), ("sagittal", 0))
"""Panel name and the RAS axis it cuts across."""

_EDGES = {  # view -> letters at the (left, right, bottom, top) edges of the panel
    "axial": ("R", "L", "P", "A"),
    "coronal": ("R", "L", "I", "S"),
    "sagittal": ("A", "P", "I", "S"),
}

MAP_COLORMAP = "inferno"
"""Perceptually uniform, readable in grey and by colour-blind readers (unlike 'jet')."""

REGION_COLOURS: dict[str, str] = {"NCR": "#e41a1c", "ED": "#4daf4a", "ET": "#ffd92f"}
"""Colour of each internal label 1, 2, 3 (necrosis, oedema, enhancing tumour)."""


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Voxels brighter than 5% of the way from the scan's minimum to its 99th percentile:
    the head, not the air around it."""
    low, high = float(image.min()), float(np.percentile(image, 99))
    return image > low + 0.05 * (high - low)


def _central_sections(mask: np.ndarray) -> tuple[int, int, int]:
    """For each axis, the slice across it through the centre of mass of `mask`, or, when
    that one misses the mask (a crescent), the slice holding most of its voxels."""
    point = []
    for axis in range(3):
        area = mask.sum(axis=tuple(a for a in range(3) if a != axis))
        centre = int(round(float(np.average(np.arange(area.size), weights=area))))
        point.append(centre if area[centre] else int(np.argmax(area)))
    return tuple(point)


def focus_point(image: np.ndarray, heatmap: np.ndarray | None = None,
                tumour: np.ndarray | None = None) -> tuple[int, int, int]:
    """The voxel the three slices go through, so that none shows only background.

    With a non-empty `tumour` mask: on each axis the slice through the tumour's centre (each
    view cuts through the tumour). Otherwise the peak of `heatmap` inside the brain, or,
    without one, the slices through the brain's centre.
    """
    if tumour is not None and tumour.any():
        return _central_sections(tumour)
    brain = brain_mask(image)
    if heatmap is not None and np.any(heatmap[brain] > 0):
        inside = np.where(brain, heatmap, -np.inf)
        return _central_sections(inside >= inside.max())  # a plateau: through its centre
    return _central_sections(brain if brain.any() else np.ones(image.shape, dtype=bool))


def _section(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The slice as `imshow(origin='lower')` draws it in the radiological convention."""
    cut = [slice(None)] * 3
    cut[axis] = index
    plane = volume[tuple(cut)]  # (across, up): x or y across, y or z up
    return np.flip(plane, axis=0).T  # the patient's right, or anterior, on the left


def _aspect(spacing: Sequence[float], axis: int) -> float:
    across, up = (a for a in range(3) if a != axis)
    return float(spacing[up]) / float(spacing[across])


def _label_edges(ax: Axes, view: str) -> None:
    left, right, bottom, top = _EDGES[view]
    style = {"transform": ax.transAxes, "color": "white", "fontsize": "large",
             "fontweight": "bold", "ha": "center", "va": "center"}
    ax.text(0.04, 0.5, left, **style)
    ax.text(0.96, 0.5, right, **style)
    ax.text(0.5, 0.04, bottom, **style)
    ax.text(0.5, 0.96, top, **style)


def _grey(ax: Axes, image: np.ndarray, view: str, axis: int, index: int,
          spacing: Sequence[float], window: tuple[float, float]) -> None:
    ax.imshow(_section(image, axis, index), cmap="gray", origin="lower",
              aspect=_aspect(spacing, axis), vmin=window[0], vmax=window[1],
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("black")
    _label_edges(ax, view)


def _window(image: np.ndarray) -> tuple[float, float]:
    """Grey levels from the 1st to the 99.5th percentile of the brain's voxels."""
    brain = image[brain_mask(image)]
    values = brain if brain.size else image.ravel()
    low, high = (float(v) for v in np.percentile(values, [1, 99.5]))
    return low, high if high > low else low + 1.0


def draw_map_overlay(
    image: np.ndarray, heatmap: np.ndarray, *, spacing: Sequence[float] = (1.0, 1.0, 1.0),
    tumour: np.ndarray | None = None, title: str = "", name: str = "Grad-CAM",
    threshold: float = 0.3,
) -> Figure:
    """The figure of `plot_map_overlay`."""
    if image.shape != heatmap.shape:
        raise ValueError(f"image {image.shape} and map {heatmap.shape} differ in shape")
    if tumour is not None and tumour.shape != image.shape:
        raise ValueError(f"image {image.shape} and tumour mask {tumour.shape} differ in shape")
    point = focus_point(image, heatmap, tumour)
    peak = float(heatmap.max())
    norm = colors.Normalize(vmin=threshold * peak if peak > 0 else 0.0,
                            vmax=peak if peak > 0 else 1.0)
    window = _window(image)
    figure, axes = plt.subplots(1, len(VIEWS), figsize=(4.2 * len(VIEWS) + 1, 4.6),
                                layout="constrained")
    for ax, (view, axis) in zip(axes, VIEWS):
        _grey(ax, image, view, axis, point[axis], spacing, window)
        section = _section(heatmap, axis, point[axis])
        shown = np.ma.masked_less(section, norm.vmin) if peak > 0 else np.ma.masked_all(
            section.shape)
        layer = ax.imshow(shown, cmap=MAP_COLORMAP, norm=norm, alpha=0.65, origin="lower",
                          aspect=_aspect(spacing, axis), interpolation="bilinear")
        if tumour is not None and tumour.any():
            ax.contour(_section(tumour.astype(float), axis, point[axis]), levels=[0.5],
                       colors="cyan", linewidths=1.0, origin="lower")
        ax.set_title(f"{view}, slice {point[axis] + 1}/{image.shape[axis]}")
    bar = figure.colorbar(layer, ax=list(axes), shrink=0.85, pad=0.01)
    bar.set_label(f"{name} (shown from {threshold:.0%} of its peak)")
    if tumour is not None and tumour.any():
        axes[0].legend(handles=[Patch(edgecolor="cyan", facecolor="none", label="tumour mask")],
                       loc="lower left", fontsize="small", framealpha=0.6)
    figure.suptitle(title)
    return figure


def plot_map_overlay(
    image: np.ndarray, heatmap: np.ndarray, path: str | Path, *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0), tumour: np.ndarray | None = None,
    title: str = "", name: str = "Grad-CAM", threshold: float = 0.3,
) -> Path:
    """Axial, coronal and sagittal slices of a scan with a model's map over them.

    The slices cut through the `tumour` mask when there is one, else through the map's peak
    inside the brain (`focus_point`). The map, on the scan's own grid, is drawn in a
    perceptual colormap where it reaches `threshold` of its peak (transparent below), with
    a colorbar; the tumour's outline in cyan.
    """
    return save_figure(draw_map_overlay(image, heatmap, spacing=spacing, tumour=tumour,
                                        title=title, name=name, threshold=threshold), path)


_LABEL_MAP = colors.ListedColormap(list(REGION_COLOURS.values()))
_LABEL_NORM = colors.BoundaryNorm([0.5, 1.5, 2.5, 3.5], _LABEL_MAP.N)


def draw_segmentation_overlay(
    image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0), title: str = "",
) -> Figure:
    """The figure of `plot_segmentation_overlay`."""
    if not image.shape == truth.shape == prediction.shape:
        raise ValueError(f"image {image.shape}, truth {truth.shape} and prediction "
                         f"{prediction.shape} differ in shape")
    tumour = truth > 0 if np.any(truth > 0) else prediction > 0
    point = focus_point(image, tumour=tumour)
    window = _window(image)
    columns = (("image", None), ("ground truth", truth), ("prediction", prediction))
    figure, axes = plt.subplots(len(VIEWS), len(columns), figsize=(3.3 * len(columns) + 0.4,
                                                                   3.3 * len(VIEWS)),
                                layout="constrained", squeeze=False)
    for row, (view, axis) in enumerate(VIEWS):
        for column, (name, labels) in enumerate(columns):
            ax = axes[row, column]
            _grey(ax, image, view, axis, point[axis], spacing, window)
            if labels is not None:
                ax.imshow(np.ma.masked_equal(_section(labels, axis, point[axis]), 0),
                          cmap=_LABEL_MAP, norm=_LABEL_NORM, alpha=0.6, origin="lower",
                          aspect=_aspect(spacing, axis), interpolation="nearest")
            if row == 0:
                ax.set_title(name)
            if column == 0:
                ax.set_ylabel(f"{view} {point[axis] + 1}/{image.shape[axis]}")
    names = {"NCR": "NCR (necrotic core)", "ED": "ED (oedema)", "ET": "ET (enhancing)"}
    figure.legend(handles=[Patch(color=colour, label=names[region])
                           for region, colour in REGION_COLOURS.items()],
                  loc="lower center", ncol=3, bbox_to_anchor=(0.5, -0.03), fontsize="small")
    figure.suptitle(title)
    return figure


def plot_segmentation_overlay(
    image: np.ndarray, truth: np.ndarray, prediction: np.ndarray, path: str | Path, *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0), title: str = "",
) -> Path:
    """Scan, ground truth and prediction side by side (columns) in three views (rows).

    `truth` and `prediction` hold internal labels (0 background, 1 NCR, 2 ED, 3 ET), each
    drawn in its colour of `REGION_COLOURS`, with a legend; the slices cut through the true
    tumour (through the predicted one when the truth is empty).
    """
    return save_figure(draw_segmentation_overlay(image, truth, prediction, spacing=spacing,
                                                 title=title), path)
