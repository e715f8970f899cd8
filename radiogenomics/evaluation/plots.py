"""Every figure of the project, drawn with matplotlib's Agg backend (no display needed);
those drawn over a scan (maps, masks) are in `radiogenomics.evaluation.overlays`.

Each `plot_*` function draws one figure, saves it as PNG at `path` and returns `path`; a
`draw_*` function of the same name returns the open Figure instead, for a caller (or a test)
that reads or changes it before saving.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import confusion_matrix, roc_curve  # noqa: E402

from radiogenomics.evaluation.bootstrap import ConfidenceInterval  # noqa: E402


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write `figure` as a PNG at `path` (folders made), close it and return `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def value_limits(values: Sequence[float], margin: float = 0.15) -> tuple[float, float]:
    """Axis limits that span `values` (error bar ends included) plus `margin` of their range,
    so that close values differ visibly; within [0, 1] when the values are."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = max((high - low) * margin, 0.01)
    if low >= 0 and high <= 1:
        return max(low - pad, 0.0), min(high + pad, 1.0)
    return low - pad, high + pad


def draw_roc(
    y: np.ndarray, p: np.ndarray, auc: ConfidenceInterval | None = None,
    title: str = "ROC curve", *, threshold: float = 0.5, positive: str = "positive",
) -> Figure:
    """The figure of `plot_roc`."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    figure, ax = plt.subplots(figsize=(5, 5.2))
    false_positive, true_positive, _ = roc_curve(y, p)
    name = "model" if auc is None else (f"AUC {auc.estimate:.3f} "
                                        f"(95% CI {auc.low:.3f}-{auc.high:.3f})")
    ax.plot(false_positive, true_positive, color="tab:blue", linewidth=2, label=name)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance (AUC 0.5)")
    decided = p >= threshold
    found, positives = int(decided[y == 1].sum()), int((y == 1).sum())
    rejected, negatives = int((~decided)[y == 0].sum()), int((y == 0).sum())
    sensitivity, specificity = found / positives, rejected / negatives
    ax.plot(1 - specificity, sensitivity, "o", markersize=9, color="tab:red",
            markeredgecolor="black",
            label=f"threshold {threshold:.2f}: sensitivity {sensitivity:.2f} "
                  f"({found}/{positives}),\nspecificity {specificity:.2f} "
                  f"({rejected}/{negatives})")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    ax.set_title(f"{title}\nn = {y.size} patients, {positives} {positive}")
    ax.legend(loc="lower right", fontsize="small")
    return figure


def plot_roc(
    y: np.ndarray, p: np.ndarray, path: str | Path, auc: ConfidenceInterval | None = None,
    title: str = "ROC curve", *, threshold: float = 0.5, positive: str = "positive",
) -> Path:
    """ROC curve of binary labels `y` (both classes) and scores `p`: n and the number of
    `positive` patients in the title, the AUC and its CI in the legend, and the operating point
    of the decisions ``p >= threshold`` marked with its sensitivity and specificity."""
    return save_figure(draw_roc(y, p, auc, title, threshold=threshold, positive=positive), path)


def draw_confusion(
    y: np.ndarray, predicted: np.ndarray, class_names: Sequence[str],
    title: str = "Confusion matrix",
) -> Figure:
    """The figure of `plot_confusion`."""
    classes = len(class_names)
    counts = confusion_matrix(y, predicted, labels=list(range(classes)))
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = 1.3 * classes + 2.4
    figure, ax = plt.subplots(figsize=(side, side))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for true, guess in np.ndindex(counts.shape):
        share = f"{100 * shares[true, guess]:.0f}%" if totals[true, 0] else "-"
        ax.text(guess, true, f"{counts[true, guess]}\n{share}", ha="center", va="center",
                fontsize="large", color="white" if shares[true, guess] > 0.5 else "black")
    ax.set_xticks(range(classes), list(class_names), rotation=20 if classes > 2 else 0)
    ax.set_yticks(range(classes), list(class_names), rotation=90 if classes == 2 else 0,
                  va="center")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\nn = {int(counts.sum())}; cells: patients and % of the true class",
                 fontsize="medium")
    return figure


def plot_confusion(
    y: np.ndarray, predicted: np.ndarray, path: str | Path, class_names: Sequence[str],
    title: str = "Confusion matrix",
) -> Path:
    """Confusion matrix of true classes `y` (rows) against predicted classes (columns), named
    by `class_names` in label order: each cell holds its patients and their percentage of the
    row (the true class), and is shaded by that percentage."""
    return save_figure(draw_confusion(y, predicted, class_names, title), path)


def plot_calibration(
    y: np.ndarray, p: np.ndarray, path: str | Path, n_bins: int = 10,
    title: str = "Calibration", ece: ConfidenceInterval | None = None,
    class_names: Sequence[str] = ("negative", "positive"),
) -> Path:
    """Reliability diagram (observed positive fraction against mean predicted probability in
    `n_bins` equal-width bins; the ECE and its CI in the legend) above a histogram of the
    predictions of each class (named by `class_names`, negative first)."""
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
                color=["tab:blue", "tab:orange"], label=list(class_names),
                edgecolor="white")
    counts.set_xlabel("predicted probability")
    counts.set_ylabel("patients")
    counts.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    return save_figure(figure, path)


def plot_scores(
    scores: dict[str, Sequence[float]], path: str | Path, title: str = "Segmentation scores",
) -> Path:
    """Box plot of per-patient scores (e.g. Dice of each region), one box per score."""
    figure, ax = plt.subplots(figsize=(1.2 * max(len(scores), 3) + 1, 4))
    ax.boxplot([np.asarray(v, dtype=float) for v in scores.values()])
    ax.set_xticks(range(1, len(scores) + 1), list(scores), rotation=20, ha="right")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title(title)
    return save_figure(figure, path)


def draw_cv_summary(
    fold_values: dict[str, Sequence[float]], metric: str,
    pooled: dict[str, tuple[np.ndarray, np.ndarray, ConfidenceInterval]],
    title: str = "Cross-validation",
) -> Figure:
    """The figure of `plot_cv_summary`."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8))
    drawn: list[float] = []
    for x, values in enumerate(fold_values.values()):
        values = np.asarray(values, dtype=float)
        if not values.size:
            continue
        mean, sd = values.mean(), values.std(ddof=1) if values.size > 1 else 0.0
        left.scatter(np.full(values.size, x), values, color="tab:blue", alpha=0.6,
                     label=None if drawn else "fold")
        left.errorbar(x + 0.15, mean, yerr=sd, fmt="o", color="black", capsize=4,
                      label=None if drawn else "mean ± SD")
        left.annotate(f"{mean:.3f} ± {sd:.3f}", (x + 0.22, mean), va="center",
                      fontsize="small")
        drawn += [*values, mean - sd, mean + sd]
    left.set_xticks(range(len(fold_values)), list(fold_values), rotation=20, ha="right")
    left.set_xlim(-0.5, len(fold_values) - 0.5 + 0.4)
    left.set_ylim(*value_limits(drawn))
    left.grid(axis="y", alpha=0.3)
    left.set_ylabel(metric)
    left.set_title(f"{metric} by fold")
    if drawn:
        left.legend(loc="best", fontsize="small")
    for group, (y, p, auc) in pooled.items():
        false_positive, true_positive, _ = roc_curve(y, p)
        right.plot(false_positive, true_positive,
                   label=f"{group}: AUC {auc.estimate:.3f} ({auc.low:.3f}-{auc.high:.3f}),\n"
                         f"n = {len(y)}, {int(np.sum(y))} positive")
    right.set_title("pooled out-of-fold ROC (95% bootstrap CI)")
    if pooled:
        right.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
        right.set_xlabel("1 - specificity (false positive rate)")
        right.set_ylabel("sensitivity (true positive rate)")
        right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize="small")
    else:
        right.axis("off")
        right.text(0.5, 0.5, "no out-of-fold predictions\nwith both classes", ha="center",
                   va="center")
    figure.suptitle(title)
    return figure


