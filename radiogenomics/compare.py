"""Compare the runs of a sweep from their CSV logs, for users without W&B.

``python -m radiogenomics.compare SWEEP_DIR [--metric val/auc_best]`` prints one row per run
(what the sweep varied, then the final metrics), best first, and writes ``comparison.csv``
and ``comparison.png`` (learning curves and final values) into the sweep directory. Hydra
does the same at the end of every multirun (:class:`SweepComparison`).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from radiogenomics.errors import RadiogenomicsError
from radiogenomics.evaluation import plots
from radiogenomics.sweeps import (
    MultirunEndCallback,
    find_runs,
    split_overrides,
    varying_overrides,
)

log = logging.getLogger(__name__)

SHOWN = ("test/auc", "val/auc", "val/loss", "train/loss")
"""Metrics printed next to the compared one (the CSV keeps them all)."""


@dataclass
class Comparison:
    """The comparison table and the files written."""

    table: pd.DataFrame
    metric: str
    varied: list[str]
    files: dict[str, Path]

    def to_string(self) -> str:
        shown = [c for c in ("run", *self.varied, self.metric, *SHOWN, "epochs")
                 if c in self.table]
        columns = list(dict.fromkeys(shown))
        return self.table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}")


def _settings(values: dict[str, str], varied: list[str]) -> str:
    """``lr=0.001 batch_size=8``: the varied overrides of a run, by their last key part."""
    def short(value: str | None) -> str:
        try:
            return f"{float(value):.3g}" if value and not value.isdigit() else str(value)
        except ValueError:
            return str(value)

    return " ".join(f"{key.rsplit('.', 1)[-1]}={short(values.get(key))}" for key in varied)


def compare_runs(sweep_dir: str | Path, metric: str = "val/auc_best",
                 curve: str = "val/auc") -> Comparison:
    """One row per run of `sweep_dir`, sorted by `metric` (best first); files written there."""
    sweep_dir = Path(sweep_dir)
    runs = [r for r in find_runs(sweep_dir) if r.history is not None]
    if not runs:
        raise FileNotFoundError(f"no run with csv/metrics.csv under {sweep_dir} -> train with "
                                "the CSV logger (logger=csv, the default, or logger=wandb)")
    varied = varying_overrides(runs)
    rows: list[dict[str, Any]] = []
    curves, finals, settings = {}, {}, {}
    for run in runs:
        values = split_overrides(run.overrides)
        metrics = run.final_metrics()
        epochs = run.curve(curve)
        rows.append({"run": run.name, **{k: values.get(k) for k in varied}, **metrics,
                     "epochs": len(epochs), "path": str(run.path)})
        settings[run.name] = _settings(values, varied)
        if len(epochs):
            curves[run.name] = (epochs.index.to_list(), epochs.to_list())
        if metric in metrics:
            finals[run.name] = metrics[metric]
    if not finals:
        logged = sorted({k for row in rows for k in row if "/" in k})
        raise KeyError(f"no run logged {metric!r}; logged metrics are {logged} -> "
                       "pass --metric with one of them")
    table = pd.DataFrame(rows).sort_values(metric, ascending=False, na_position="last")
    files = {"table": sweep_dir / "comparison.csv", "figure": sweep_dir / "comparison.png"}
    table.to_csv(files["table"], index=False)
    plots.plot_sweep_comparison(curves, finals, metric, curve, files["figure"], settings,
                                title=f"Sweep {sweep_dir.name}")
    return Comparison(table, metric, varied, files)


class SweepComparison(MultirunEndCallback):
    """Hydra callback: write the comparison of a multirun's runs when it ends."""

    def __init__(self, metric: str | None = None) -> None:
        self.metric = metric

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        metric = self.metric or config.get("optimized_metric") or "val/auc_best"
        comparison = compare_runs(str(config.hydra.sweep.dir), metric)
        log.info("comparison of the sweep's runs (%s):\n%s", comparison.files["table"],
                 comparison.to_string())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m radiogenomics.compare",
        description="Compare the runs of a sweep (multirun directory) from their CSV logs.")
    parser.add_argument("sweep_dir", help="the multirun directory (logs/<task>/multiruns/...)")
    parser.add_argument("--metric", default="val/auc_best", help="metric to rank the runs by")
    parser.add_argument("--curve", default="val/auc", help="metric drawn epoch by epoch")
    args = parser.parse_args(argv)
    try:
        comparison = compare_runs(args.sweep_dir, args.metric, args.curve)
    except (RadiogenomicsError, FileNotFoundError, KeyError) as err:  # exit 2, no traceback
        parser.exit(2, f"error: {err}\n")
    print(comparison.to_string())
    print("\n".join(f"{name}: {path}" for name, path in comparison.files.items()))


if __name__ == "__main__":
    main()
