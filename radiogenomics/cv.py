"""K-fold cross-validation: each fold's out-of-fold predictions and the summary of all folds.

``python train.py -m data.fold=0,1,2,3,4`` (or ``cv=5fold``) trains one job per fold; every job
writes ``val_predictions.csv`` (:class:`OutOfFoldPredictions`); at the end of the multirun
:class:`CrossValidationSummary` writes into the multirun directory

- ``cv_folds.csv``: the final metrics of every fold,
- ``cv_summary.csv``: mean and SD of every metric over the folds, and the AUC of the pooled
  out-of-fold predictions with its 95% bootstrap interval,
- ``oof_predictions.csv`` and the figure ``cv_summary.png``.

The same summary, for a finished or interrupted multirun: ``python -m radiogenomics.cv DIR``.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch

from radiogenomics.errors import RadiogenomicsError
from radiogenomics.evaluation import plots
from radiogenomics.evaluation.aggregation import aggregate_by_patient
from radiogenomics.evaluation.bootstrap import ConfidenceInterval, bootstrap_auc_ci
from radiogenomics.evaluation.report import write_classification_report
from radiogenomics.loggers import wandb_logger
from radiogenomics.sweeps import MultirunEndCallback, SweepRun, find_runs, split_overrides

log = logging.getLogger(__name__)

OOF_FILE = "val_predictions.csv"
SUMMARY_METRIC = "test/auc"
"""The metric drawn fold by fold in the summary figure (when logged)."""


class OutOfFoldPredictions(pl.Callback):
    """After testing, predict the fold's validation patients with the tested (best) weights.

    Writes ``<output_dir>/val_predictions.csv`` (``id, fold, label, probability``; one
    ``probability_<k>`` column per class for multiclass targets) and a validation report
    (``val_report/``: ROC, calibration, confusion matrix) whose figures go to every logger
    that takes images (W&B). Slice outputs of 2D models are aggregated per patient as the
    model does (its ``aggregate`` setting: mean or vote).
    Only the global-zero process predicts, over every validation patient.
    """

    def __init__(self, output_dir: str | None = None, report: bool = True) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.report = report

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if (not trainer.is_global_zero or not hasattr(pl_module, "probabilities")
                or not getattr(datamodule, "val_cases", None)
                or getattr(datamodule, "target", None) == "seg"):  # masks: no class labels
            return
        ids, labels, probabilities = predict(pl_module, datamodule.val_dataloader(), trainer)
        out = Path(self.output_dir or trainer.default_root_dir)
        table = prediction_table(ids, labels, probabilities, getattr(datamodule, "fold", None))
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / OOF_FILE, index=False)
        log.info("validation predictions of %d patients: %s", len(table), out / OOF_FILE)
        if self.report:
            target = getattr(datamodule, "target", "label")
            report = write_classification_report(
                out / "val_report", labels, probabilities, target,
                title=f"Fold {table['fold'].iloc[0]} validation (out-of-fold)")
            for logger in trainer.loggers:
                if hasattr(logger, "log_image"):
                    for name, path in report.figures.items():
                        logger.log_image(key=f"val_oof/{name}", images=[str(path)])


def predict(module: pl.LightningModule, loader: Any, trainer: pl.Trainer
            ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Patient ids, labels and probabilities (N, 1 or K) of every item of `loader`."""
    was_training = module.training
    module.eval()
    ids: list[str] = []
    labels: dict[str, int] = {}
    outputs = []
    with torch.inference_mode(), trainer.strategy.precision_plugin.forward_context():
        for batch in loader:
            logits = module(batch["image"].to(module.device))
            outputs.append(module.probabilities(logits).float().cpu())
            ids += list(batch["id"])
            labels.update(zip(batch["id"], batch["label"].tolist()))
    module.train(was_training)
    how = module.hparams.get("aggregate", "mean")
    by_patient = aggregate_by_patient(ids, torch.cat(outputs), how)
    patients = sorted(by_patient)
    scores = torch.stack([by_patient[p] for p in patients]).numpy()
    return patients, np.array([labels[p] for p in patients]), scores.reshape(len(patients), -1)


