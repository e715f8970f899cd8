"""The run directory: what train.py writes into it, and what resuming, predicting and
comparing read back from it.

A run directory holds ``config.yaml`` (the resolved config), ``run_info.json`` (versions,
commit, command, fold), ``splits.json``, ``checkpoints/{epoch_XXX,last}.ckpt`` and, once the
run ends, ``model_card.md`` (`radiogenomics.model_card`); a multirun
directory holds one run directory per job (``<multirun dir>/<job num>/``), e.g. the folds of a
k-fold CV. Checkpoints are read with ``weights_only=True``: a checkpoint cannot run code; every
checkpoint or run folder that cannot be used raises ``CheckpointError``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import DictConfig, OmegaConf

import radiogenomics
from radiogenomics.errors import CheckpointError
from radiogenomics.files import write_text_atomic

if TYPE_CHECKING:  # torch is imported where a checkpoint is read: reading a sweep needs none
    import lightning.pytorch as pl
    import torch
    from torch import nn

log = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"
"""The resolved config train.py saves in a run directory, next to ``checkpoints/``."""
RUN_INFO = "run_info.json"
"""What else train.py records in a run directory: versions, git commit, command, fold."""
CHECKPOINTS = ("best", "last")
"""The checkpoints of a run that can be chosen by name."""
VERSIONED = ("torch", "lightning", "monai", "pydicom", "numpy")
"""The libraries whose versions `save_run_info` records."""
_PATH_HINT = ("give a .ckpt file, a run directory (config.yaml + checkpoints/) or a multirun "
              "directory (<job>/config.yaml, e.g. the folds of `train.py -m data.fold=...`)")


# ---------------------------------------------------------------------------- writing
def git_commit(cwd: Path | None = None) -> str | None:
    """Commit hash of the code that runs (with ``-dirty`` when there are local changes)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty.strip() else "")


def library_versions() -> dict[str, str | None]:
    """The installed version of each `VERSIONED` library (None where it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def save_run_info(cfg: DictConfig, output_dir: str | Path,
                  datamodule: pl.LightningDataModule | None = None) -> Path:
    """Write the resolved config, package and library versions, git commit and split file
    into the run dir."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / RUN_CONFIG, OmegaConf.to_yaml(cfg, resolve=True))
    info: dict[str, Any] = {
        "radiogenomics_version": radiogenomics.__version__,
        "git_commit": git_commit(Path(__file__).resolve().parent),
        "python": sys.version.split()[0],
        "versions": library_versions(),
        "command": sys.argv,
    }
    splits = getattr(datamodule, "splits", None)
    if splits is not None:
        write_text_atomic(out / "splits.json", json.dumps(splits, indent=1))
        info["fold"] = getattr(datamodule, "fold", None)
    mask_source = getattr(datamodule, "mask_source", None)
    if mask_source:  # tumour ROI or survival features: the cohort's masks or a segmenter's
        info["mask_source"] = mask_source
    skipped = getattr(datamodule, "skipped", None)
    if skipped:
        info["skipped_patients"] = {f.patient: f.reason for f in skipped}
    write_text_atomic(out / RUN_INFO, json.dumps(info, indent=1))
    return out


# ---------------------------------------------------------------------------- reading
def saved_config(run_dir: Path) -> dict[str, Any]:
    """A run's saved config as plain values; empty when it has none."""
    path = run_dir / RUN_CONFIG
    return (yaml.safe_load(path.read_text()) if path.is_file() else None) or {}


def saved_info(run_dir: Path) -> dict[str, Any]:
    """A run's ``run_info.json``; empty when it has none."""
    path = run_dir / RUN_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def _job_order(folder: Path) -> tuple[int, str]:
    return (int(folder.name), "") if folder.name.isdigit() else (1 << 30, folder.name)


