"""Trained models from run directories: the saved config rebuilds them, the checkpoint fills them.

What a run directory holds, and how its config and checkpoints are found and read, is
`radiogenomics.runs`; an export folder's network (`radiogenomics.inference.exported`) takes
the place of the trained net in the module its config rebuilds.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict
from torch import nn

from radiogenomics import config as rc
from radiogenomics.data.datamodule import SEGMENTATION_TARGET
from radiogenomics.data.slices import PLANE_AXIS, select_slices
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.errors import CheckpointError, RadiogenomicsError
from radiogenomics.evaluation.aggregation import aggregate
from radiogenomics.inference.exported import (
    ExportedNet,
    is_export_folder,
    member_folders,
    read_manifest,
)
from radiogenomics.interpret.slice_batch import to_slices
from radiogenomics.runs import (
    RUN_CONFIG,
    choose_checkpoint,
    find_runs,
    read_config,
    read_state_dict,
)

log = logging.getLogger(__name__)


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
    roi_masks: Any = None
    """The provider of predicted tumour masks (`predicted_masks.PredictedMasks`) of a
    classifier trained on a tumour ROI with ``data.roi_model``; None otherwise."""
    members: tuple[Path, ...] = ()
    """An exported fold ensemble: each member's folder of run files (``members/<job>/``)."""

    @property
    def trained_runs(self) -> tuple[Path, ...]:
        """The folders whose splits.json record whom the model trained and validated on."""
        return self.members or (self.run_dir,)

    @property
    def net(self) -> nn.Module:
        return self.module.net

    @property
    def is_segmenter(self) -> bool:
        return self.target == SEGMENTATION_TARGET

    @property
    def segmentation_module(self) -> nn.Module | None:
        """What gives this model's tumour masks (`radiogenomics.inference.masks`): a
        segmenter's module, a multi-task module's `SegmentationHead`; None for a classifier
        and for an exported multi-task model (its network gives the class output only)."""
        if self.is_segmenter:
            return self.module
        if hasattr(self.module, "segmentation_head") and not isinstance(self.net, ExportedNet):
            return self.module.segmentation_head()
        return None

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


def load_model(run_dir: Path, checkpoint: Path, device: torch.device | str = "cpu",
               name: str | None = None, roi_model: str | None = None) -> TrainedModel:
    """Rebuild the net and module from the run's config and load the checkpoint's weights.

    ``roi_model``: the segmenter run whose predicted masks give the tumour ROI, in place of
    the run's own ``data.roi_model``."""
    config = read_config(run_dir)
    if roi_model:  # the saved config is resolved: its provider names the run's own
        with open_dict(config.data):
            config.data.roi_model = str(roi_model)
            if config.data.get("roi_masks"):
                config.data.roi_masks.run_dir = str(roi_model)
    net_config = config.model.net
    if "pretrained_path" in net_config:
        with open_dict(net_config):
            net_config.pretrained_path = None  # the checkpoint holds every weight
    module = rc.instantiate(config.model, net=rc.instantiate(net_config))
    try:
        module.load_state_dict(read_state_dict(checkpoint))
    except RuntimeError as err:
        raise CheckpointError(f"{checkpoint} does not fit the model of {run_dir / RUN_CONFIG}"
                              f": {err}") from err
    return _trained(config, module, run_dir, checkpoint, name, device)


def load_exported(folder: Path, device: torch.device | str = "cpu") -> TrainedModel:
    """An export folder's network (ONNX or TorchScript) inside its trained LightningModule
    (an exported fold ensemble: the first member's, around the ensemble's network)."""
    manifest = read_manifest(folder)
    config = read_config(folder)
    model_file = folder / manifest["model_file"]
    module = rc.instantiate(config.model, net=ExportedNet(model_file))
    model = _trained(config, module, folder, model_file, folder.name, device)
    return dataclasses.replace(model, members=tuple(member_folders(folder, manifest)))


def _trained(config: DictConfig, module: nn.Module, run_dir: Path, checkpoint: Path,
             name: str | None, device: torch.device | str) -> TrainedModel:
    """The model with the preprocessing and slicing of its training data config."""
    datamodule = rc.instantiate(config.data)
    preprocess = getattr(datamodule, "preprocess", None)
    if not isinstance(preprocess, PreprocessConfig):
        raise RadiogenomicsError(
            f"the data config of {run_dir} ({config.data.get('_target_')}) has no volumetric "
            "preprocessing: predict.py serves models trained on MRIDataModule cohorts")
    log.info("loaded %s (%s)", checkpoint, type(module.net).__name__)
    return TrainedModel(
        name=name or run_dir.name, run_dir=run_dir, checkpoint=checkpoint, config=config,
        module=module.eval().to(device),
        preprocess=dataclasses.replace(preprocess, with_seg=False),
        target=str(datamodule.target), slicing=_slicing(datamodule, module, run_dir),
        roi_masks=getattr(datamodule, "roi_masks", None),
    )


def load_models(ckpt_path: str | Path, which: str = "best",
                device: torch.device | str = "cpu",
                roi_model: str | None = None) -> list[TrainedModel]:
    """Every model `ckpt_path` names (one, or the members of a fold ensemble); an export
    folder (`radiogenomics.inference.export`) is one model. ``roi_model``: see `load_model`."""
    if is_export_folder(ckpt_path):
        return [load_exported(Path(ckpt_path).expanduser(), device)]
    runs = find_runs(ckpt_path)
    models = [load_model(run_dir, checkpoint or choose_checkpoint(run_dir, which), device,
                         roi_model=roi_model)
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
