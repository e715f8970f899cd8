"""The Optuna sweeper of hydra_plugins/radiogenomics_optuna: search-space parsing, failed trials,
Hydra's plugin discovery. (The sweep of train.py itself: test_sweeps.py.)"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.radiogenomics_optuna._errors import SweepFailedError
from hydra_plugins.radiogenomics_optuna._search_space import (
    SearchSpaceError,
    grid_values,
    parse_search_space,
)
from hydra_plugins.radiogenomics_optuna.optuna_sweeper import OptunaSweeper
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]


# -- the search space -------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "distribution"), [
    ("interval(0.1, 1)", FloatDistribution(0.1, 1.0)),
    ("interval(0, 1)", FloatDistribution(0.0, 1.0)),  # interval() is a float interval
    ("tag(log, interval(1e-5, 1e-2))", FloatDistribution(1e-5, 1e-2, log=True)),
    ("int(interval(1, 10))", IntDistribution(1, 10)),
    ("tag(log, int(interval(1, 64)))", IntDistribution(1, 64, log=True)),
    ("range(1, 4)", IntDistribution(1, 3)),  # as in Hydra: the stop is excluded
    ("range(0, 10, 2)", IntDistribution(0, 8, step=2)),
    ("range(5, 0, -1)", IntDistribution(1, 5)),
    ("range(0.1, 0.5, 0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
    ("choice(4, 8, 16)", CategoricalDistribution([4, 8, 16])),
    ("4,8,16", CategoricalDistribution([4, 8, 16])),
    ("choice(adam, sgd)", CategoricalDistribution(["adam", "sgd"])),
    ("choice(true, false)", CategoricalDistribution([True, False])),
    ("choice([T1wCE], [FLAIR,T1w])", CategoricalDistribution(["[T1wCE]", "[FLAIR,T1w]"])),
])
def test_each_form_of_the_override_grammar_gives_its_optuna_distribution(value, distribution):
    space = parse_search_space([f"key={value}"])
    assert space.distributions == {"key": distribution}
    assert space.fixed == {}


def test_plain_values_are_fixed_and_passed_to_every_trial_unchanged() -> None:
    space = parse_search_space(["data.spatial_size=[16,16,16]", "trainer=cpu",
                                "+extra=null", "model.optimizer.lr=interval(0, 1)"])
    assert list(space.distributions) == ["model.optimizer.lr"]
    assert space.fixed == {"data.spatial_size": "data.spatial_size=[16,16,16]",
                           "trainer": "trainer=cpu", "+extra": "+extra=null"}
    assert space.overrides({"model.optimizer.lr": 0.5})[-1] == "model.optimizer.lr=0.5"


def test_a_later_override_replaces_an_earlier_one() -> None:
    """The command line (after the config's params) can fix what the config sweeps."""
    space = parse_search_space(["data.batch_size=choice(4, 8)", "lr=interval(0, 1)",
                                "data.batch_size=8", "lr=interval(0, 2)"])
    assert space.distributions == {"lr": FloatDistribution(0.0, 2.0)}
    assert space.fixed == {"data.batch_size": "data.batch_size=8"}


def test_trial_overrides_parse_back_to_the_sampled_values() -> None:
    space = parse_search_space(['name=choice(a, "b c", "x,y")', "seqs=choice([T1wCE,FLAIR])",
                                "lr=tag(log, interval(1e-5, 1e-2))", "n=range(1, 5)"])
    params = {"name": "b c", "seqs": "[T1wCE,FLAIR]", "lr": 1.2345678901234567e-05, "n": 3}
    parsed = OverridesParser.create().parse_overrides(space.overrides(params))
    assert {o.key_or_group: o.value() for o in parsed} == {
        "name": "b c", "seqs": ["T1wCE", "FLAIR"], "lr": 1.2345678901234567e-05, "n": 3}
    comma = OverridesParser.create().parse_overrides(space.overrides({"name": "x,y"}))
    assert comma[0].value() == "x,y" and not comma[0].is_sweep_override()


def test_the_older_search_space_form_and_params_together() -> None:
    space = parse_search_space(["b=choice(1, 2)"], search_space={
        "a": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "b": {"type": "int", "low": 0, "high": 9},
        "c": {"type": "int", "low": 0, "high": 10, "step": 5},
        "d": {"type": "categorical", "choices": ["x", "y"]}})
    assert space.distributions == {
        "a": FloatDistribution(1e-4, 1e-1, log=True), "b": CategoricalDistribution([1, 2]),
        "c": IntDistribution(0, 10, step=5), "d": CategoricalDistribution(["x", "y"])}


@pytest.mark.parametrize("value", ["glob(*)", "interval(1, 0)", "tag(log, interval(0, 1))",
                                   "range(3, 3)"])
def test_what_optuna_cannot_sample_is_a_clear_error(value) -> None:
    with pytest.raises(SearchSpaceError, match="key="):
        parse_search_space([f"key={value}"])


def test_grid_values_of_discrete_distributions_only() -> None:
    assert grid_values("a", IntDistribution(0, 8, step=2)) == [0, 2, 4, 6, 8]
    assert grid_values("b", FloatDistribution(0.1, 0.4, step=0.1)) == [0.1, 0.2, 0.3, 0.4]
    assert grid_values("c", CategoricalDistribution(["x", "y"])) == ["x", "y"]
    with pytest.raises(SearchSpaceError, match="grid"):
        grid_values("d", FloatDistribution(0.0, 1.0))


# -- the sweep loop, with a launcher that returns what it is told -----------------------------

class ScriptedLauncher:
    """Returns, job after job, the next of `outcomes`: a value, or an exception (a failed job)."""

    def __init__(self, outcomes: list) -> None:
        self.outcomes = list(outcomes)
        self.launched: list[list[str]] = []

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        returns = []
        for overrides in job_overrides:
            self.launched.append(list(overrides))
            outcome = self.outcomes.pop(0)
            failed = isinstance(outcome, BaseException)
            returns.append(JobReturn(overrides=list(overrides), _return_value=outcome,
                                     status=JobStatus.FAILED if failed else
                                     JobStatus.COMPLETED))
        return returns


def scripted_sweeper(tmp_path: Path, outcomes: list, monkeypatch, **settings) -> OptunaSweeper:
    from omegaconf import OmegaConf

    settings = {"sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 0},
                "direction": "maximize", "n_trials": len(outcomes), "n_jobs": 1,
                "params": {"x": "interval(0, 1)", "fixed": "7"}, **settings}
    sweeper = OptunaSweeper(**settings)
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    sweeper.launcher = ScriptedLauncher(outcomes)
    monkeypatch.setattr(sweeper, "validate_batch_is_legal", lambda batch: None)
    return sweeper


def test_failed_trials_are_told_as_fail_and_the_sweep_goes_on(tmp_path, monkeypatch,
                                                              caplog) -> None:
    storage = f"sqlite:///{tmp_path}/study.db"
    outcomes = [0.5, RuntimeError("out of memory"), 0.9, math.nan, 0.7, None, 0.6]
    sweeper = scripted_sweeper(tmp_path, outcomes, monkeypatch, storage=storage,
                               study_name="s", n_jobs=2)
    with caplog.at_level(logging.INFO):
        sweeper.sweep([])
    trials = optuna.load_study(study_name="s", storage=storage).trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL,
        TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert [t.value for t in trials if t.state == TrialState.COMPLETE] == [0.5, 0.9, 0.7, 0.6]
    # every trial got the sampled x and the fixed value
    assert all(job[0] == "fixed=7" and job[1].startswith("x=")
               for job in sweeper.launcher.launched)
    failures = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("trial 1" in m and "FAIL" in m and "out of memory" in m for m in failures)
    assert any("trial 3" in m and "NaN" in m for m in failures)
    assert any("trial 5" in m and "returned None" in m and "optimized_metric" in m
               for m in failures)
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["best_value"] == 0.9 and results["best_trial"] == 2
    assert results["best_params"] == {"x": trials[2].params["x"]}
    assert any("best trial 2" in r.getMessage() for r in caplog.records)


def test_a_sweep_stops_when_too_many_trials_fail(tmp_path, monkeypatch) -> None:
    sweeper = scripted_sweeper(tmp_path, [ValueError("bad config"), 0.5, 0.5], monkeypatch)
    with pytest.raises(SweepFailedError, match="1 of 1 trials failed") as error:
        sweeper.sweep([])
    assert isinstance(error.value.__cause__, ValueError)
    assert len(sweeper.launcher.launched) == 1

    strict = scripted_sweeper(tmp_path, [0.5, "not a number", 0.5], monkeypatch,
                              max_failure_rate=0.0)
    with pytest.raises(SweepFailedError, match="not a number"):
        strict.sweep([])
    assert len(strict.launcher.launched) == 2

    lenient = scripted_sweeper(tmp_path, [None, None, 0.5], monkeypatch, max_failure_rate=1.0)
    lenient.sweep([])
    assert len(lenient.launcher.launched) == 3


def test_a_finished_sweep_writes_optunas_figures_into_its_folder(tmp_path, monkeypatch) -> None:
    sweeper = scripted_sweeper(tmp_path, [0.5, 0.9, RuntimeError("oom"), 0.7, 0.6],
                               monkeypatch, params={"x": "interval(0, 1)", "y": "choice(a, b)"})
    sweeper.sweep([])
    for name in ("optuna_history.png", "optuna_importances.png",
                 "optuna_parallel_coordinates.png"):
        figure = plt.imread(tmp_path / name)
        assert figure.shape[0] > 200 and figure.shape[1] > 400, name
        assert figure[..., :3].std() > 0.05, f"{name} is blank"


def test_a_sweep_too_short_for_importances_skips_them_and_says_why(tmp_path, monkeypatch,
                                                                   caplog) -> None:
    sweeper = scripted_sweeper(tmp_path, [0.5, RuntimeError("oom")], monkeypatch)
    with caplog.at_level(logging.INFO):
        sweeper.sweep([])
    assert (tmp_path / "optuna_history.png").is_file()
    assert not (tmp_path / "optuna_importances.png").exists()
    assert any("importances figure skipped: 1 completed trial(s)" in r.getMessage()
               for r in caplog.records)
    nothing = scripted_sweeper(tmp_path / "none", [None], monkeypatch, max_failure_rate=1.0)
    nothing.sweep([])
    assert not list((tmp_path / "none").glob("optuna_*.png"))


def test_grid_sampler_runs_each_point_once(tmp_path, monkeypatch) -> None:
    sweeper = scripted_sweeper(tmp_path, [0.1] * 6, monkeypatch, n_trials=10, n_jobs=4,
                               sampler={"_target_": "optuna.samplers.GridSampler"},
                               params={"a": "choice(x, y)", "b": "range(0, 3)"})
    sweeper.sweep([])
    points = {tuple(job) for job in sweeper.launcher.launched}
    assert len(sweeper.launcher.launched) == 6 and len(points) == 6


def test_directions_are_checked(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="direction"):
        OptunaSweeper(sampler={}, direction="up")
    sweeper = scripted_sweeper(tmp_path, [(1.0, 1.0), (2.0, 2.0)], monkeypatch,
                               direction=["minimize", "maximize"])
    sweeper.sweep([])
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert len(results["solutions"]) == 2


# -- Hydra's side -----------------------------------------------------------------------------

def test_hydra_finds_the_sweeper_and_its_samplers_by_their_old_names() -> None:
    cfg = compose_train(["hparams_search=cnn3d_optuna", "hydra.sweeper.sampler.n_startup_trials=2"])
    assert cfg.hydra.sweeper._target_ == (
        "hydra_plugins.radiogenomics_optuna.optuna_sweeper.OptunaSweeper")
    assert cfg.hydra.sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert cfg.hydra.sweeper.sampler.n_startup_trials == 2
    for sampler in ("random", "grid", "cmaes", "nsgaii", "motpe", "qmc", "gp"):
        cfg = compose_train(["hydra/sweeper=optuna", f"hydra/sweeper/sampler={sampler}"])
        assert cfg.hydra.sweeper.sampler._target_.startswith("optuna.samplers.")


def test_hydra_plugin_scan_does_not_import_optuna() -> None:
    probe = ("import sys; from hydra.core.plugins import Plugins; "
             "from hydra.plugins.sweeper import Sweeper; "
             "names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]; "
             "print('OptunaSweeper' in names, 'optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]


APP = """
import math
import hydra
from hydra.core.hydra_config import HydraConfig

@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    job = HydraConfig.get().job.num
    if job == 1:
        raise RuntimeError("trial failed on purpose")
    return math.nan if job == 2 else (cfg.x - 0.3) ** 2 + cfg.k

if __name__ == "__main__":
    main()
"""

APP_CONFIG = """
defaults:
  - override hydra/sweeper: optuna
  - override hydra/sweeper/sampler: tpe
  - _self_
x: 0.0
k: 0
hydra:
  sweeper:
    direction: minimize
    study_name: app
    n_trials: 4
    n_jobs: 2
    sampler:
      seed: 0
      n_startup_trials: 2
    params:
      x: interval(-1, 1)
      k: range(0, 4)
"""


def test_a_hydra_app_sweep_with_a_failing_trial_and_its_sqlite_study(tmp_path) -> None:
    """Through Hydra itself: plugin discovery, the launcher, a resumable SQLAlchemy-2 study."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "conf" / "config.yaml").write_text(APP_CONFIG)
    storage = f"sqlite:///{tmp_path}/app.db"
    command = [sys.executable, "app.py", "-m", f"hydra.sweeper.storage={storage}",
               f"hydra.sweep.dir={tmp_path}/sweep"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    study = optuna.load_study(study_name="app", storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    assert "trial failed on purpose" in run.stderr + run.stdout
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["best_value"] == study.best_value
    assert set(results["best_params"]) == {"x", "k"}
    job0 = yaml.safe_load((tmp_path / "sweep" / "0" / ".hydra" / "overrides.yaml").read_text())
    assert sorted(job0) == [f"k={study.trials[0].params['k']}",
                            f"x={study.trials[0].params['x']!r}"]

    again = subprocess.run([*command[:-1], f"hydra.sweep.dir={tmp_path}/again",
                            "hydra.sweeper.n_trials=2", "k=0"], cwd=tmp_path,
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(study_name="app", storage=storage).trials
    assert len(trials) == 6 and trials[4].state.name == "COMPLETE"
    assert trials[4].user_attrs == {"k": "0"} and "k" not in trials[4].params