def find_runs(ckpt_path: str | Path) -> list[tuple[Path, Path | None]]:
    """(run dir, checkpoint file or None to choose one) of each model `ckpt_path` names.

    A checkpoint file's run directory is its folder's parent; a multirun directory gives
    one entry per job folder, in job order.
    """
    path = Path(ckpt_path).expanduser()
    if path.is_file():
        return [(path.parent.parent, path)]
    if not path.is_dir():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no such file or folder -> {_PATH_HINT}")
    if (path / RUN_CONFIG).is_file():
        return [(path, None)]
    if (path / ".hydra").is_dir():
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: this run never finished setting up (no {RUN_CONFIG}: it "
            "failed or is still running) -> see its log, or point ckpt_path to another run")
    folders = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    jobs = sorted((p for p in folders if (p / RUN_CONFIG).is_file()), key=_job_order)
    unfinished = sorted((p.name for p in folders
                         if (p / ".hydra").is_dir() and not (p / RUN_CONFIG).is_file()),
                        key=str)
    if unfinished:  # an ensemble never silently leaves out a fold that failed
        raise CheckpointError(
            f"ckpt_path={ckpt_path}: job folder(s) {unfinished} of this multirun hold no "
            f"finished run (no {RUN_CONFIG}: the job failed or is still running) -> rerun them "
            "(the same command plus ckpt_path=last hydra.run.dir=<job folder>), or move them "
            "out of the folder to predict with the other jobs")
    if not jobs:
        raise CheckpointError(f"ckpt_path={ckpt_path}: no {RUN_CONFIG} in it or in its "
                              f"sub-folders -> {_PATH_HINT}")
    return [(job, None) for job in jobs]


def _load(checkpoint: Path) -> dict[str, Any]:
    """A checkpoint file, read safely (``weights_only=True``)."""
    import torch

    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated files, pickles with code, foreign formats
        # torch's own advice (weights_only=False) would let the file run code: not repeated
        reason = str(err).split("\n", 1)[0][:200]
        raise CheckpointError(f"cannot read checkpoint {checkpoint} ({type(err).__name__}: "
                              f"{reason}) -> it is not a complete checkpoint written by "
                              "train.py: copy it again, or point ckpt_path to another "
                              "one") from err


def _best_path_in(last: Path) -> str | None:
    """File name of the best checkpoint recorded by ModelCheckpoint in `last`."""
    state = _load(last)
    for callback in state.get("callbacks", {}).values():
        if isinstance(callback, dict) and callback.get("best_model_path"):
            return Path(callback["best_model_path"]).name
    return None


def choose_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """The best (monitored) or last checkpoint of a run directory."""
    if which not in CHECKPOINTS:
        raise CheckpointError(f"checkpoint={which!r} is not one of {CHECKPOINTS}")
    folder = run_dir / "checkpoints"
    last = folder / "last.ckpt"
    ranked = sorted(p for p in folder.glob("*.ckpt") if p != last) if folder.is_dir() else []
    if which == "best" and len(ranked) > 1 and last.is_file():
        best = _best_path_in(last)
        ranked = [p for p in ranked if p.name == best] or ranked[-1:]
    chosen = ranked[-1] if which == "best" and ranked else last
    if not chosen.is_file():
        raise CheckpointError(f"no checkpoint in {folder} -> train with the model_checkpoint "
                              "callback on, or pass ckpt_path=<file.ckpt>")
    return chosen


def read_config(run_dir: Path) -> DictConfig:
    """The training config of a run directory (it must have ``model`` and ``data``)."""
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        raise CheckpointError(
            f"no {RUN_CONFIG} in {run_dir} (a checkpoint's run directory is its folder's "
            f"parent) -> predict needs the training config: keep the checkpoint in its run "
            "directory as train.py wrote it")
    config = OmegaConf.load(path)
    for node in ("model", "data"):
        if node not in config:
            raise CheckpointError(f"{path} has no {node!r} node: it is not a train.py config")
    _follow_moved_targets(config)
    return config


# classes that moved in the redesign: runs trained before it still load
MOVED_TARGETS: dict[str, str] = {
    "radiogenomics.models.series.SeriesModule":
        "radiogenomics.models.series_classifier.SeriesModule",
    "radiogenomics.cv.OutOfFoldPredictions": "radiogenomics.callbacks.OutOfFoldPredictions",
}


