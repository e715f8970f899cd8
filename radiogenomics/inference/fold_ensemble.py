"""A fold ensemble (the runs of a k-fold CV multirun) as one network, for ``radiogenomics export``.

predict.py averages the members' probabilities (`radiogenomics.inference.runner`). `FoldEnsemble`
runs every member's net and returns the logits of that mean probability: the logit of the mean
sigmoid (binary classifiers, segmentation regions) or the log of the mean softmax (several
classes, segmentation labels), so the sigmoid or softmax that predict.py applies to its output
gives the ensemble's probability exactly. Where the mean is not taken on the net's own output
(sliding windows average logits before the members' probabilities are averaged; a slice vote
counts each member's votes), `check_exportable` refuses with what to do instead.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radiogenomics.errors import CheckpointError
from radiogenomics.inference.trained_models import TrainedModel
from radiogenomics.runs import RUN_CONFIG, RUN_INFO, saved_info

MEMBERS_FOLDER = "members"
"""The export folder's sub-folder of each member's config.yaml, run_info.json and splits.json."""
MEMBER_FILES = (RUN_CONFIG, RUN_INFO, "splits.json")


class FoldEnsemble(nn.Module):
    """The members' nets as one: (B, C, ...) -> (B, K, ...) logits of their mean probability.

    ``activation``: ``sigmoid`` (each channel a probability) or ``softmax`` (over dim 1).
    """

    def __init__(self, nets: list[nn.Module], activation: str) -> None:
        super().__init__()
        if activation not in ("sigmoid", "softmax"):
            raise ValueError(f"activation must be sigmoid or softmax, not {activation!r}")
        self.nets = nn.ModuleList(nets)
        self.activation = activation

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([net(image) for net in self.nets])
        if self.activation == "sigmoid":  # log(mean p) - log(mean (1 - p)), the M cancels
            return (torch.logsumexp(nn.functional.logsigmoid(logits), dim=0)
                    - torch.logsumexp(nn.functional.logsigmoid(-logits), dim=0))
        log_probabilities = torch.log_softmax(logits, dim=2)
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.nets))


def check_exportable(models: list[TrainedModel], source: str | Path) -> None:
    """Stop when one network cannot give the fold ensemble's predictions exactly."""
    first = models[0]
    fix = (f"-> predict with the multirun itself (ckpt_path={source}), or export each fold run "
           "on its own (radiogenomics export <multirun>/<job> ...)")
    if first.is_segmenter and first.module.hparams.get("patch_size"):
        raise CheckpointError(
            f"{source}: its segmenters predict by sliding windows, whose logits are blended "
            "before the members' probabilities are averaged: no single network gives that "
            f"{fix}")
    if any(model.slicing != first.slicing for model in models):
        raise CheckpointError(f"{source}: its members sample slices differently "
                              f"({', '.join(str(m.slicing) for m in models)}) {fix}")
    if first.slicing is not None and first.slicing.aggregate != "mean":
        raise CheckpointError(
            f"{source}: its members score patients by a {first.slicing.aggregate} of their "
            "slices, which a network of averaged slice probabilities does not reproduce "
            f"{fix}")


def ensemble_section(models: list[TrainedModel], source: str | Path,
                     calibration: Path | None) -> dict[str, Any]:
    """The manifest's ``ensemble``: members, how they are combined, what predict.py audits."""
    return {
        "source": str(Path(source).expanduser().resolve()),
        "members": [{"run": str(m.run_dir.resolve()), "checkpoint": str(m.checkpoint.resolve()),
                     "fold": saved_info(m.run_dir).get("fold"),
                     "git_commit": saved_info(m.run_dir).get("git_commit"),
                     "folder": f"{MEMBERS_FOLDER}/{m.run_dir.name}"} for m in models],
        "combination": "the network runs every member's net on its input and returns the "
                       "logits of their mean probability (logit of the mean sigmoid, or log "
                       "of the mean softmax): its sigmoid or softmax is the mean of the "
                       "members' probabilities, as predict.py averages a multirun's folds",
        "leakage_audit": f"predict.py reads each member's splits.json and run_info.json "
                         f"({MEMBERS_FOLDER}/<job>/) and flags any predicted patient that "
                         "any member trained or validated on; config.yaml, run_info.json and "
                         "splits.json beside this manifest are the first member's",
        "calibration": calibration and {
            "file": calibration.name,
            "applied": "predict.py applies it to the exported ensemble's probability, as to "
                       "the multirun's (calibrate=false turns it off)"},
    }