def plot_cv_summary(
    fold_values: dict[str, Sequence[float]], metric: str,
    pooled: dict[str, tuple[np.ndarray, np.ndarray, ConfidenceInterval]], path: str | Path,
    title: str = "Cross-validation",
) -> Path:
    """K-fold results: `metric` of each fold with mean ± SD (left; the axis spans the values,
    not 0-1), pooled out-of-fold ROC (right).

    Both take one entry per configuration of the sweep (a group of folds); `pooled` holds the
    labels, scores and AUC interval of the group's out-of-fold predictions.
    """
    return save_figure(draw_cv_summary(fold_values, metric, pooled, title), path)


def draw_sweep_comparison(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], final: dict[str, float],
    metric: str, curve_metric: str, settings: dict[str, str] | None = None,
    title: str = "Sweep",
) -> Figure:
    """The figure of `plot_sweep_comparison`."""
    settings = settings or {}
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = {}
    for run, (epochs, values) in curves.items():
        (line,) = left.plot(epochs, values, marker="o",
                            label=f"{run}: {settings.get(run, '')}".rstrip(": "))
        colours[run] = line.get_color()
    left.set_xlabel("epoch")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_ylabel(curve_metric)
    left.set_title(f"{curve_metric} by epoch")
    left.grid(alpha=0.3)
    ranked = sorted(final.items(), key=lambda item: item[1])
    values = [value for _, value in ranked]
    low, high = value_limits(values)
    dots = [colours.get(run, "tab:blue") for run, _ in ranked]  # each run's curve colour
    right.hlines(range(len(ranked)), low, values, color=dots, alpha=0.4)
    right.scatter(values, range(len(ranked)), color=dots, zorder=3)
    for row, value in enumerate(values):
        right.annotate(f"{value:.3f}", (value, row), xytext=(6, 0), textcoords="offset points",
                       va="center", fontsize="small")
    right.set_yticks(range(len(ranked)), [run for run, _ in ranked])
    right.set_ylim(-0.6, len(ranked) - 0.4)
    right.set_xlim(low, high + (high - low) * 0.12)  # room for the value labels
    right.grid(axis="x", alpha=0.3)
    right.set_xlabel(metric)
    right.set_ylabel("run")
    right.set_title(f"final {metric}")
    if curves:
        figure.legend(loc="upper center", ncol=1, fontsize="small", bbox_to_anchor=(0.5, 0.0))
    figure.suptitle(title)
    return figure


