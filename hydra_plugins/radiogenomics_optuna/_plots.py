"""Optuna's own figures of a finished sweep, as PNGs in the sweep folder.

``optuna_history.png`` (the objective of each trial and the best so far),
``optuna_importances.png`` (fANOVA importance of each parameter) and
``optuna_parallel_coordinates.png``, drawn by `optuna.visualization.matplotlib`. A figure the
study cannot give yet (importances need two completed trials that differ in a parameter,
parallel coordinates two completed trials) is skipped with a line in the log saying why,
never a failure of the sweep.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import optuna  # noqa: E402

log = logging.getLogger("hydra_plugins.radiogenomics_optuna.optuna_sweeper")

PLOTS: dict[str, str] = {
    "history": "optuna_history.png",
    "importances": "optuna_importances.png",
    "parallel_coordinates": "optuna_parallel_coordinates.png",
}
"""Figure name -> file written in the sweep folder."""


def _why_not_importances(study: optuna.Study) -> str | None:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"{len(complete)} completed trial(s); parameter importances need at least 2"
    varied = {name for trial in complete for name in trial.params
              if len({str(t.params.get(name)) for t in complete}) > 1}
    if not varied:
        return "no parameter differs between the completed trials"
    return None


def write_study_plots(study: optuna.Study, sweep_dir: Path,
                      objective: str | None = None) -> dict[str, Path]:
    """Draw the figures of `study` into `sweep_dir` (see module docstring), its (first)
    objective named `objective`; name -> path of those written."""
    from optuna.visualization import matplotlib as figures

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        log.warning("no completed trial: no Optuna figures")
        return {}
    target: dict[str, Any] = {"target_name": objective or "objective"}
    if len(study.directions) > 1:  # Optuna plots one objective at a time: the first
        target["target"] = lambda trial: trial.values[0]
    drawers: dict[str, Callable[..., Any]] = {
        "history": figures.plot_optimization_history,
        "importances": figures.plot_param_importances,
        "parallel_coordinates": figures.plot_parallel_coordinate,
    }
    skipped = {"importances": _why_not_importances(study),
               "parallel_coordinates": None if len(complete) > 1 else
               "1 completed trial: nothing to compare"}
    written: dict[str, Path] = {}
    for name, draw in drawers.items():
        if skipped.get(name):
            log.info("Optuna %s figure skipped: %s", name.replace("_", " "), skipped[name])
            continue
        path = sweep_dir / PLOTS[name]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw(study, **target)
        except (ValueError, RuntimeError) as error:  # the results file is written already
            log.warning("Optuna %s figure not drawn: %s", name.replace("_", " "), error)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(9, 5)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written[name] = path
    if written:
        log.info("Optuna figures: %s", ", ".join(str(p) for p in written.values()))
    return written
