"""Evaluation of patient-level predictions against labels: metrics, figures, a Markdown page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.image import imread
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from radiogenomics.data.case import CLASS_NAMES
from radiogenomics.evaluation import plots
from radiogenomics.evaluation.bootstrap import ConfidenceInterval
from radiogenomics.evaluation.statistics import ECE_BINS, binary_statistics, delong_test


@dataclass
class EvaluationReport:
    """Metrics, the figures drawn (name -> PNG) and the Markdown summary of one evaluation."""

    metrics: dict[str, float]
    figures: dict[str, Path] = field(default_factory=dict)
    markdown: Path | None = None


@dataclass(frozen=True)
class ModelComparison:
    """A second model's predictions of the report's patients, for DeLong's paired test."""

    name: str
    probabilities: np.ndarray
    """(N,): its positive-class probability of each patient of the report; NaN where it has
    none (a patient it could not read)."""


def classification_metrics(
    y: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5,
    n_bootstrap: int = 1000, seed: int = 0,
) -> dict[str, float]:
    """AUC, accuracy and F1 of patient predictions; for a binary target with both classes also
    the AUC's bootstrap and DeLong 95% CIs and p-value against chance, the Brier score and the
    ECE with their bootstrap CIs (`statistics.BinaryStatistics.metrics` names them).

    `probabilities` is (N, 1) for a binary target (positive class) or (N, K) for K classes;
    binary decisions use `threshold`, multiclass ones the most probable class (macro F1 and
    one-vs-rest macro AUC). The AUC is NaN when the labels hold a single class.
    """
    y = np.asarray(y).astype(int)
    probabilities = np.asarray(probabilities, dtype=float)
    metrics: dict[str, float] = {"n": float(y.size)}
    if probabilities.shape[1] == 1:
        p = probabilities[:, 0]
        predicted = (p >= threshold).astype(int)
        metrics["n_positive"] = float(y.sum())
        if len(np.unique(y)) == 2:
            metrics.update(binary_statistics(y, p, n_bootstrap, seed).metrics())
        else:
            metrics["auc"] = float("nan")
        metrics["f1"] = float(f1_score(y, predicted, zero_division=0.0))
    else:
        classes = list(range(probabilities.shape[1]))
        predicted = probabilities.argmax(axis=1)
        present = set(np.unique(y)) == set(classes)
        metrics["auc"] = float(roc_auc_score(y, probabilities, multi_class="ovr",
                                             labels=classes)) if present else float("nan")
        metrics["f1"] = float(f1_score(y, predicted, labels=classes, average="macro",
                                       zero_division=0.0))
    metrics["accuracy"] = float(accuracy_score(y, predicted))
    return metrics


def comparison_metrics(y: np.ndarray, p: np.ndarray, other: ModelComparison) -> dict[str, float]:
    """DeLong's paired test of the AUC of `p` against `other`'s, on the patients both predicted
    (``delong_*``); empty when those lack two patients of each class."""
    both = np.isfinite(other.probabilities)
    try:
        test = delong_test(y[both], p[both], other.probabilities[both])
    except ValueError:
        return {}
    return {"delong_n": float(both.sum()), "delong_auc_this": test.auc_a,
            "delong_auc_other": test.auc_b, "delong_difference": test.difference,
            "delong_difference_low": test.low, "delong_difference_high": test.high,
            "delong_z": test.z, "delong_p": test.p_value}


def class_names(target: str, n_classes: int) -> list[str]:
    """What the classes of `target` are called, in label order (mgmt: unmethylated,
    methylated); ``<target>=k`` for a target whose classes have no names."""
    names = CLASS_NAMES.get(target, ())
    if len(names) == n_classes:
        return list(names)
    return [f"{target}={k}" for k in range(n_classes)]


def _draw(out_dir: Path, y: np.ndarray, probabilities: np.ndarray, target: str,
          threshold: float, metrics: dict[str, float]) -> dict[str, Path]:
    """The figures that the labels allow: ROC and calibration need both binary classes."""
    figures: dict[str, Path] = {}
    names = class_names(target, max(probabilities.shape[1], 2))
    if probabilities.shape[1] == 1:
        p = probabilities[:, 0]
        if "auc_low" in metrics:
            auc = ConfidenceInterval(metrics["auc"], metrics["auc_low"], metrics["auc_high"])
            figures["roc"] = plots.plot_roc(y, p, out_dir / "roc.png", auc, f"ROC - {target}",
                                            threshold=threshold, positive=names[1])
            ece = ConfidenceInterval(metrics["ece"], metrics["ece_low"], metrics["ece_high"])
            figures["calibration"] = plots.plot_calibration(
                y, p, out_dir / "calibration.png", n_bins=ECE_BINS, title=f"Calibration - {target}",
                ece=ece, class_names=names)
        predicted = (p >= threshold).astype(int)
    else:
        predicted = probabilities.argmax(axis=1)
    figures["confusion"] = plots.plot_confusion(y, predicted, out_dir / "confusion.png", names,
                                                f"Confusion matrix - {target}")
    return figures