def plot_sweep_comparison(
    curves: dict[str, tuple[Sequence[float], Sequence[float]]], final: dict[str, float],
    metric: str, curve_metric: str, path: str | Path, settings: dict[str, str] | None = None,
    title: str = "Sweep",
) -> Path:
    """The runs of a sweep: `curve_metric` by epoch (left) and final `metric` (right, best on
    top, on an axis that spans the values, not 0-1), by run.

    `settings` (run -> what the sweep set for it) labels the runs in the legend.
    """
    return save_figure(draw_sweep_comparison(curves, final, metric, curve_metric, settings, title),
                 path)


def draw_input_samples(
    images: np.ndarray, sequences: Sequence[str], names: Sequence[str] = (),
    slices: int = 3, title: str = "Input samples",
) -> Figure:
    """The figure of `plot_input_samples`."""
    images = np.asarray(images, dtype=float)
    if images.ndim not in (4, 5) or images.shape[1] != len(sequences):
        raise ValueError(f"images of shape {images.shape} are not (B, C, X, Y[, Z]) with one "
                         f"channel per sequence of {list(sequences)}")
    if images.ndim == 4:  # 2D inputs: one slice each
        images, slices = images[..., None], 1
    depth = images.shape[-1]
    cuts = sorted({int(round(f * (depth - 1))) for f in np.linspace(0.25, 0.75, slices)}) \
        if slices > 1 else [depth // 2]
    rows, columns = images.shape[0], len(sequences) * len(cuts)
    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.0 * rows + 0.4),
                                squeeze=False, layout="constrained")
    for row, sample in enumerate(images):
        for channel, sequence in enumerate(sequences):
            low, high = np.percentile(sample[channel], [1, 99])
            for k, cut in enumerate(cuts):
                ax = axes[row, channel * len(cuts) + k]
                # RAS axial slice, radiological convention: the patient's left on the right
                ax.imshow(np.flip(sample[channel, :, :, cut], axis=0).T, cmap="gray",
                          origin="lower", vmin=low, vmax=high if high > low else low + 1)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"{sequence}, z {cut + 1}/{depth}" if depth > 1 else sequence,
                                 fontsize="small")
            if channel == 0:
                axes[row, 0].set_ylabel(names[row] if row < len(names) else f"sample {row}",
                                        fontsize="small")
    figure.suptitle(title)
    return figure


def plot_input_samples(
    images: np.ndarray, sequences: Sequence[str], path: str | Path, names: Sequence[str] = (),
    slices: int = 3, title: str = "Input samples",
) -> Path:
    """What the network is fed: `slices` axial slices (a quarter, half and three quarters
    deep) of each sequence (columns) of each sample (rows, named by `names`) of a
    (B, C, X, Y, Z) batch in RAS, or the one slice of a (B, C, X, Y) batch of 2D inputs;
    each image windowed on its own 1st-99th percentiles."""
    return save_figure(draw_input_samples(images, sequences, names, slices, title), path)
