"""Every figure of the project, drawn with matplotlib's Agg backend (no display needed).

Each function draws one figure, saves it as PNG at `path` and returns `path`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay, roc_curve  # noqa: E402

from radiogenomics.evaluation.bootstrap import ConfidenceInterval  # noqa: E402

_VIEWS = (("axial", 2), ("coronal", 1), ("sagittal", 0))
"""Panel name and the RAS axis it cuts across."""


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_roc(
    y: np.ndarray, p: np.ndarray, path: str | Path, auc: ConfidenceInterval | None = None,
    title: str = "ROC curve",
) -> Path:
    """ROC curve of binary labels `y` and scores `p`; the AUC and its CI in the legend."""
    figure, ax = plt.subplots(figsize=(4.5, 4.5))
    name = None
    if auc is not None:
        name = f"AUC {auc.estimate:.3f} (95% CI {auc.low:.3f}-{auc.high:.3f})"
    false_positive, true_positive, _ = roc_curve(y, p)
    RocCurveDisplay(fpr=false_positive, tpr=true_positive).plot(ax=ax, name=name,
                                                                 plot_chance_level=True)
    ax.set_title(title)
    return _save(figure, path)


def plot_confusion(
    y: np.ndarray, predicted: np.ndarray, path: str | Path, class_names: Sequence[str],
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix of true classes `y` against predicted classes."""
    figure, ax = plt.subplots(figsize=(4.5, 4.5))
    ConfusionMatrixDisplay.from_predictions(
        y, predicted, labels=list(range(len(class_names))), display_labels=list(class_names),
        ax=ax, colorbar=False, cmap="Blues",
    )
    ax.set_title(title)
    return _save(figure, path)