def _follow_moved_targets(node: Any) -> None:
    """Rewrite, in place, every ``_target_`` of a saved config that names a moved class."""
    if OmegaConf.is_dict(node):
        target = node.get("_target_")
        if isinstance(target, str) and target in MOVED_TARGETS:
            node["_target_"] = MOVED_TARGETS[target]
        for key in node:
            _follow_moved_targets(node._get_node(key))
    elif OmegaConf.is_list(node):
        for item in node:
            _follow_moved_targets(item)


def read_state_dict(checkpoint: Path) -> dict[str, Any]:
    """Weights of a Lightning checkpoint, read safely (``weights_only=True``)."""
    state = _load(checkpoint)
    if "state_dict" not in state:
        raise CheckpointError(f"{checkpoint} holds no state_dict: not a Lightning checkpoint")
    # torch.compile wraps the net: its weights are saved under net._orig_mod.*
    return {k.replace("._orig_mod.", "."): v for k, v in state["state_dict"].items()}


# ---------------------------------------------------------------------------- resuming
def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """Turn a ``ckpt_path`` setting into a checkpoint file.

    ``last`` means ``<output_dir>/checkpoints/last.ckpt`` (start from scratch when absent,
    so a pre-empted job can always be resubmitted with the same command); a run directory
    means its ``checkpoints/last.ckpt``; anything else must be an existing file.
    """
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            log.info("no last checkpoint in %s: starting from scratch", path.parent)
            return None
        return str(path)
    path = Path(ckpt_path)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir() else (
            path / "last.ckpt")
    if not path.is_file():
        raise CheckpointError(f"ckpt_path={ckpt_path}: no checkpoint at {path} -> "
                              "give a .ckpt file, a run directory or `last`")
    return str(path)


def _class_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _this_model(model: nn.Module) -> str:
    from torch import nn

    net = getattr(model, "net", None)
    return _class_name(model) + (f" (net {_class_name(net)})" if isinstance(net, nn.Module) else "")


def _writer_of(path: Path, checkpoint: dict[str, Any]) -> str:
    """The model a checkpoint was written by: from its run's config.yaml, else its hparams."""
    config = path.resolve().parent.parent / RUN_CONFIG
    try:
        run = OmegaConf.load(config) if config.is_file() else None
    except Exception:  # an unreadable config only costs the description
        run = None
    target = OmegaConf.select(run, "model._target_") if run is not None else None
    if target:
        net = OmegaConf.select(run, "model.net._target_")
        return f"{target}" + (f" (net {net})" if net else "") + f", per {config}"
    hparams = checkpoint.get("hyper_parameters")
    if hparams:
        return f"a model with hyper-parameters {dict(hparams)}"
    return "another model"


def _mismatch(own: dict[str, torch.Tensor], saved: dict[str, Any]) -> list[str]:
    """What differs between two state dicts: missing, unexpected and reshaped tensors."""
    # torch.compile wraps modules in `_orig_mod`: compiled or not, the tensors are the same
    own = {k.replace("_orig_mod.", ""): v for k, v in own.items()}
    saved = {k.replace("_orig_mod.", ""): v for k, v in saved.items()}
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    reshaped = [f"{k} {tuple(saved[k].shape)} in the checkpoint, {tuple(own[k].shape)} here"
                for k in own if k in saved and hasattr(saved[k], "shape")
                and tuple(saved[k].shape) != tuple(own[k].shape)]
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped)):
        if keys:
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {what}: {'; '.join(keys[:3])}{more}")
    return problems


DATA_SETUP_KEYS = ("layout", "root", "target", "fold", "n_folds", "split_seed", "splits_file",
                   "split_unit", "sequences", "spatial_size", "spacing", "slab", "plane",
                   "slices_per_case", "selection", "slice_size", "slices_per_series", "planes",
                   "roi", "roi_margin_mm", "roi_model")