def prediction_table(ids: list[str], labels: np.ndarray, probabilities: np.ndarray,
                     fold: int | None) -> pd.DataFrame:
    """``id, fold, label, probability`` (binary) or ``probability_<k>`` columns (multiclass)."""
    table = pd.DataFrame({"id": ids, "fold": fold, "label": labels.astype(int)})
    if probabilities.shape[1] == 1:
        table["probability"] = probabilities[:, 0]
    else:
        for k in range(probabilities.shape[1]):
            table[f"probability_{k}"] = probabilities[:, k]
    return table


@dataclass
class CVSummary:
    """What :func:`summarize_cv` found and wrote."""

    folds: pd.DataFrame
    summary: pd.DataFrame
    predictions: pd.DataFrame
    files: dict[str, Path]


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


def _oof_auc(predictions: pd.DataFrame, n_bootstrap: int, seed: int
             ) -> ConfidenceInterval | None:
    if "probability" not in predictions or predictions["label"].nunique() != 2:
        return None
    return bootstrap_auc_ci(predictions["label"].to_numpy(), predictions["probability"].to_numpy(),
                            n=n_bootstrap, seed=seed)


def _summary_rows(label: str, folds: pd.DataFrame, oof: ConfidenceInterval | None,
                  n_patients: int) -> list[dict[str, Any]]:
    metrics = [c for c in folds.columns if c.startswith(("test/", "val/"))]
    rows = [{"group": label, "metric": m, "mean": folds[m].mean(), "sd": folds[m].std(ddof=1),
             "low": np.nan, "high": np.nan, "n": int(folds[m].notna().sum())} for m in metrics]
    if oof is not None:
        rows.append({"group": label, "metric": "oof/auc_pooled", "mean": oof.estimate,
                     "sd": np.nan, "low": oof.low, "high": oof.high, "n": n_patients})
    return rows


def _read_folds(label: str, members: list[SweepRun]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Final metrics (one row per fold) and pooled validation predictions of one configuration."""
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
        folds, predictions = _read_folds(label, [r for r in runs if _group(r) == group])
        auc = _oof_auc(predictions, n_bootstrap, seed) if len(predictions) else None
        if auc is not None:
            pooled[label] = (predictions["label"].to_numpy(),
                             predictions["probability"].to_numpy(), auc)
        if SUMMARY_METRIC in folds:
            fold_values[label] = folds[SUMMARY_METRIC].dropna().tolist()
        summary_rows += _summary_rows(label, folds, auc, len(predictions))
        all_folds.append(folds)
        all_predictions.append(predictions)
    result = CVSummary(
        folds=pd.concat(all_folds, ignore_index=True),
        summary=pd.DataFrame(summary_rows),
        predictions=pd.concat(all_predictions, ignore_index=True),
        files={},
    )
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
        files["predictions"] = sweep_dir / "oof_predictions.csv"
        result.predictions.to_csv(files["predictions"], index=False)
    plots.plot_cv_summary(fold_values, SUMMARY_METRIC, pooled, files["figure"],
                          title=f"Cross-validation: {sweep_dir.name}")
    return files


def format_summary(result: CVSummary) -> str:
    """The summary as a printable table: mean ± SD by metric, pooled AUC with its interval."""
    lines = []
    for group, rows in result.summary.groupby("group", sort=False):
        lines.append(f"[{group}] {int(result.folds['group'].eq(group).sum())} folds")
        for row in rows.itertuples():
            if np.isnan(row.low):
                lines.append(f"  {row.metric:<18} {row.mean:.4f} ± {row.sd:.4f}  (n={row.n})")
            else:
                lines.append(f"  {row.metric:<18} {row.mean:.4f}  95% CI {row.low:.4f}-"
                             f"{row.high:.4f}  ({row.n} patients)")
    return "\n".join(lines)


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m radiogenomics.cv",
        description="Summarise the folds of a cross-validation multirun directory.")
    parser.add_argument("sweep_dir", help="the multirun directory (logs/<task>/multiruns/...)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wandb", action="store_true",
                        help="also add a cv-summary run to the folds' W&B group")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = summarize_cv(args.sweep_dir, args.bootstrap, args.seed)
    except (RadiogenomicsError, ValueError) as err:  # a wrong directory: exit 2, no traceback
        parser.exit(2, f"error: {err}\n")
    print(format_summary(result))
    print("\n".join(f"{name}: {path}" for name, path in result.files.items()))
    if args.wandb:
        log_to_wandb(args.sweep_dir, result)


if __name__ == "__main__":
    main()
