"""The Hydra glue: the resolvers of conf/, configs into objects, the task wrapper of an entry
point, its command line, and the check of the output places before Hydra writes anything.

The run directory is `radiogenomics.runs`, DDP plumbing `radiogenomics.distributed`, what a
run sends to its loggers `radiogenomics.loggers`: none of them imports this module."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import hydra.experimental.callback
from omegaconf import DictConfig, OmegaConf

from radiogenomics.distributed import ddp_session, share_job_with_ddp_processes
from radiogenomics.loggers import close_wandb

log = logging.getLogger(__name__)


def _n_logits(num_classes: int) -> int:
    return 1 if int(num_classes) == 2 else int(num_classes)


def _seg_channels(output: str) -> int:
    from radiogenomics.models.segmenter import output_channels

    return output_channels(output)


def _sweep_group(default: str) -> str:
    """The W&B group of a job: ``<default>-<multirun folder>`` in a multirun, else `default`."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return default
    return f"{default}-{Path(HydraConfig.get().sweep.dir).name}"


CONFIG_PATH = "pkg://radiogenomics.conf"
"""Where Hydra finds the configs: the package's `conf/` (package data; `conf` in a checkout
links to it), so an installed package runs from any folder."""

HOME_ENV = "RADIOGENOMICS_HOME"
"""Environment variable naming the folder that holds ``data/`` and ``logs/``."""


def home_dir() -> str:
    """The folder of ``data/`` and ``logs/``: ``$RADIOGENOMICS_HOME``, else the current folder.

    Resolved without Hydra's runtime (unlike ``${hydra:runtime.cwd}``), so that it also
    resolves where Hydra has not set its runtime yet: a multirun's sweep folder.
    """
    return os.path.abspath(os.path.expanduser(os.environ.get(HOME_ENV) or os.getcwd()))


def register_resolvers() -> None:
    """Resolvers of conf/: ``${home_dir:}``, ``${len:...}``, ``${n_logits:...}``,
    ``${seg_channels:...}`` and ``${sweep_group:...}``."""
    resolvers = {"home_dir": home_dir, "len": lambda x: len(x), "n_logits": _n_logits,
                 "seg_channels": _seg_channels, "sweep_group": _sweep_group}
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


def compose(config_name: str, overrides: list[str]) -> DictConfig:
    """The package's config `config_name` with Hydra `overrides`, composed without a Hydra
    job (no ``hydra`` node): for commands that read a config but run no job
    (``radiogenomics audit --data``)."""
    from hydra import compose as compose_config
    from hydra import initialize_config_module

    with initialize_config_module(config_module=CONFIG_PATH.removeprefix("pkg://"),
                                  version_base="1.3"):
        return compose_config(config_name=config_name, overrides=list(overrides))


