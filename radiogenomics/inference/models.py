"""Trained models from run directories: the saved config rebuilds them, the checkpoint fills them.

A run directory (what train.py writes) holds ``config.yaml`` (resolved), ``run_info.json``,
``splits.json`` and ``checkpoints/{epoch_XXX,last}.ckpt``; a multirun directory holds one
run directory per job (``<multirun dir>/<job num>/``), e.g. the folds of a k-fold CV.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from radiogenomics import config as rc
from radiogenomics.data.datamodule import SEGMENTATION_TARGET
from radiogenomics.data.slices import PLANE_AXIS, select_slices
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.errors import RadiogenomicsError
from radiogenomics.evaluation.aggregation import aggregate
from radiogenomics.interpret.volume import to_slices

log = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"
CHECKPOINTS = ("best", "last")
_PATH_HINT = ("give a .ckpt file, a run directory (config.yaml + checkpoints/) or a multirun "
              "directory (<job>/config.yaml, e.g. the folds of `train.py -m data.fold=...`)")


@dataclass(frozen=True)
class SliceSampling:
    """How a 2D classifier saw each patient: `count` slices of `plane`, aggregated."""

    plane: str
    count: int
    selection: str
    """``central`` or ``brain_area`` (``tumour``, which needs a mask, falls back to the latter)."""
    aggregate: str
    """``mean`` probability or majority ``vote`` (see `evaluation.aggregation`)."""

    @property
    def axis(self) -> int:
        return PLANE_AXIS[self.plane]


@dataclass
class TrainedModel:
    """One trained model, ready to predict, with the preprocessing it was trained with."""

    name: str
    run_dir: Path
    checkpoint: Path
    config: DictConfig
    module: nn.Module
    preprocess: PreprocessConfig
    target: str
    slicing: SliceSampling | None = None
    """None: the net takes whole volumes."""

    @property
    def net(self) -> nn.Module:
        return self.module.net

    @property
    def is_segmenter(self) -> bool:
        return self.target == SEGMENTATION_TARGET

    @property
    def axis(self) -> int | None:
        """The axis a 2D classifier's slices are cut across; None for a volume net."""
        return self.slicing.axis if self.slicing else None

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) preprocessed images -> (B, K) probabilities (K = 1: binary).

        A 2D classifier sees the slices it was trained on and aggregates them per patient.
        """
        images = images.as_subclass(torch.Tensor)
        with torch.no_grad():
            if self.slicing is None:
                return self._probabilities(images)
            return torch.stack([self._patient(image, self.slicing) for image in images])

    def _probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        probabilities = self.module.probabilities(self.module(batch))
        return probabilities.reshape(len(batch), -1)

    def _patient(self, image: torch.Tensor, slicing: SliceSampling) -> torch.Tensor:
        chosen = select_slices(image.cpu().numpy(), None, slicing.plane, slicing.count,
                               slicing.selection)
        probabilities = self._probabilities(to_slices(image, slicing.axis)[chosen])
        per_slice = probabilities[:, 0] if probabilities.shape[1] == 1 else probabilities
        codes = torch.zeros(len(chosen), dtype=torch.int64, device=image.device)
        return aggregate(codes, per_slice, slicing.aggregate)[1].reshape(-1)


def _slicing(datamodule: Any, module: nn.Module, run_dir: Path) -> SliceSampling | None:
    """The slice sampling of a run trained on 2D slices (a datamodule with a ``plane``)."""
    if not hasattr(datamodule, "plane"):
        return None
    selection = datamodule.selection
    if selection == "tumour":
        log.warning("%s chose training slices by tumour area: with no mask at prediction "
                    "time, slices are chosen by brain area", run_dir)
        selection = "brain_area"
    return SliceSampling(datamodule.plane, int(datamodule.slices_per_case), selection,
                         str(module.hparams.get("aggregate", "mean")))


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
        raise RadiogenomicsError(f"ckpt_path={ckpt_path}: no such file or folder -> {_PATH_HINT}")
    if (path / RUN_CONFIG).is_file():
        return [(path, None)]
    if (path / ".hydra").is_dir():
        raise RadiogenomicsError(
            f"ckpt_path={ckpt_path}: this run never finished setting up (no {RUN_CONFIG}: it "
            "failed or is still running) -> see its log, or point ckpt_path to another run")
    folders = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    jobs = sorted((p for p in folders if (p / RUN_CONFIG).is_file()), key=_job_order)
    unfinished = sorted((p.name for p in folders
                         if (p / ".hydra").is_dir() and not (p / RUN_CONFIG).is_file()),
                        key=str)
    if unfinished:  # an ensemble never silently leaves out a fold that failed
        raise RadiogenomicsError(
            f"ckpt_path={ckpt_path}: job folder(s) {unfinished} of this multirun hold no "
            f"finished run (no {RUN_CONFIG}: the job failed or is still running) -> rerun them "
            "(the same command plus ckpt_path=last hydra.run.dir=<job folder>), or move them "
            "out of the folder to predict with the other jobs")
    if not jobs:
        raise RadiogenomicsError(f"ckpt_path={ckpt_path}: no {RUN_CONFIG} in it or in its "
                                 f"sub-folders -> {_PATH_HINT}")
    return [(job, None) for job in jobs]


def _best_path_in(last: Path) -> str | None:
    """File name of the best checkpoint recorded by ModelCheckpoint in `last`."""
    state = torch.load(last, map_location="cpu", weights_only=True)
    for callback in state.get("callbacks", {}).values():
        if isinstance(callback, dict) and callback.get("best_model_path"):
            return Path(callback["best_model_path"]).name
    return None


def choose_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """The best (monitored) or last checkpoint of a run directory."""
    if which not in CHECKPOINTS:
        raise RadiogenomicsError(f"checkpoint={which!r} is not one of {CHECKPOINTS}")
    folder = run_dir / "checkpoints"
    last = folder / "last.ckpt"
    ranked = sorted(p for p in folder.glob("*.ckpt") if p != last) if folder.is_dir() else []
    if which == "best" and len(ranked) > 1 and last.is_file():
        best = _best_path_in(last)
        ranked = [p for p in ranked if p.name == best] or ranked[-1:]
    chosen = ranked[-1] if which == "best" and ranked else last
    if not chosen.is_file():
        raise RadiogenomicsError(f"no checkpoint in {folder} -> train with the model_checkpoint "
                                 "callback on, or pass ckpt_path=<file.ckpt>")
    return chosen


def _read_config(run_dir: Path) -> DictConfig:
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        raise RadiogenomicsError(
            f"no {RUN_CONFIG} in {run_dir} (a checkpoint's run directory is its folder's "
            f"parent) -> predict needs the training config: keep the checkpoint in its run "
            "directory as train.py wrote it")
    config = OmegaConf.load(path)
    for node in ("model", "data"):
        if node not in config:
            raise RadiogenomicsError(f"{path} has no {node!r} node: it is not a train.py config")
    return config


def _state_dict(checkpoint: Path) -> dict[str, Any]:
    """Weights of a Lightning checkpoint, read safely (``weights_only=True``)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated files, pickles with code, foreign formats
        # torch's own advice (weights_only=False) would let the file run code: not repeated
        reason = str(err).split("\n", 1)[0][:200]
        raise RadiogenomicsError(f"cannot read checkpoint {checkpoint} ({type(err).__name__}: "
                                 f"{reason}) -> it is not a complete checkpoint written by "
                                 "train.py: copy it again, or point ckpt_path to another "
                                 "one") from err
    if "state_dict" not in state:
        raise RadiogenomicsError(f"{checkpoint} holds no state_dict: not a Lightning checkpoint")
    # torch.compile wraps the net: its weights are saved under net._orig_mod.*
    return {k.replace("._orig_mod.", "."): v for k, v in state["state_dict"].items()}