def plot_calibration(
    y: np.ndarray, p: np.ndarray, path: str | Path, n_bins: int = 10,
    title: str = "Calibration", ece: ConfidenceInterval | None = None,
) -> Path:
    """Reliability diagram (observed positive fraction against mean predicted probability in
    `n_bins` equal-width bins; the ECE and its CI in the legend) above a histogram of the
    predictions of each class."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    figure, (curve, counts) = plt.subplots(2, 1, figsize=(4.5, 5.8), sharex=True,
                                           gridspec_kw={"height_ratios": [3, 1]})
    name = "model" if ece is None else (f"model (ECE {ece.estimate:.3f}, 95% CI "
                                        f"{ece.low:.3f}-{ece.high:.3f})")
    CalibrationDisplay.from_predictions(y, p, n_bins=n_bins, ax=curve, name=name)
    curve.legend(loc="upper left", fontsize="small")
    curve.set_xlabel("")
    curve.set_ylabel("observed positive fraction")
    curve.set_title(title)
    counts.hist([p[y == 0], p[y == 1]], bins=np.linspace(0, 1, n_bins + 1), stacked=True,
                color=["tab:blue", "tab:orange"], label=["negative", "positive"],
                edgecolor="white")
    counts.set_xlabel("predicted probability")
    counts.set_ylabel("patients")
    counts.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return _save(figure, path)


def plot_scores(
    scores: dict[str, Sequence[float]], path: str | Path, title: str = "Segmentation scores",
) -> Path:
    """Box plot of per-patient scores (e.g. Dice of each region), one box per score."""
    figure, ax = plt.subplots(figsize=(1.2 * max(len(scores), 3) + 1, 4))
    ax.boxplot([np.asarray(v, dtype=float) for v in scores.values()])
    ax.set_xticks(range(1, len(scores) + 1), list(scores), rotation=20, ha="right")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    return _save(figure, path)


def plot_overlay(
    image: np.ndarray, heatmap: np.ndarray, path: str | Path, title: str = "",
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> Path:
    """Axial, coronal and sagittal slices of a RAS `image` through the `heatmap`'s peak.

    `image` and `heatmap` are (X, Y, Z) arrays on the same grid of voxel `spacing` (mm);
    the map is drawn in colour, half transparent, over the grey image. A flat map is cut
    through the centre.
    """
    if image.shape != heatmap.shape:
        raise ValueError(f"image {image.shape} and map {heatmap.shape} differ in shape")
    flat = float(heatmap.max()) == float(heatmap.min())
    peak = tuple(n // 2 for n in heatmap.shape) if flat else np.unravel_index(
        int(np.argmax(heatmap)), heatmap.shape)
    figure, axes = plt.subplots(1, len(_VIEWS), figsize=(4 * len(_VIEWS), 4))
    for ax, (view, axis) in zip(axes, _VIEWS):
        cut = [slice(None)] * 3
        cut[axis] = peak[axis]
        across, up = (a for a in range(3) if a != axis)
        aspect = spacing[up] / spacing[across]
        ax.imshow(image[tuple(cut)].T, cmap="gray", origin="lower", aspect=aspect)
        ax.imshow(heatmap[tuple(cut)].T, cmap="jet", alpha=0.4, origin="lower", aspect=aspect,
                  vmin=float(heatmap.min()), vmax=float(heatmap.max()))
        ax.set_title(f"{view} slice {peak[axis]}")
        ax.axis("off")
    figure.suptitle(title)
    return _save(figure, path)


def plot_cv_summary(
    fold_values: dict[str, Sequence[float]], metric: str,
    pooled: dict[str, tuple[np.ndarray, np.ndarray, ConfidenceInterval]], path: str | Path,
    title: str = "Cross-validation",
) -> Path:
    """K-fold results: `metric` of each fold with mean ± SD (left), pooled out-of-fold ROC (right).

    Both take one entry per configuration of the sweep (a group of folds); `pooled` holds the
    labels, scores and AUC interval of the group's out-of-fold predictions.
    """
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4.5))
    for x, values in enumerate(fold_values.values()):
        values = np.asarray(values, dtype=float)
        left.scatter(np.full(values.size, x), values, color="tab:blue", alpha=0.6,
                     label="fold" if x == 0 else None)
        left.errorbar(x + 0.15, values.mean(), yerr=values.std(ddof=1) if values.size > 1 else 0,
                      fmt="o", color="black", capsize=4, label="mean ± SD" if x == 0 else None)
    left.set_xticks(range(len(fold_values)), list(fold_values), rotation=20, ha="right")
    left.set_xlim(-0.5, len(fold_values) - 0.5)
    left.set_ylabel(metric)
    left.set_title(f"{metric} by fold")
    if fold_values:
        left.legend(loc="lower right")
    for group, (y, p, auc) in pooled.items():
        false_positive, true_positive, _ = roc_curve(y, p)
        right.plot(false_positive, true_positive,
                   label=f"{group}: AUC {auc.estimate:.3f} ({auc.low:.3f}-{auc.high:.3f})")
    right.plot([0, 1], [0, 1], linestyle="--", color="grey")
    right.set_xlabel("false positive rate")
    right.set_ylabel("true positive rate")
    if pooled:
        right.legend(loc="lower right")
    right.set_title("pooled out-of-fold ROC (95% bootstrap CI)")
    if not pooled:
        right.text(0.5, 0.5, "no out-of-fold predictions\nwith both classes", ha="center")
    figure.suptitle(title)
    return _save(figure, path)


def plot_sweep_comparison(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], final: dict[str, float],
    metric: str, curve_metric: str, path: str | Path, settings: dict[str, str] | None = None,
    title: str = "Sweep",
) -> Path:
    """The runs of a sweep: `curve_metric` by epoch (left) and final `metric` (right), by run.

    `settings` (run -> what the sweep set for it) labels the runs in the legend.
    """
    settings = settings or {}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for run, (epochs, values) in curves.items():
        left.plot(epochs, values, marker="o", label=f"{run}: {settings.get(run, '')}".rstrip(": "))
    left.set_xlabel("epoch")
    left.set_ylabel(curve_metric)
    left.set_title(f"{curve_metric} by epoch")
    ranked = sorted(final.items(), key=lambda item: item[1])
    right.barh(range(len(ranked)), [value for _, value in ranked], color="tab:blue",
               tick_label=[run for run, _ in ranked])
    right.set_xlabel(metric)
    right.set_ylabel("run")
    right.set_title(f"final {metric}")
    if curves:
        figure.legend(loc="lower center", ncol=1, fontsize="small", bbox_to_anchor=(0.5, -0.02 -
                      0.05 * len(curves)))
    figure.suptitle(title)
    return _save(figure, path)