def _format(value: float) -> str:
    return "n/a" if np.isnan(value) else (f"{value:.0f}" if float(value).is_integer()
                                          else f"{value:.3f}")


def _p_value(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _interval(metrics: dict[str, float], name: str, low: str = "", high: str = "") -> str:
    low, high = low or f"{name}_low", high or f"{name}_high"
    return f"{metrics[name]:.3f} ({metrics[low]:.3f} to {metrics[high]:.3f})"


_STATISTICS = ("auc", "brier", "ece", "delong_")
"""Metric name prefixes that the statistics rows show (when the AUC has an interval)."""


def _statistics_rows(metrics: dict[str, float]) -> list[str]:
    rows = [f"| AUC (95% bootstrap CI) | {_interval(metrics, 'auc')} |"]
    if np.isfinite(metrics["auc_delong_low"]):
        rows.append(f"| AUC (95% DeLong CI) | "
                    f"{_interval(metrics, 'auc', 'auc_delong_low', 'auc_delong_high')} |")
    return rows + [
        f"| p-value of AUC > 0.5 (one-sided Mann-Whitney U) | "
        f"{_p_value(metrics['auc_p_vs_chance'])} |",
        f"| Brier score (95% bootstrap CI) | {_interval(metrics, 'brier')} |",
        f"| ECE, {ECE_BINS} bins (95% bootstrap CI) | {_interval(metrics, 'ece')} |",
    ]


def _comparison_lines(metrics: dict[str, float], other: ModelComparison) -> list[str]:
    if "delong_p" not in metrics:
        return ["", "## Comparison with another model", "",
                f"`{other.name}`: no DeLong test, the patients both models predicted hold fewer "
                "than two of a class."]
    return [
        "", "## Comparison with another model (DeLong's paired test)", "",
        f"Other model: `{other.name}`; patients predicted by both: "
        f"{metrics['delong_n']:.0f}.", "",
        "| | value |", "|---|---|",
        f"| AUC of this model | {metrics['delong_auc_this']:.3f} |",
        f"| AUC of the other model | {metrics['delong_auc_other']:.3f} |",
        f"| difference (95% CI) | "
        f"{_interval(metrics, 'delong_difference')} |",
        f"| z, two-sided p | {metrics['delong_z']:.2f}, {_p_value(metrics['delong_p'])} |",
    ]


def _methods(n_bootstrap: int, compared: bool, calibration: str | None) -> str:
    """The Methods paragraph of a binary report: each statistic and its reference."""
    text = (
        "AUC: area under the ROC curve in its Mann-Whitney form (ties count one half). Its 95% "
        f"bootstrap CI is the percentile interval of {n_bootstrap} stratified resamples "
        "(positives and negatives resampled separately, so that every resample has both "
        "classes; Efron & Tibshirani, An Introduction to the Bootstrap, 1993); its DeLong CI "
        "is AUC ± 1.96 SE from the U-statistic variance of DeLong, DeLong & Clarke-Pearson "
        "(Biometrics 1988;44:837-845), computed by the algorithm of Sun & Xu (IEEE Signal "
        "Processing Letters 2014;21:1389-1393). The p-value against chance tests H0: AUC = 0.5 "
        "against AUC > 0.5 by the one-sided Mann-Whitney U test (Mann & Whitney, Annals of "
        "Mathematical Statistics 1947;18:50-60), whose U / (n1 n0) is the AUC (Hanley & McNeil, "
        "Radiology 1982;143:29-36). Brier score: mean squared difference between probability "
        "and label (Brier, Monthly Weather Review 1950;78:1-3). ECE: expected calibration "
        f"error, the mean |predicted - observed| over {ECE_BINS} equal-width probability bins "
        "weighted by their patient counts (Naeini, Cooper & Hauskrecht, AAAI 2015); Brier and "
        "ECE intervals come from the same stratified bootstrap.")
    if compared:
        text += (" The comparison with another model is DeLong's two-sided test of two "
                 "correlated AUCs (the same patients), with a Wald interval of the difference.")
    if calibration:
        text += f" {calibration}"
    return text


def _markdown(title: str, target: str, metrics: dict[str, float], figures: dict[str, Path],
              notes: Sequence[str], n_bootstrap: int, comparison: ModelComparison | None,
              calibration: str | None) -> str:
    lines = [f"# {title}", "", f"Target: `{target}`", ""]
    lines += [f"- {note}" for note in notes]
    lines += ["", "| metric | value |", "|---|---|"]
    statistics = "auc_low" in metrics
    if statistics:
        lines += _statistics_rows(metrics)
    lines += [f"| {name} | {_format(value)} |" for name, value in metrics.items()
              if not (statistics and name.startswith(_STATISTICS))]
    if statistics and comparison is not None:
        lines += _comparison_lines(metrics, comparison)
    lines.append("")
    lines += [f"![{name}]({path.name})" for name, path in figures.items()]
    if statistics:
        lines += ["", "## Methods", "", _methods(n_bootstrap, comparison is not None,
                                                  calibration)]
    return "\n".join(lines) + "\n"


def write_classification_report(
    out_dir: str | Path,
    y: np.ndarray,
    probabilities: np.ndarray,
    target: str,
    *,
    title: str = "Evaluation report",
    notes: Sequence[str] = (),
    threshold: float = 0.5,
    n_bootstrap: int = 1000,
    seed: int = 0,
    comparison: ModelComparison | None = None,
    calibration: str | None = None,
) -> EvaluationReport:
    """Metrics, ROC / confusion / calibration figures and ``report.md`` in `out_dir`.

    `notes` are bullet lines for the page (models used, patients left out, ...);
    `comparison`: a second model of the same patients, tested against this one by DeLong's
    test (binary targets); `calibration`: a sentence for the Methods saying how the
    probabilities were calibrated.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y).astype(int)
    probabilities = np.asarray(probabilities, dtype=float).reshape(len(y), -1)
    metrics = classification_metrics(y, probabilities, threshold, n_bootstrap, seed)
    if comparison is not None and "auc_low" in metrics:
        metrics.update(comparison_metrics(y, probabilities[:, 0], comparison))
    figures = _draw(out_dir, y, probabilities, target, threshold, metrics)
    markdown = out_dir / "report.md"
    markdown.write_text(_markdown(title, target, metrics, figures, notes, n_bootstrap,
                                  comparison, calibration))
    return EvaluationReport(metrics, figures, markdown)


def write_segmentation_report(
    out_dir: str | Path,
    scores: dict[str, dict[str, float]],
    *,
    title: str = "Segmentation report",
    notes: Sequence[str] = (),
    cases: dict[str, Path] | None = None,
) -> EvaluationReport:
    """Mean and SD over patients of each score, a per-patient table and a Dice box plot.

    `scores` maps a patient id to its scores (``dice_et``, ..., ``hd95``) as returned by
    `evaluation.segmentation_scores.segmentation_scores`; `cases` names figures of single
    patients (e.g. ``segmentation_best`` -> PNG) shown below the plot. Writes ``report.md``
    in `out_dir`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame.from_dict(scores, orient="index").sort_index()
    metrics = {name: float(table[name].mean()) for name in table.columns}
    metrics["n"] = float(len(table))
    dice = {name: table[name].tolist() for name in table.columns if name.startswith("dice")}
    figures = {"dice": plots.plot_scores(dice, out_dir / "dice.png", "Dice per patient")}
    lines = [f"# {title}", ""] + [f"- {note}" for note in notes]
    lines += ["", "| score | mean | SD |", "|---|---|---|"]
    lines += [f"| {name} | {table[name].mean():.3f} | {table[name].std(ddof=1):.3f} |"
              for name in table.columns]
    lines += ["", "| patient | " + " | ".join(table.columns) + " |",
              "|---" * (len(table.columns) + 1) + "|"]
    lines += [f"| {pid} | " + " | ".join(f"{v:.3f}" for v in row) + " |"
              for pid, row in table.iterrows()]
    lines += ["", "![dice](dice.png)"]
    for name, path in (cases or {}).items():
        figures[name] = Path(path)
        lines += ["", f"![{name}]({Path(path).name})"]
    markdown = out_dir / "report.md"
    markdown.write_text("\n".join(lines) + "\n")
    return EvaluationReport(metrics, figures, markdown)


def takes_images(logger: Any) -> bool:
    """Whether `logger` shows figures: W&B (``log_image``) or TensorBoard."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return hasattr(logger, "log_image") or isinstance(logger, TensorBoardLogger)


def log_figures(figures: dict[str, Path], loggers: Sequence[Any], prefix: str,
                step: int | None = None) -> None:
    """Send each figure (name -> PNG) as the image ``<prefix>/<name>`` to the loggers that
    take images: W&B (``log_image``) and TensorBoard (its writer's ``add_image``, at `step`)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if hasattr(logger, "log_image"):
            for name, path in figures.items():
                logger.log_image(key=f"{prefix}/{name}", images=[str(path)])
        elif isinstance(logger, TensorBoardLogger):
            for name, path in figures.items():
                pixels = imread(path)  # (H, W, 4) floats in [0, 1] for a PNG
                logger.experiment.add_image(f"{prefix}/{name}", pixels[..., :3],
                                            global_step=step, dataformats="HWC")


def log_report(report: EvaluationReport, loggers: Sequence[Any], prefix: str = "test") -> None:
    """Send the metrics to every logger and the figures to those that take images (W&B,
    TensorBoard)."""
    metrics = {f"{prefix}/{name}": value for name, value in report.metrics.items()}
    for logger in loggers:
        logger.log_metrics(metrics)
    log_figures(report.figures, loggers, prefix)
    for logger in loggers:
        logger.save()
        logger.finalize("success")
