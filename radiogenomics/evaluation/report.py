"""Evaluation of patient-level predictions against labels: metrics, figures, a Markdown page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from radiogenomics.evaluation import plots
from radiogenomics.evaluation.bootstrap import ConfidenceInterval, bootstrap_auc_ci


@dataclass
class EvaluationReport:
    """Metrics, the figures drawn (name -> PNG) and the Markdown summary of one evaluation."""

    metrics: dict[str, float]
    figures: dict[str, Path] = field(default_factory=dict)
    markdown: Path | None = None


def classification_metrics(
    y: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5,
    n_bootstrap: int = 1000, seed: int = 0,
) -> dict[str, float]:
    """AUC (with a bootstrap 95% CI when binary), accuracy and F1 of patient predictions.

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
            auc = bootstrap_auc_ci(y, p, n=n_bootstrap, seed=seed)
            metrics.update(auc=auc.estimate, auc_low=auc.low, auc_high=auc.high)
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


def _draw(out_dir: Path, y: np.ndarray, probabilities: np.ndarray, target: str,
          threshold: float, metrics: dict[str, float]) -> dict[str, Path]:
    """The figures that the labels allow: ROC and calibration need both binary classes."""
    figures: dict[str, Path] = {}
    if probabilities.shape[1] == 1:
        p = probabilities[:, 0]
        if "auc_low" in metrics:
            auc = ConfidenceInterval(metrics["auc"], metrics["auc_low"], metrics["auc_high"])
            figures["roc"] = plots.plot_roc(y, p, out_dir / "roc.png", auc, f"ROC - {target}")
            figures["calibration"] = plots.plot_calibration(
                y, p, out_dir / "calibration.png", n_bins=min(10, max(2, y.size // 5)),
                title=f"Calibration - {target}")
        names, predicted = [f"{target}=0", f"{target}=1"], (p >= threshold).astype(int)
    else:
        names = [f"{target}={k}" for k in range(probabilities.shape[1])]
        predicted = probabilities.argmax(axis=1)
    figures["confusion"] = plots.plot_confusion(y, predicted, out_dir / "confusion.png", names,
                                                f"Confusion matrix - {target}")
    return figures


def _format(value: float) -> str:
    return "n/a" if np.isnan(value) else (f"{value:.0f}" if float(value).is_integer()
                                          else f"{value:.3f}")


def _markdown(title: str, target: str, metrics: dict[str, float], figures: dict[str, Path],
              notes: Sequence[str]) -> str:
    lines = [f"# {title}", "", f"Target: `{target}`", ""]
    lines += [f"- {note}" for note in notes]
    lines += ["", "| metric | value |", "|---|---|"]
    if "auc_low" in metrics:
        lines.append(f"| AUC (95% bootstrap CI) | {metrics['auc']:.3f} "
                     f"({metrics['auc_low']:.3f}-{metrics['auc_high']:.3f}) |")
    shown = {k: v for k, v in metrics.items() if k not in ("auc_low", "auc_high")}
    if "auc_low" in metrics:
        shown.pop("auc")
    lines += [f"| {name} | {_format(value)} |" for name, value in shown.items()]
    lines.append("")
    lines += [f"![{name}]({path.name})" for name, path in figures.items()]
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
) -> EvaluationReport:
    """Metrics, ROC / confusion / calibration figures and ``report.md`` in `out_dir`.

    `notes` are bullet lines for the page (models used, patients left out, ...).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    y = np.asarray(y).astype(int)
    probabilities = np.asarray(probabilities, dtype=float).reshape(len(y), -1)
    metrics = classification_metrics(y, probabilities, threshold, n_bootstrap, seed)
    figures = _draw(out_dir, y, probabilities, target, threshold, metrics)
    markdown = out_dir / "report.md"
    markdown.write_text(_markdown(title, target, metrics, figures, notes))
    return EvaluationReport(metrics, figures, markdown)


def write_segmentation_report(
    out_dir: str | Path,
    scores: dict[str, dict[str, float]],
    *,
    title: str = "Segmentation report",
    notes: Sequence[str] = (),
) -> EvaluationReport:
    """Mean and SD over patients of each score, a per-patient table and a Dice box plot.

    `scores` maps a patient id to its scores (``dice_et``, ..., ``hd95``) as returned by
    `evaluation.segmentation.segmentation_scores`. Writes ``report.md`` in `out_dir`.
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
    markdown = out_dir / "report.md"
    markdown.write_text("\n".join(lines) + "\n")
    return EvaluationReport(metrics, figures, markdown)


def log_report(report: EvaluationReport, loggers: Sequence[Any], prefix: str = "test") -> None:
    """Send the metrics to every logger and the figures to those that take images (W&B)."""
    metrics = {f"{prefix}/{name}": value for name, value in report.metrics.items()}
    for logger in loggers:
        logger.log_metrics(metrics)
        if hasattr(logger, "log_image"):
            for name, path in report.figures.items():
                logger.log_image(key=f"{prefix}/{name}", images=[str(path)])
        logger.save()
        logger.finalize("success")
