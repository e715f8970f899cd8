"""Exported networks (``radiogenomics export``, see `radiogenomics.inference.export`) read back.

An export folder holds the network as ONNX (``model.onnx``, run by ONNX Runtime, the
``[onnx]`` extra) or TorchScript (``model.ts``, run by ``torch.jit.load``), ``manifest.json``
(what the network expects and returns) and the training run's ``config.yaml``, ``run_info.json``
and ``splits.json``; an exported fold ensemble also each member's in ``members/<job>/`` (see
`member_folders`) and its multirun's ``calibration.json``. `ExportedNet` runs the file in place
of the trained ``nn.Module``, so the LightningModule around it (sliding windows, probabilities,
label maps) is the trained one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radiogenomics.errors import CheckpointError, RadiogenomicsError
from radiogenomics.extras import require
from radiogenomics.runs import RUN_CONFIG

MANIFEST = "manifest.json"
"""The preprocessing manifest of an export folder."""
MODEL_FILES: dict[str, str] = {"onnx": "model.onnx", "torchscript": "model.ts"}
"""Export format -> the network file it writes."""
_EXPORT_HINT = "export the run again: radiogenomics export RUN --format onnx|torchscript --out DIR"


def is_export_folder(path: str | Path) -> bool:
    """Whether `path` is (or is meant to be) an export folder: a manifest or a network file."""
    folder = Path(path).expanduser()
    return folder.is_dir() and any((folder / name).is_file()
                                   for name in (MANIFEST, *MODEL_FILES.values()))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder, checked to name a network file that is there."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{folder} holds an exported network but no {MANIFEST} (what the "
                              f"network expects and returns) -> {_EXPORT_HINT}")
    try:
        manifest = json.loads(path.read_text())
        model_file = folder / manifest["model_file"]
        members = member_folders(folder, manifest)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a manifest written by radiogenomics export "
                              f"({type(err).__name__}: {err}) -> {_EXPORT_HINT}") from err
    for needed in (model_file, folder / RUN_CONFIG):
        if not needed.is_file():
            raise CheckpointError(f"{folder} has no {needed.name}, which {MANIFEST} needs -> "
                                  f"copy the whole export folder, or {_EXPORT_HINT}")
    for member in members:
        if not member.is_dir():
            raise CheckpointError(f"{folder} has no {member.relative_to(folder)} (the run files "
                                  f"of a member of its fold ensemble, which {MANIFEST} names) -> "
                                  f"copy the whole export folder, or {_EXPORT_HINT}")
    return manifest


def member_folders(folder: str | Path, manifest: dict[str, Any]) -> list[Path]:
    """The folders of an exported fold ensemble's members' run files (none for one run)."""
    members = (manifest.get("ensemble") or {}).get("members", [])
    return [Path(folder).expanduser() / member["folder"] for member in members]


class ExportedNet(nn.Module):
    """An exported network file, run as an ``nn.Module``: (B, C, ...) -> (B, K, ...) logits.

    No gradients and no dropout: Grad-CAM and MC dropout need the trained module.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.format = next((f for f, name in MODEL_FILES.items() if name == self.path.name), None)
        if self.format == "torchscript":
            self.script = torch.jit.load(str(self.path), map_location="cpu")
        elif self.format == "onnx":
            ort = require("onnxruntime")
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()  # as many as torch uses
            self.session = ort.InferenceSession(str(self.path), options,
                                                providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
        else:
            raise RadiogenomicsError(f"{self.path}: not an exported network "
                                     f"({' or '.join(MODEL_FILES.values())})")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.format == "torchscript":
            return self.script(image)
        array = image.detach().float().cpu().contiguous().numpy()
        logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(logits).to(image.device)


def refuse_gradient_tools(interpret: Any, uncertainty: Any) -> None:
    """Stop before predicting with tools an exported network cannot serve: maps (Grad-CAM,
    attention) need its gradients and layers, MC dropout its dropout layers."""
    target = str((uncertainty or {}).get("_target_", ""))
    if interpret or "mc_dropout" in target:
        asked = "interpret=" if interpret else "uncertainty=mc_dropout"
        raise RadiogenomicsError(
            f"{asked} needs the trained network's layers, which an exported model does not "
            "have -> predict with the training run (ckpt_path=<run>) for maps or MC dropout; "
            "uncertainty=tta works with exported models")
