"""The Optuna sweeper: ask Optuna for a batch of trials, launch them, tell Optuna the results.

Optuna is imported when a sweep starts, not when Hydra scans its plugins.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from ._errors import SweepFailedError

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any, direction: Any = "minimize", storage: Any = None,
                 study_name: str | None = None, n_trials: int = 20, n_jobs: int = 2,
                 max_failure_rate: float = 0.5, search_space: Any = None,
                 custom_search_space: str | None = None, params: Any = None) -> None:
        if n_trials < 0 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper: n_trials must be >= 0 and n_jobs >= 1, "
                             f"got n_trials={n_trials}, n_jobs={n_jobs}")
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate must be within [0, 1], "
                             f"got {max_failure_rate}")
        self.sampler_config = sampler
        self.directions = _directions(direction)
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.search_space = search_space
        self.custom_search_space = custom_search_space
        self.params = params
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.job_idx = 0
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    # -- the sweep -------------------------------------------------------------------------

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        from . import _search_space as ss
        from ._plots import write_study_plots
        from ._study import (
            create_sampler,
            create_storage,
            instantiate_extender,
            trial_values,
            write_results,
        )

        assert self.config is not None and self.launcher is not None
        # items() of a DictConfig resolves interpolations, e.g. range(0,${data.n_folds})
        params = dict(self.params.items()) if self.params is not None else None
        space = ss.parse_search_space([*ss.params_as_overrides(params), *arguments],
                                      self.search_space)
        sampler, n_trials = create_sampler(self.sampler_config, space, self.n_trials)
        extender = instantiate_extender(self.custom_search_space)
        study = optuna.create_study(study_name=self.study_name,
                                    storage=create_storage(self.storage), sampler=sampler,
                                    directions=self.directions, load_if_exists=True)
        stored = [d.name.lower() for d in study.directions]
        if stored != self.directions:
            raise ValueError(f"study {study.study_name!r} in {_shown(self.storage)} optimises "
                             f"{stored}, but hydra.sweeper.direction is {self.directions}: "
                             "use another study_name, or the study's direction")
        earlier = len(study.trials)
        log.info("Optuna %s study %r (storage: %s%s), sampler %s, %s",
                 optuna.__version__, study.study_name, _shown(self.storage) or "in memory",
                 f", {earlier} earlier trials" if earlier else "", type(sampler).__name__,
                 " / ".join(self.directions))
        log.info("search space: %s", {k: str(d) for k, d in space.distributions.items()})

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        failed: list[tuple[int, str, BaseException | None]] = []
        done = 0
        while done < n_trials:
            batch = min(self.n_jobs, n_trials - done)
            trials = [study.ask(fixed_distributions=space.distributions) for _ in range(batch)]
            overrides = []
            for trial in trials:
                if extender is not None:
                    extender(self.config, trial)
                    both = sorted(trial.params.keys() & space.fixed.keys())
                    if both:
                        raise ValueError(f"custom_search_space suggests {both}, which the "
                                         "sweep also fixes: drop them from one or the other")
                for key, text in space.fixed.items():
                    trial.set_user_attr(key, text.split("=", 1)[-1])
                overrides.append(space.overrides(trial.params))
            self.validate_batch_is_legal(overrides)  # each trial's config composes
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            for trial, job in zip(trials, returns):
                values, message, exception = trial_values(job, len(self.directions))
                if message is None:
                    _tell(study, trial, optuna.trial.TrialState.COMPLETE, values)
                    log.info("trial %d (job %d): %s", trial.number, self.job_idx,
                             values[0] if len(values) == 1 else values)
                else:
                    _tell(study, trial, optuna.trial.TrialState.FAIL, None)
                    log.warning("trial %d (job %d) failed, told to Optuna as FAIL: %s",
                                trial.number, self.job_idx, message, exc_info=exception)
                    failed.append((trial.number, message, exception))
                self.job_idx += 1
            done += batch
            if failed and len(failed) / done > self.max_failure_rate:
                write_results(study, sweep_dir / RESULTS_FILE)
                number, message, exception = failed[-1]
                summary = (f"{len(failed)} of {done} trials failed, more than "
                           f"hydra.sweeper.max_failure_rate={self.max_failure_rate}: the sweep "
                           f"stops. Last failure (trial {number}): {message}")
                log.error(summary)
                if exception is not None:
                    raise SweepFailedError(summary) from exception
                raise SweepFailedError(summary)
        if failed:
            log.warning("%d of %d trials failed: %s", len(failed), done,
                        ", ".join(str(number) for number, _, _ in failed))
        write_results(study, sweep_dir / RESULTS_FILE)
        write_study_plots(study, sweep_dir, _objective_name(self.config))


def _directions(direction: Any) -> list[str]:
    """`direction` (a name, an Enum of Hydra's sweeper, or a list of them) as Optuna names."""
    items = list(direction) if isinstance(direction, (list, tuple)) or OmegaConf.is_list(
        direction) else [direction]
    names = [str(getattr(item, "name", item)).lower() for item in items]
    bad = [n for n in names if n not in ("minimize", "maximize")]
    if not names or bad:
        raise ValueError(f"hydra.sweeper.direction must be minimize, maximize or a list of "
                         f"them, got {direction!r}")
    return names


def _objective_name(config: DictConfig) -> str | None:
    """What the trials return, for the figures: the task's ``optimized_metric``, if any."""
    metric = config.get("optimized_metric")
    return None if metric is None else str(metric)


def _shown(storage: Any) -> Any:
    """A storage URL for the log, its password (postgresql://user:PASSWORD@host) hidden."""
    return re.sub(r"(://[^:/@]*:).*@", r"\1***@", storage) if isinstance(storage, str) \
        else storage


def _tell(study: Any, trial: Any, state: Any, values: list[float] | None) -> None:
    """study.tell, letting the GridSampler end its grid (Study.stop outside optimize())."""
    try:
        study.tell(trial, values=values, state=state)
    except RuntimeError as error:
        if "Study.stop" not in str(error):
            raise
