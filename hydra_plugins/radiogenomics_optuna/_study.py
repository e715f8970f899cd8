"""The Optuna side of a sweep: the sampler and storage from their configs, a job's return
value as the trial's values, and the results file."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import get_class, get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from ._search_space import SearchSpace, grid_values

log = logging.getLogger("hydra_plugins.radiogenomics_optuna.optuna_sweeper")


def _container(config: Any) -> Any:
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return config


def create_sampler(config: Any, space: SearchSpace, n_trials: int,
                   ) -> tuple[optuna.samplers.BaseSampler, int]:
    """The sampler of `config` (`_target_` and arguments; null arguments are left to
    Optuna's defaults) and the number of trials to run: a GridSampler gets the grid of the
    search space, and no more trials than its size."""
    if isinstance(config, optuna.samplers.BaseSampler):
        return config, n_trials
    config = _container(config)
    if not isinstance(config, dict) or not config.get("_target_"):
        raise ValueError(f"hydra.sweeper.sampler needs a _target_ (an Optuna sampler), got "
                         f"{config!r}: pick one with hydra/sweeper/sampler=tpe|random|grid|...")
    kwargs = {k: v for k, v in config.items() if v is not None and k != "_partial_"}
    cls = get_class(kwargs["_target_"])
    if issubclass(cls, optuna.samplers.GridSampler):
        grid = {name: grid_values(name, d) for name, d in space.distributions.items()}
        size = math.prod(len(values) for values in grid.values())
        if n_trials > size:
            log.info("the grid has %d points: running %d trials, not %d", size, size, n_trials)
            n_trials = size
        kwargs["search_space"] = grid
    return instantiate(kwargs, _convert_="all"), n_trials


def create_storage(storage: Any) -> Any:
    """A storage URL as it is, or an instantiated storage (`_target_`, e.g. RDBStorage)."""
    storage = _container(storage)
    if isinstance(storage, dict):
        return instantiate(storage, _convert_="all")
    return None if storage is None else str(storage)


def instantiate_extender(path: str | None) -> Callable[[DictConfig, optuna.Trial], Any] | None:
    """The `custom_search_space` callable (cfg, trial) -> None, from its dotted path."""
    return get_method(path) if path else None


def trial_values(job: JobReturn, n_objectives: int,
                 ) -> tuple[list[float] | None, str | None, BaseException | None]:
    """A finished job as (values, None, None), or (None, why it failed, its exception)."""
    if job.status != JobStatus.COMPLETED:
        error = job._return_value
        if isinstance(error, BaseException):
            return None, f"{type(error).__name__}: {error}", error
        return None, f"the job did not complete ({job.status.name})", None
    value = job.return_value
    if value is None:
        return None, ("the task returned None, not a value to optimise (train.py returns the "
                      "metric named by `optimized_metric`: is it set?)"), None
    items = list(value) if n_objectives > 1 and isinstance(value, Sequence) else [value]
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        return None, f"the task returned {value!r}, not a number", None
    if len(values) != n_objectives:
        return None, (f"the task returned {len(values)} values for {n_objectives} objectives "
                      f"(hydra.sweeper.direction): {value!r}"), None
    if any(math.isnan(v) for v in values):
        return None, f"the task returned {value!r} (NaN: did training diverge?)", None
    return values, None, None


def results(study: optuna.Study) -> dict[str, Any]:
    """The best trial (or, with several objectives, the Pareto front) of a study."""
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    summary: dict[str, Any] = {"name": "optuna", "study_name": study.study_name,
                               "n_trials": len(study.trials), "n_complete": len(completed)}
    if len(study.directions) == 1:
        best = study.best_trial if completed else None
        summary.update(best_params=best.params if best else None,
                       best_value=best.value if best else None,
                       best_trial=best.number if best else None)
    else:
        summary["solutions"] = [{"params": t.params, "values": t.values, "trial": t.number}
                                for t in (study.best_trials if completed else [])]
    return summary


def write_results(study: optuna.Study, path: Path) -> dict[str, Any]:
    """Log the best parameters and write them to `path` (optimization_results.yaml)."""
    summary = results(study)
    if not summary["n_complete"]:
        log.error("no trial of study %r completed: no best parameters", study.study_name)
    elif "solutions" in summary:
        log.info("%d Pareto-optimal trials:", len(summary["solutions"]))
        for solution in summary["solutions"]:
            log.info("    values %s, params %s", solution["values"], solution["params"])
    else:
        log.info("best trial %d: value %s, params %s", summary["best_trial"],
                 summary["best_value"], summary["best_params"])
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(summary), path)
    log.info("results: %s", path)
    return summary
