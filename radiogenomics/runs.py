"""Run directories and their checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from radiogenomics.errors import CheckpointError

log = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"
"""The resolved config train.py saves in a run directory, next to ``checkpoints/``."""


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
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no checkpoint at {path} -> "
                                "give a .ckpt file, a run directory or `last`")
    return str(path)


def _class_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _this_model(model: nn.Module) -> str:
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
                   "sequences", "spatial_size", "spacing", "slab", "plane", "slices_per_case",
                   "selection", "slice_size", "slices_per_series", "planes")
"""The data settings a checkpoint must share with a run that resumes from it: the cohort, the
patient split and what the model sees (sequences in order, grid, slices) and learns (target)."""


def data_setup(data_cfg: Any) -> dict[str, Any]:
    """The data setup of a run from its ``data`` config: the ``DATA_SETUP_KEYS`` it has, as
    plain values (paths absolute), ready to be stored in a checkpoint."""
    setup: dict[str, Any] = {}
    for key in DATA_SETUP_KEYS:
        if key not in data_cfg:
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
