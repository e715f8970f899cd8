"""A Hydra sweeper on current Optuna (3.6 and later): `hydra/sweeper=optuna`.

It stands in for Hydra's `hydra-optuna-sweeper` plugin, which requires optuna<3, with the same
config keys (sampler, direction, study_name, storage, n_trials, n_jobs, max_failure_rate,
params, search_space, custom_search_space) and the same sampler configs
(`hydra/sweeper/sampler=tpe|random|grid|cmaes|nsgaii|...`). Trials are asked for and told
through Optuna's ask/tell API and launched, a batch of `n_jobs` at a time, by Hydra's launcher.

Hydra finds it by scanning the `hydra_plugins` namespace package. The modules it imports at
every start (this one, `config`, `optuna_sweeper`) do not import Optuna; the modules that do
start with an underscore, which Hydra's scan skips.
"""