def load_model(run_dir: Path, checkpoint: Path, device: torch.device | str = "cpu",
               name: str | None = None) -> TrainedModel:
    """Rebuild the net and module from the run's config and load the checkpoint's weights."""
    config = _read_config(run_dir)
    net_config = config.model.net
    if "pretrained_path" in net_config:
        with open_dict(net_config):
            net_config.pretrained_path = None  # the checkpoint holds every weight
    net = rc.instantiate(net_config)
    module = rc.instantiate(config.model, net=net)
    try:
        module.load_state_dict(_state_dict(checkpoint))
    except RuntimeError as err:
        raise RadiogenomicsError(f"{checkpoint} does not fit the model of {run_dir / RUN_CONFIG}"
                                 f": {err}") from err
    datamodule = rc.instantiate(config.data)
    preprocess = getattr(datamodule, "preprocess", None)
    if not isinstance(preprocess, PreprocessConfig):
        raise RadiogenomicsError(
            f"the data config of {run_dir} ({config.data.get('_target_')}) has no volumetric "
            "preprocessing: predict.py serves models trained on MRIDataModule cohorts")
    log.info("loaded %s (%s)", checkpoint, type(net).__name__)
    return TrainedModel(
        name=name or run_dir.name, run_dir=run_dir, checkpoint=checkpoint, config=config,
        module=module.eval().to(device),
        preprocess=dataclasses.replace(preprocess, with_seg=False),
        target=str(datamodule.target), slicing=_slicing(datamodule, module, run_dir),
    )


def load_models(ckpt_path: str | Path, which: str = "best",
                device: torch.device | str = "cpu") -> list[TrainedModel]:
    """Every model `ckpt_path` names (one, or the members of a fold ensemble)."""
    runs = find_runs(ckpt_path)
    models = [load_model(run_dir, checkpoint or choose_checkpoint(run_dir, which), device)
              for run_dir, checkpoint in runs]
    check_ensemble(models)
    return models


def _signature(model: TrainedModel) -> dict[str, Any]:
    """What ensemble members must share: one input for all, probabilities that can be averaged."""
    hparams = model.module.hparams
    return {"target": model.target, "preprocessing": model.preprocess,
            "output": (hparams.get("num_classes"), hparams.get("output"))}


def check_ensemble(models: list[TrainedModel]) -> None:
    """Stop when the members of an ensemble differ in target, preprocessing or output."""
    first = _signature(models[0])
    for model in models[1:]:
        for what, value in _signature(model).items():
            if value != first[what]:
                raise RadiogenomicsError(
                    f"ensemble members differ in {what}: {models[0].run_dir} has {first[what]}, "
                    f"{model.run_dir} has {value} -> predict with them one at a time")
