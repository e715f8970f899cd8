"""The sweeper's config (`hydra/sweeper=optuna`) and its samplers (`hydra/sweeper/sampler=...`).

The keys are those of Hydra's Optuna sweeper, so sweep configs written for it keep working.
A sampler field left at null is not passed to the sampler: Optuna's own default applies,
whatever the installed Optuna version.

No `from __future__ import annotations` here: Hydra's plugin scan runs this module before it
is in sys.modules, where dataclasses would look up string annotations.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

PROVIDER = "radiogenomics_optuna"


@dataclass
class SamplerConfig:
    _target_: str = MISSING
    seed: int | None = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    """optuna.samplers.TPESampler (the default)."""

    _target_: str = "optuna.samplers.TPESampler"
    n_startup_trials: int | None = None
    n_ei_candidates: int | None = None
    multivariate: bool | None = None
    group: bool | None = None
    constant_liar: bool | None = None
    # deprecated by Optuna 4.3-4.9 (a FutureWarning when set), kept for older sweep configs
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    warn_independent_sampling: bool | None = None


@dataclass
class RandomSamplerConfig(SamplerConfig):
    """optuna.samplers.RandomSampler."""

    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class GridSamplerConfig(SamplerConfig):
    """optuna.samplers.GridSampler: the grid is built from the search space, whose
    distributions must be discrete (choice, range, or int(interval)); n_trials is capped at
    the size of the grid."""

    _target_: str = "optuna.samplers.GridSampler"


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    """optuna.samplers.CmaEsSampler (needs the `cmaes` package)."""

    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int | None = None
    independent_sampler: Any = None
    warn_independent_sampling: bool | None = None
    consider_pruned_trials: bool | None = None
    restart_strategy: str | None = None
    popsize: int | None = None
    inc_popsize: int | None = None
    use_separable_cma: bool | None = None
    with_margin: bool | None = None
    lr_adapt: bool | None = None


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """optuna.samplers.NSGAIISampler (multi-objective)."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int | None = None
    mutation_prob: float | None = None
    crossover_prob: float | None = None
    swapping_prob: float | None = None
    constraints_func: Any = None


@dataclass
class MOTPESamplerConfig(TPESamplerConfig):
    """`motpe`: Optuna removed MOTPESampler in 4.0; its TPESampler handles several objectives,
    so `hydra/sweeper/sampler=motpe` gives a TPESampler."""


@dataclass
class QMCSamplerConfig(SamplerConfig):
    """optuna.samplers.QMCSampler (quasi-Monte Carlo)."""

    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str | None = None
    scramble: bool | None = None
    independent_sampler: Any = None
    warn_independent_sampling: bool | None = None
    warn_asynchronous_seeding: bool | None = None


@dataclass
class GPSamplerConfig(SamplerConfig):
    """optuna.samplers.GPSampler (Gaussian-process Bayesian optimisation; uses torch)."""

    _target_: str = "optuna.samplers.GPSampler"
    n_startup_trials: int | None = None
    deterministic_objective: bool | None = None
    independent_sampler: Any = None


@dataclass
class DistributionConfig:
    """One entry of the older `search_space` form: `{type: int|float|categorical, low, high,
    log, step, choices}` (prefer `params` and Hydra's override grammar)."""

    type: str = MISSING
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.radiogenomics_optuna.optuna_sweeper.OptunaSweeper"
    # the sweeper builds the sampler itself, once it knows the search space (GridSampler)
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])

    # an Optuna sampler: `_target_` and its arguments (hydra/sweeper/sampler=tpe, random, ...)
    sampler: Any = MISSING
    # minimize or maximize, or a list of them for a multi-objective study
    direction: Any = "minimize"
    # null: an in-memory study; a database URL (sqlite:///FILE.db) keeps the study, and a
    # rerun with the same study_name adds trials to it
    storage: Any = None
    study_name: str | None = None
    # trials run by this sweep
    n_trials: int = 20
    # trials asked for at once, one batch launched together (a parallel launcher runs them
    # side by side)
    n_jobs: int = 2
    # a failed trial (an error, or a job returning None/NaN) is told to Optuna as FAIL and
    # the sweep goes on, unless more than this fraction of the sweep's trials so far failed:
    # 0.0 stops at the first failure, 1.0 never stops
    max_failure_rate: float = 0.5
    # the search space in Hydra's override grammar, e.g.
    #   model.optimizer.lr: tag(log, interval(1e-5, 1e-2))
    #   data.batch_size: choice(4, 8, 16)
    # a plain value is fixed for every trial
    params: dict[str, Any] | None = None
    # the older form: name -> DistributionConfig (`params` wins for a name given in both)
    search_space: dict[str, Any] | None = None
    # dotted path to a callable (cfg: DictConfig, trial: optuna.Trial) -> None that suggests
    # further parameters with trial.suggest_*
    custom_search_space: str | None = None


def register() -> None:
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider=PROVIDER)
    samplers = {"tpe": TPESamplerConfig, "random": RandomSamplerConfig,
                "grid": GridSamplerConfig, "cmaes": CmaEsSamplerConfig,
                "nsgaii": NSGAIISamplerConfig, "motpe": MOTPESamplerConfig,
                "qmc": QMCSamplerConfig, "gp": GPSamplerConfig}
    for name, node in samplers.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider=PROVIDER)


register()