"""The data settings a checkpoint must share with a run that resumes from it: the cohort, the
patient split and what the model sees (sequences in order, grid, slices) and learns (target).
``split_unit`` is recorded only when it is not ``patient``, the ``roi`` keys only with a tumour
ROI (checkpoints from before them resume)."""


def data_setup(data_cfg: Any) -> dict[str, Any]:
    """The data setup of a run from its ``data`` config: the ``DATA_SETUP_KEYS`` it has, as
    plain values (paths absolute), ready to be stored in a checkpoint."""
    setup: dict[str, Any] = {}
    for key in DATA_SETUP_KEYS:
        if key not in data_cfg or (key == "split_unit" and data_cfg[key] == "patient"):
            continue
        if key.startswith("roi") and not data_cfg.get("roi"):
            continue
        value = data_cfg[key]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if key in ("root", "splits_file") and value is not None:
            value = str(Path(str(value)).expanduser().resolve())
        if isinstance(value, tuple):
            value = list(value)
        setup[key] = value
    return setup


def _data_differences(saved: dict[str, Any], own: dict[str, Any]) -> list[str]:
    keys = [k for k in DATA_SETUP_KEYS if k in saved or k in own]
    return [f"data.{k}: {saved.get(k, '(not set)')!r} in the checkpoint, "
            f"{own.get(k, '(not set)')!r} now" for k in keys if saved.get(k) != own.get(k)]


def check_checkpoint(path: str | Path, model: nn.Module,
                     setup: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a checkpoint safely and check that it fits `model` and the data `setup`; return it.

    ``torch.load(weights_only=True)``: a checkpoint cannot run code. A file that is not a
    readable checkpoint, or whose tensors do not match `model` (another task, network or
    input channels), raises CheckpointError naming the model that wrote it; changed
    hyper-parameters with matching tensors are only logged. With `setup` (``data_setup``),
    a checkpoint written with another data setup (fold, split, cohort, sequences or their
    order, grid, target) raises CheckpointError naming each differing setting.
    """
    import torch

    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types on truncated or unsafe files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path} ({reason}) -> it is truncated or corrupt, or holds "
            "objects that cannot be loaded safely: use another checkpoint of the run "
            "(checkpoints/epoch_*.ckpt) or start from scratch (ckpt_path=null)") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict) -> give a "
                              ".ckpt file written by train.py")
    problems = _mismatch(model.state_dict(), checkpoint["state_dict"])
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit the model of this run: it belongs to "
            f"{_writer_of(path, checkpoint)}; this run builds {_this_model(model)} "
            f"({', '.join(problems)}) -> use the model and data config of the run that wrote "
            "it, or another checkpoint")
    saved_setup = checkpoint.get("data_setup")
    if setup is not None and isinstance(saved_setup, dict):
        differences = _data_differences(saved_setup, setup)
        if differences:
            raise CheckpointError(
                f"checkpoint {path} was trained on other data than this run would use: "
                + "; ".join(differences) + " -> resume with the data settings of the run that "
                "wrote it, or start a new run (another hydra.run.dir, no ckpt_path)")
    elif setup is not None:
        log.warning("checkpoint %s does not record its data setup: cannot check that it was "
                    "trained on the same fold and inputs", path)
    saved = checkpoint.get("hyper_parameters") or {}
    own = dict(getattr(model, "hparams", {}))
    changed = {k: (saved[k], own[k]) for k in saved.keys() & own.keys() if saved[k] != own[k]}
    if changed:
        log.warning("resuming %s with changed hyper-parameters (checkpoint -> now): %s",
                    path, changed)
    return checkpoint


def continue_logs(loggers: list[Any], checkpoint: dict[str, Any] | None) -> None:
    """Start the loggers' metric files again (no checkpoint), or keep the epochs up to the
    resumed checkpoint's (``continue_from`` of radiogenomics.loggers.CSVLogger)."""
    epoch = step = None
    if checkpoint is not None and "epoch" in checkpoint:
        epoch, step = int(checkpoint["epoch"]), int(checkpoint.get("global_step", 0))
    for logger in loggers:
        if hasattr(logger, "continue_from"):
            logger.continue_from(epoch, step)
