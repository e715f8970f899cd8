"""K-fold cross-validation: the summary of all folds and their out-of-fold predictions.

``python train.py -m data.fold=0,1,2,3,4`` (or ``cv=5fold``) trains one job per fold; every job
writes ``val_predictions.csv`` (``radiogenomics.callbacks.OutOfFoldPredictions``); at the end
of the multirun :class:`CrossValidationSummary` writes into the multirun directory

- ``cv_folds.csv``: the final metrics of every fold,
- ``cv_summary.csv``: mean and SD of every metric over the folds, and of the pooled
  out-of-fold predictions the AUC (stratified bootstrap 95% interval, p-value against chance),
  Brier score and ECE (bootstrap intervals); each fold's own are ``oof/*`` in ``cv_folds.csv``,
- ``oof_predictions.csv`` and the figure ``cv_summary.png``,
- with ``calibration=temperature|platt|isotonic``: ``calibration.json``, that calibrator fitted
  on the out-of-fold predictions, which predict.py applies to the fold ensemble.

The same summary, for a finished or interrupted multirun: ``python -m radiogenomics.cv DIR``
(``--calibration platt`` to fit a calibrator too).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radiogenomics.audit.checks import check_ids
from radiogenomics.audit.subject import recorded_partitions
from radiogenomics.callbacks import OOF_FILE
from radiogenomics.errors import RadiogenomicsError
from radiogenomics.evaluation import plots
from radiogenomics.evaluation.bootstrap import ConfidenceInterval
from radiogenomics.evaluation.calibration import (
    CALIBRATION_FILE,
    CALIBRATORS,
    fit_calibrator,
    save_calibrator,
)
from radiogenomics.evaluation.report import log_figures
from radiogenomics.evaluation.statistics import (
    BinaryStatistics,
    binary_statistics,
    expected_calibration_error,
)
from radiogenomics.loggers import tensorboard_logger, wandb_logger
from radiogenomics.sweeps import MultirunEndCallback, SweepRun, find_runs, split_overrides

log = logging.getLogger(__name__)

SUMMARY_METRIC = "test/auc"
"""The metric drawn fold by fold in the summary figure (when logged)."""
POOLED_FILE = "oof_predictions.csv"
"""Every fold's validation predictions, pooled, in the multirun folder."""
FOLD_STATISTICS = ("auc", "auc_low", "auc_high", "auc_p_vs_chance", "brier", "ece")
"""Statistics of each fold's validation predictions in cv_folds.csv (as ``oof/<name>``)."""


@dataclass
class CVSummary:
    """What :func:`summarize_cv` found and wrote."""

    folds: pd.DataFrame
    summary: pd.DataFrame
    predictions: pd.DataFrame
    files: dict[str, Path]
    audit: list[str] = field(default_factory=list)
    """Verdict lines of the leakage checks run on the folds (`radiogenomics.audit`)."""


def _group(run: SweepRun) -> str:
    """The configuration a fold belongs to: its overrides other than the fold."""
    kept = {k: v for k, v in split_overrides(run.overrides).items() if k != "data.fold"}
    return " ".join(f"{k}={v}" for k, v in kept.items())


def _label_groups(runs: list[SweepRun]) -> dict[str, str]:
    """Short group labels: only the overrides that differ between configurations."""
    groups = {_group(r) for r in runs}
    if len(groups) == 1:
        return {next(iter(groups)): "cv"}
    tokens = [set(g.split()) for g in groups]
    shared = set.intersection(*tokens)
    return {g: " ".join(t for t in g.split() if t not in shared) or "base" for g in groups}


def _oof_statistics(predictions: pd.DataFrame, n_bootstrap: int, seed: int
                    ) -> BinaryStatistics | None:
    """Statistics of binary validation predictions that hold both classes; None otherwise."""
    if "probability" not in predictions or predictions["label"].nunique() != 2:
        return None
    return binary_statistics(predictions["label"].to_numpy(),
                             predictions["probability"].to_numpy(), n_bootstrap, seed)


def _fold_statistics(predictions: pd.DataFrame, n_bootstrap: int, seed: int
                     ) -> dict[str, float]:
    statistics = _oof_statistics(predictions, n_bootstrap, seed)
    if statistics is None:
        return {}
    metrics = statistics.metrics()
    return {f"oof/{name}": metrics[name] for name in FOLD_STATISTICS}


