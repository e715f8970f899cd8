"""The runs of a sweep (a Hydra multirun directory) read back from their files.

Each run directory holds ``.hydra/overrides.yaml`` (what the sweep set for it), ``config.yaml``
and ``run_info.json`` (written by train.py, read by `radiogenomics.runs`) and
``csv/metrics.csv`` (the CSV logger).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.experimental.callback import Callback

from radiogenomics.errors import RadiogenomicsError
from radiogenomics.runs import RUN_INFO, saved_config, saved_info

METRICS_FILE = Path("csv") / "metrics.csv"


@dataclass
class SweepRun:
    """One run of a sweep: where it is, what it overrode and what it logged."""

    path: Path
    overrides: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    history: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        """The run's folder relative to its sweep (the job number in a multirun)."""
        return self.path.name

    @property
    def fold(self) -> int | None:
        fold = self.info.get("fold", self.config.get("data", {}).get("fold"))
        return None if fold is None else int(fold)

    def final_metrics(self) -> dict[str, float]:
        """The last value logged of every metric (``*_best`` metrics: their maximum)."""
        if self.history is None:
            return {}
        values: dict[str, float] = {}
        for column in self.history.columns:
            if column in ("epoch", "step"):
                continue
            logged = pd.to_numeric(self.history[column], errors="coerce").dropna()
            if not logged.empty:
                values[column] = float(logged.max() if column.endswith("_best")
                                       else logged.iloc[-1])
        return values

    def curve(self, metric: str) -> pd.Series:
        """A metric by epoch (its last value in each epoch), empty when never logged."""
        if self.history is None or metric not in self.history or "epoch" not in self.history:
            return pd.Series(dtype=float)
        rows = self.history[["epoch", metric]].apply(pd.to_numeric, errors="coerce").dropna()
        return rows.groupby("epoch")[metric].last()


def _overrides(run_dir: Path) -> list[str]:
    """What the sweep set for a run (Hydra's ``.hydra/overrides.yaml``)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    return list((yaml.safe_load(path.read_text()) if path.is_file() else None) or [])


def read_run(path: str | Path) -> SweepRun:
    """Read one run directory (files that are missing are simply left empty)."""
    path = Path(path)
    metrics = path / METRICS_FILE
    return SweepRun(
        path=path,
        overrides=_overrides(path),
        config=saved_config(path),
        info=saved_info(path),
        history=pd.read_csv(metrics) if metrics.is_file() else None,
    )


def find_runs(sweep_dir: str | Path) -> list[SweepRun]:
    """Every run below `sweep_dir` (folders with ``run_info.json`` or a metrics CSV), in order.

    Job folders are sorted by number when they are numbered (Hydra's ``0, 1, ... 10``).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise RadiogenomicsError(f"sweep directory not found: {sweep_dir} -> give the multirun "
                                 "directory that train.py -m printed (logs/<task>/multiruns/...)")
    found = {p.parent for p in sweep_dir.rglob(RUN_INFO)}
    found |= {p.parent.parent for p in sweep_dir.rglob(str(METRICS_FILE))}

    def order(path: Path) -> tuple[Any, ...]:
        parts = path.relative_to(sweep_dir).parts
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)

    return [read_run(p) for p in sorted(found, key=order)]


def varying_overrides(runs: list[SweepRun]) -> list[str]:
    """Keys of the overrides whose values differ between runs (what the sweep explored)."""
    values: dict[str, set[str]] = {}
    for run in runs:
        for key, value in split_overrides(run.overrides).items():
            values.setdefault(key, set()).add(value)
    keys = [k for k, v in values.items() if len(v) > 1 or any(
        k not in split_overrides(r.overrides) for r in runs)]
    return sorted(keys)


def split_overrides(overrides: list[str]) -> dict[str, str]:
    """``["data.fold=0", "trainer=cpu"]`` -> ``{"data.fold": "0", "trainer": "cpu"}``."""
    pairs = (o.split("=", 1) for o in overrides)
    return {p[0]: p[1] if len(p) == 2 else "" for p in pairs}


class MultirunEndCallback(Callback):
    """Base of the Hydra callbacks that act when a multirun ends (``on_multirun_end``); Hydra's
    other hooks are left as Hydra's ``Callback`` has them: empty."""

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        raise NotImplementedError