def instantiate(cfg: DictConfig | None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with the project's resolvers registered."""
    return hydra.utils.instantiate(cfg, **kwargs)


def instantiate_group(cfg: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every entry of a callbacks/logger dict; entries without ``_target_`` are off."""
    objects: list[Any] = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{kind} config must be a dict of configs, got {type(cfg).__name__}")
    for name, entry in cfg.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info("instantiating %s <%s> (%s)", kind, entry._target_, name)
            obj = hydra.utils.instantiate(entry)
            if obj is not None:
                objects.append(obj)
    return objects


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value a sweeper optimises; ``None`` (a failed trial for a sweeper) with a warning
    when the metric was not logged: a run that had nothing left to train (a finished run
    resumed) has no validation metrics, a misspelt name never has any."""
    if not name:
        return None
    if name not in metrics:
        log.warning("optimized_metric=%r was not logged in this run; logged metrics are %s "
                    "(a sweep needs one of them)", name, sorted(metrics))
        return None
    return float(metrics[name])


def task_wrapper(task: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report a failure clearly, say where the run lives and always close W&B."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> Any:
        output_dir = cfg.paths.get("output_dir")
        share_job_with_ddp_processes()
        try:
            with ddp_session():
                return task(cfg)
        except Exception as err:
            user_error = user_error_of(err)
            if user_error is not None and not full_errors_asked():
                log.error("%s: %s", type(user_error).__name__, user_error)
                err.reported = True  # printed once: run_cli adds no second copy
            else:
                log.error("run failed: %s: %s", type(err).__name__, err)
            raise
        finally:
            log.info("run directory: %s", output_dir)
            close_wandb()

    return wrapped


EXIT_USER_ERROR = 2
"""Exit status of a run stopped by bad data or a bad config (the message says what to do)."""
_FULL_ERROR_ENV = "HYDRA_FULL_ERROR"


def full_errors_asked() -> bool:
    """Whether the user asked for full tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(_FULL_ERROR_ENV) == "1" and not os.environ.get("_RG_FULL_ERROR_SET")


def user_error_of(err: BaseException) -> BaseException | None:
    """The error a user can fix, if `err` is (or wraps) one: a ``RadiogenomicsError`` or a
    config error of Hydra or OmegaConf. ``None`` for anything else, which is a bug."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from radiogenomics.errors import RadiogenomicsError, error_chain
    from radiogenomics.extras import missing_extra

    extra = missing_extra(err)  # an optional package not installed: name its extra
    if extra is not None:
        return extra
    for seen in error_chain(err):
        if isinstance(seen, RadiogenomicsError):
            return seen
    return err if isinstance(err, HydraException | OmegaConfBaseException) else None


def _resolved_path(cfg: DictConfig, key: str) -> Path | None:
    """The absolute path at `key` of `cfg`, or None where it is unset or needs Hydra's runtime."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_resolution_failure=True)
    except Exception:  # an interpolation of Hydra's runtime: not known before the job starts
        return None
    return Path(os.path.abspath(os.path.expanduser(str(value)))) if value else None


def check_output_places(cfg: DictConfig, run_dir_key: str) -> None:
    """Refuse, before anything is written, output places that would write under ``data.root``
    or cannot be folders: the run (or sweep) folder, the logs, the cache and splits folders."""
    from radiogenomics.errors import ConfigError

    home = _resolved_path(cfg, "paths.root_dir")
    if home is not None and home.exists() and not home.is_dir():
        raise ConfigError(f"{home} is a file, not a folder", key=f"{HOME_ENV} (paths.root_dir)",
                          hint=f"set {HOME_ENV} to a folder (data/ and logs/ go there)")
    outputs = {key: _resolved_path(cfg, key) for key in (
        run_dir_key, "paths.log_dir", "data.cache_dir", "data.splits_dir")}
    data_root = _resolved_path(cfg, "data.root")
    if data_root is not None and data_root.is_dir():
        real_root = data_root.resolve()
        for key, place in outputs.items():
            if place is not None and place.resolve().is_relative_to(real_root):
                raise ConfigError(
                    f"{place} lies inside data.root {data_root}: nothing is ever written under "
                    "the data", key=key,
                    hint=f"run from another folder, or set {HOME_ENV} (or {key}) to a folder "
                         "outside the data")
    run_dir = outputs[run_dir_key]
    if run_dir is not None:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cannot make the output folder {run_dir}: {err.strerror}",
                              key=run_dir_key, hint="choose a folder you can write to") from err


class OutputPlacesCheck(hydra.experimental.callback.Callback):
    """Hydra callback: `check_output_places` before Hydra creates the run or sweep folder."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, run_dir_key: str) -> None:
        from radiogenomics.errors import RadiogenomicsError

        try:
            check_output_places(config, run_dir_key)
        except RadiogenomicsError as err:  # Hydra turns callback errors into warnings
            sys.stderr.write(f"error: {type(err).__name__}: {err}\n")
            raise SystemExit(EXIT_USER_ERROR) from err


def run_cli(main: Callable[[], Any]) -> None:
    """Run a Hydra entry point as a command: errors a user can fix print one message and exit
    with status 2 (no traceback unless ``HYDRA_FULL_ERROR=1``); Ctrl-C exits with 130; any
    other exception is a bug and keeps its traceback."""
    from radiogenomics import interrupt

    asked = full_errors_asked()
    if not asked:  # let Hydra raise, so that the errors are printed here
        os.environ[_FULL_ERROR_ENV] = "1"
        os.environ["_RG_FULL_ERROR_SET"] = "1"
    interrupt.install()
    try:
        main()
    except (KeyboardInterrupt, SystemExit) as stop:
        if interrupt.requested():
            sys.stderr.write("interrupted (Ctrl-C)\n")
            sys.exit(interrupt.EXIT_INTERRUPTED)
        if isinstance(stop, KeyboardInterrupt):
            sys.exit(interrupt.EXIT_INTERRUPTED)
        raise
    except Exception as err:
        user_error = None if asked else user_error_of(err)
        if user_error is None:
            raise
        if not getattr(err, "reported", False):
            text = str(user_error)
            cause = user_error.__cause__
            if cause is not None and str(cause) not in text:
                text += f"\n{cause}"
            sys.stderr.write(f"error: {text}\n")
        sys.stderr.write(f"(set {_FULL_ERROR_ENV}=1 to see the traceback)\n")
        sys.exit(EXIT_USER_ERROR)