def _summary_rows(label: str, folds: pd.DataFrame, oof: BinaryStatistics | None,
                  n_patients: int) -> list[dict[str, Any]]:
    metrics = [c for c in folds.columns if c.startswith(("test/", "val/"))
               or c in ("oof/auc", "oof/brier", "oof/ece")]
    rows = [{"group": label, "metric": m, "mean": folds[m].mean(), "sd": folds[m].std(ddof=1),
             "low": np.nan, "high": np.nan, "p_value": np.nan, "n": int(folds[m].notna().sum())}
            for m in metrics]
    if oof is not None:
        for name, interval in (("auc", oof.auc), ("brier", oof.brier), ("ece", oof.ece)):
            rows.append({"group": label, "metric": f"oof/{name}_pooled",
                         "mean": interval.estimate, "sd": np.nan, "low": interval.low,
                         "high": interval.high,
                         "p_value": oof.auc_p_vs_chance if name == "auc" else np.nan,
                         "n": n_patients})
    return rows


def _read_folds(label: str, members: list[SweepRun], n_bootstrap: int, seed: int
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Final metrics and statistics of the validation predictions (one row per fold), and the
    pooled validation predictions of one configuration."""
    rows, predictions = [], []
    for run in members:
        metrics = run.final_metrics()
        if not metrics:
            log.warning("no metrics in %s -> keep the CSV logger on (logger=csv)", run.path)
        rows.append({"group": label, "fold": run.fold, "run": run.name, **metrics})
        oof = run.path / OOF_FILE
        if oof.is_file():
            table = pd.read_csv(oof, dtype={"id": str})
            predictions.append(table.assign(group=label, fold=run.fold))
            rows[-1].update(_fold_statistics(table, n_bootstrap, seed))
        else:
            log.warning("no %s in %s: left out of the pooled out-of-fold AUC", OOF_FILE, run.path)
    pooled = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
    repeated = sorted(set(pooled["id"][pooled["id"].duplicated()])) if len(pooled) else []
    if repeated:
        log.warning("%s: patients validated in more than one fold: %s", label,
                    ", ".join(repeated[:10]))
    _warn_missing_folds(label, members)
    return pd.DataFrame(rows).sort_values("fold"), pooled


def _warn_missing_folds(label: str, members: list[SweepRun]) -> None:
    """Warn when a configuration has fewer folds than its runs' ``data.n_folds`` (a fold that
    crashed or is still running): its summary then covers only the folds found."""
    declared = {run.config.get("data", {}).get("n_folds") for run in members} - {None}
    if len(declared) != 1:
        return
    n_folds = int(next(iter(declared)))
    missing = sorted(set(range(n_folds)) - {run.fold for run in members})
    if missing:
        log.warning("%s: fold(s) %s of %d have no finished run in this directory: the summary "
                    "covers %d fold(s) only -> run the missing fold(s) (python train.py -m "
                    "data.fold=%s) and summarise again", label, ", ".join(map(str, missing)),
                    n_folds, n_folds - len(missing), ",".join(map(str, missing)))


def _unfinished_jobs(sweep_dir: Path, runs: list[SweepRun]) -> list[Path]:
    """Hydra job folders of `sweep_dir` that hold no run (a job that failed before its first
    log): they are named so that a summary over fewer folds is never taken for the whole."""
    found = {run.path for run in runs}
    return sorted(p for p in sweep_dir.iterdir()
                  if p.is_dir() and (p / ".hydra").is_dir() and p not in found)


def summarize_cv(sweep_dir: str | Path, n_bootstrap: int = 1000, seed: int = 0) -> CVSummary:
    """Aggregate the folds of a multirun and write the summary files into `sweep_dir`.

    Runs that differ in more than ``data.fold`` (e.g. ``-m data.fold=0,1 model=a,b``) are
    summarised per configuration. Raises when the directory holds fewer than two folds.
    """
    sweep_dir = Path(sweep_dir)
    every_run = find_runs(sweep_dir)
    runs = [r for r in every_run if r.fold is not None]
    n_folds = len({r.fold for r in runs})
    unfinished = _unfinished_jobs(sweep_dir, every_run)
    failed = (f" ({len(unfinished)} job folder(s) hold no run, a job that failed: "
              f"{', '.join(p.name for p in unfinished[:5])})" if unfinished else "")
    if n_folds < 2:
        raise ValueError(f"{sweep_dir} holds {len(runs)} run(s) of {n_folds} fold(s){failed}: "
                         "a cross-validation needs at least two folds -> run "
                         "`python train.py -m data.fold=0,1,...` or `python train.py cv=5fold`")
    if unfinished:
        log.warning("%s: left out of the summary%s -> see their train.log", sweep_dir, failed)
    labels = _label_groups(runs)
    all_folds, all_predictions, summary_rows = [], [], []
    fold_values: dict[str, list[float]] = {}
    pooled: dict[str, tuple[np.ndarray, np.ndarray, ConfidenceInterval]] = {}
    for group, label in sorted(labels.items(), key=lambda item: item[1]):
        folds, predictions = _read_folds(label, [r for r in runs if _group(r) == group],
                                         n_bootstrap, seed)
        statistics = _oof_statistics(predictions, n_bootstrap, seed) if len(predictions) else None
        if statistics is not None:
            pooled[label] = (predictions["label"].to_numpy(),
                             predictions["probability"].to_numpy(), statistics.auc)
        if SUMMARY_METRIC in folds:
            fold_values[label] = folds[SUMMARY_METRIC].dropna().tolist()
        summary_rows += _summary_rows(label, folds, statistics, len(predictions))
        all_folds.append(folds)
        all_predictions.append(predictions)
    result = CVSummary(
        folds=pd.concat(all_folds, ignore_index=True),
        summary=pd.DataFrame(summary_rows),
        predictions=pd.concat(all_predictions, ignore_index=True),
        files={},
    )
    leakage = check_ids(recorded_partitions([run.path for run in runs]))
    (log.warning if leakage.failed else log.info)("%s", leakage.line())
    result.audit = [leakage.line()]
    result.files = _write(sweep_dir, result, fold_values, pooled)
    return result


def _write(sweep_dir: Path, result: CVSummary, fold_values: dict[str, list[float]],
           pooled: dict[str, tuple[np.ndarray, np.ndarray, ConfidenceInterval]]
           ) -> dict[str, Path]:
    files = {"folds": sweep_dir / "cv_folds.csv", "summary": sweep_dir / "cv_summary.csv",
             "figure": sweep_dir / "cv_summary.png"}
    result.folds.to_csv(files["folds"], index=False)
    result.summary.to_csv(files["summary"], index=False)
    if len(result.predictions):
        files["predictions"] = sweep_dir / POOLED_FILE
        result.predictions.to_csv(files["predictions"], index=False)
    plots.plot_cv_summary(fold_values, SUMMARY_METRIC, pooled, files["figure"],
                          title=f"Cross-validation: {sweep_dir.name}")
    return files


def format_summary(result: CVSummary) -> str:
    """The summary as a printable table: mean ± SD by metric, pooled statistics with their
    intervals (and the AUC's p-value against chance)."""
    lines = []
    for group, rows in result.summary.groupby("group", sort=False):
        lines.append(f"[{group}] {int(result.folds['group'].eq(group).sum())} folds")
        for row in rows.itertuples():
            if np.isnan(row.low):
                lines.append(f"  {row.metric:<18} {row.mean:.4f} ± {row.sd:.4f}  (n={row.n})")
            else:
                p_value = "" if np.isnan(row.p_value) else f"  p vs chance {row.p_value:.3g}"
                lines.append(f"  {row.metric:<18} {row.mean:.4f}  95% CI {row.low:.4f}-"
                             f"{row.high:.4f}  ({row.n} patients){p_value}")
    return "\n".join(lines + result.audit)


def calibrate_sweep(sweep_dir: str | Path, method: str) -> Path:
    """Fit the calibrator `method` on the pooled out-of-fold predictions of a cross-validation
    (its oof_predictions.csv) and save it as calibration.json in `sweep_dir`, where predict.py
    finds it."""
    sweep_dir = Path(sweep_dir)
    source = sweep_dir / POOLED_FILE
    if not source.is_file():
        raise RadiogenomicsError(f"{source} not found -> summarise the cross-validation first: "
                                 f"python -m radiogenomics.cv {sweep_dir}")
    table = pd.read_csv(source, dtype={"id": str})
    if "probability" not in table:
        raise RadiogenomicsError(f"{source} holds no binary probabilities: calibration is for "
                                 "binary targets")
    if table["group"].nunique() > 1:
        raise RadiogenomicsError(
            f"{sweep_dir} holds several configurations ({', '.join(table['group'].unique())}) "
            "-> calibrate a multirun whose jobs differ in data.fold only")
    y, p = table["label"].to_numpy(), table["probability"].to_numpy()
    calibrator = fit_calibrator(method, y, p)
    path = save_calibrator(calibrator, sweep_dir / CALIBRATION_FILE, predictions=POOLED_FILE,
                           n=len(table), n_positive=int(y.sum()),
                           folds=sorted(int(f) for f in table["fold"].unique()))
    log.info("calibration (%s) fitted on %d out-of-fold predictions, ECE there %.3f -> %.3f: %s",
             method, len(table), expected_calibration_error(y, p),
             expected_calibration_error(y, calibrator.apply(p)), path)
    return path


def log_to_wandb(sweep_dir: str | Path, result: CVSummary) -> bool:
    """Add a ``cv-summary`` run to the W&B group of the folds (when they logged to W&B)."""
    runs = find_runs(sweep_dir)
    settings = next((r.config["logger"]["wandb"] for r in runs
                     if (r.config.get("logger") or {}).get("wandb")), None)
    if settings is None:
        return False
    logger = wandb_logger(save_dir=str(sweep_dir), project=settings.get("project", "radiogenomics"),
                          name="cv-summary", group=settings.get("group"), job_type="cv-summary",
                          offline=settings.get("offline"))
    logger.log_table(key="cv/summary", dataframe=result.summary.astype({"n": float}))
    logger.log_table(key="cv/folds", dataframe=result.folds)
    logger.log_image(key="cv/summary", images=[str(result.files["figure"])])
    logger.experiment.finish()
    return True


def log_to_tensorboard(sweep_dir: str | Path, result: CVSummary) -> Path | None:
    """Write the summary figure (image ``cv/summary``) to ``<sweep_dir>/tensorboard/cv-summary``
    when the folds logged to TensorBoard; its log folder, else None."""
    runs = find_runs(sweep_dir)
    if not any((r.config.get("logger") or {}).get("tensorboard") for r in runs):
        return None
    logger = tensorboard_logger(save_dir=str(Path(sweep_dir) / "tensorboard"), name="cv-summary",
                                version=0, default_hp_metric=False)
    log_figures({"summary": result.files["figure"]}, [logger], "cv")
    logger.save()
    logger.finalize("success")
    log.info("cross-validation summary figure in TensorBoard: %s", logger.log_dir)
    return Path(logger.log_dir)


class CrossValidationSummary(MultirunEndCallback):
    """Hydra callback: summarise the folds at the end of a multirun whose jobs differ in fold.

    Configured in ``conf/hydra/default.yaml``; a multirun that does not vary ``data.fold``
    (e.g. an Optuna sweep) is left alone.
    """

    def __init__(self, n_bootstrap: int = 1000, seed: int = 0) -> None:
        self.n_bootstrap = n_bootstrap
        self.seed = seed

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        folds = {r.fold for r in find_runs(sweep_dir)} - {None}
        if len(folds) < 2:
            return
        result = summarize_cv(sweep_dir, self.n_bootstrap, self.seed)
        log.info("cross-validation summary (%s):\n%s", result.files["summary"],
                 format_summary(result))
        log_to_wandb(sweep_dir, result)
        log_to_tensorboard(sweep_dir, result)
        method = str(config.get("calibration") or "none")
        if method != "none":
            calibrate_sweep(sweep_dir, method)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m radiogenomics.cv",
        description="Summarise the folds of a cross-validation multirun directory.")
    parser.add_argument("sweep_dir", help="the multirun directory (logs/<task>/multiruns/...)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wandb", action="store_true",
                        help="also add a cv-summary run to the folds' W&B group")
    parser.add_argument("--calibration", choices=sorted(CALIBRATORS),
                        help="also fit this calibrator on the out-of-fold predictions "
                             f"({CALIBRATION_FILE}, applied by predict.py to the fold ensemble)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = summarize_cv(args.sweep_dir, args.bootstrap, args.seed)
        if args.calibration:
            result.files["calibration"] = calibrate_sweep(args.sweep_dir, args.calibration)
    except (RadiogenomicsError, ValueError) as err:  # a wrong directory: exit 2, no traceback
        parser.exit(2, f"error: {err}\n")
    print(format_summary(result))
    print("\n".join(f"{name}: {path}" for name, path in result.files.items()))
    if args.wandb:
        log_to_wandb(args.sweep_dir, result)


if __name__ == "__main__":
    main()
