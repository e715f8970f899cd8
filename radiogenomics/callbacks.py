"""Callbacks that let a run survive interruption: a checkpoint on SIGTERM, exact resumption.

``conf/callbacks/resume.yaml`` turns both on (part of ``callbacks=default``). A run that was
pre-empted or killed is resumed with the same command plus ``ckpt_path=last`` and
``hydra.run.dir=<its run directory>``.
"""

from __future__ import annotations

import logging
import random
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchmetrics import MaxMetric, MinMetric

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
"""Exit status of a run stopped by SIGTERM (what a shell reports for a process it killed)."""


class PreemptionCheckpoint(Callback):
    """On SIGTERM (cluster pre-emption, ``kill``, ``scancel``) save ``last.ckpt``, then exit.

    Lightning turns SIGTERM into a ``SIGTERMException`` at the next batch boundary, so the
    saved state is consistent (weights, optimiser, loops, callbacks). The process then exits
    with status 143, so that ``train.py && next-step`` does not go on with an unfinished
    model. Only training is checkpointed (a SIGTERM while testing leaves ``last.ckpt`` as
    it is). Ctrl-C (SIGINT) may stop a run inside a step and saves nothing: the last
    epoch's checkpoint stays the one to resume from.
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.filename = filename

    def path(self, trainer: pl.Trainer) -> Path:
        """Where the checkpoint goes: ``dirpath``, else ``<default_root_dir>/checkpoints``."""
        folder = self.dirpath or Path(trainer.default_root_dir) / "checkpoints"
        return folder / self.filename

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        exception.code = SIGTERM_EXIT_CODE
        if trainer.state.fn != TrainerFn.FITTING:
            log.warning("SIGTERM while %s: nothing saved", trainer.state.fn)
            return
        path = self.path(trainer)
        trainer.save_checkpoint(path)
        log.warning("SIGTERM at epoch %d, step %d: saved %s; resume with the same command plus "
                    "ckpt_path=last and the same hydra.run.dir", trainer.current_epoch,
                    trainer.global_step, path)


class ResumeState(Callback):
    """Keep in every checkpoint what Lightning leaves out, so that a resumed run goes on exactly.

    That is the global random states (torch, CUDA, numpy, Python: shuffling, dropout,
    augmentation draw the same numbers as in the run that was not interrupted) and the
    best-so-far trackers of the LightningModule (``MaxMetric``/``MinMetric``, e.g.
    ``val/auc_best``, which modules reset when training starts). With
    ``trainer.deterministic=true`` and ``data.num_workers=0`` a run resumed from an
    end-of-epoch checkpoint ends with the same weights and metrics. Everything is stored as
    tensors and numbers: checkpoints still load with ``torch.load(weights_only=True)``.
    """

    def __init__(self) -> None:
        self._module: pl.LightningModule | None = None
        self._best_to_restore: dict[str, torch.Tensor] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._module = pl_module

    def _trackers(self) -> dict[str, MaxMetric | MinMetric]:
        if self._module is None:
            return {}
        return {name: module for name, module in self._module.named_modules()
                if isinstance(module, MaxMetric | MinMetric)}

    def state_dict(self) -> dict[str, Any]:
        _, keys, position, has_gauss, gauss = np.random.get_state()
        version, python_state, python_gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": [version, list(python_state), python_gauss],
            "best": {name: tracker.compute().detach().cpu()
                     for name, tracker in self._trackers().items() if tracker.update_count},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        numpy_state = state_dict["numpy"]
        np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32),
                             numpy_state["position"], numpy_state["has_gauss"],
                             numpy_state["gauss"]))
        version, python_state, python_gauss = state_dict["python"]
        random.setstate((version, tuple(python_state), python_gauss))
        self._best_to_restore = dict(state_dict.get("best", {}))

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the module's on_train_start reset, before its first update of the run
        if trainer.sanity_checking or not self._best_to_restore:
            return
        trackers = self._trackers()
        for name, value in self._best_to_restore.items():
            if name in trackers:
                trackers[name].update(value.to(pl_module.device))
        self._best_to_restore = {}
