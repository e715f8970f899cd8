"""Every Lightning callback of the project.

Those that let a run survive interruption and careless use: a checkpoint on SIGTERM, exact
resumption, a clear stop when training diverges, the data setup in every checkpoint.
``conf/callbacks/resume.yaml`` turns on the first two (part of ``callbacks=default``); train.py
always adds ``SyncEpochMetrics`` (DDP), ``EpochSeed`` (when the config has a seed),
``DivergenceGuard`` and ``DataSetupRecord``. A run that was pre-empted or killed is resumed
with the same command plus ``ckpt_path=last`` and ``hydra.run.dir=<its run directory>``.

``OutOfFoldPredictions`` writes a fold's validation predictions for the cross-validation
summary (``radiogenomics.cv``); ``InputSamples`` shows W&B and TensorBoard what the network is
fed.
"""

from __future__ import annotations

import logging
import random
import signal
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torchmetrics import MaxMetric, MinMetric

from radiogenomics import interrupt
from radiogenomics.evaluation.aggregation import aggregate_by_patient
from radiogenomics.evaluation.plots import plot_input_samples
from radiogenomics.evaluation.report import log_figures, takes_images, write_classification_report

log = logging.getLogger(__name__)

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
"""Exit status of a run stopped by SIGTERM (what a shell reports for a process it killed)."""
OOF_FILE = "val_predictions.csv"
"""A fold's out-of-fold predictions in its run directory (`OutOfFoldPredictions`)."""


class PreemptionCheckpoint(Callback):
    """On SIGTERM (cluster pre-emption, ``kill``, ``scancel``) save ``last.ckpt``, then exit.

    Lightning turns SIGTERM into a ``SIGTERMException`` at the next batch boundary, so the
    saved state is consistent (weights, optimiser, loops, callbacks). The process then exits
    with status 143, so that ``train.py && next-step`` does not go on with an unfinished
    model. Only training is checkpointed (a SIGTERM while testing leaves ``last.ckpt`` as
    it is). Ctrl-C while training does the same at the next batch boundary and exits with
    status 130 (see ``radiogenomics.interrupt``; a second Ctrl-C stops at once).
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.filename = filename

    def path(self, trainer: pl.Trainer) -> Path:
        """Where the checkpoint goes: ``dirpath``, else ``<default_root_dir>/checkpoints``."""
        folder = self.dirpath or Path(trainer.default_root_dir) / "checkpoints"
        return folder / self.filename

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        interrupt.defer(True)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if interrupt.requested():
            # Lightning's own pre-emption path: stop where SIGTERM stops, in a state it resumes
            trainer._signal_connector.received_sigterm = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        interrupt.defer(False)
        if interrupt.requested():  # Ctrl-C in the last validation: training is saved, stop
            log.warning("Ctrl-C: training finished and saved; stopping before testing")
            raise interrupt.UserInterrupt

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        interrupt.defer(False)
        if not isinstance(exception, SIGTERMException):
            return
        signal_name = "Ctrl-C" if interrupt.requested() else "SIGTERM"
        exception.code = interrupt.EXIT_INTERRUPTED if interrupt.requested() else SIGTERM_EXIT_CODE
        if trainer.state.fn != TrainerFn.FITTING:
            log.warning("%s while %s: nothing saved", signal_name, trainer.state.fn)
            return
        path = self.path(trainer)
        trainer.save_checkpoint(path)
        log.warning("%s at epoch %d, step %d: saved %s; resume with the same command plus "
                    "ckpt_path=last and the same hydra.run.dir", signal_name,
                    trainer.current_epoch, trainer.global_step, path)


class ResumeState(Callback):
    """Keep in every checkpoint what Lightning leaves out, so that a resumed run goes on exactly.

    That is the global random states (torch, CUDA, numpy, Python: shuffling, dropout,
    augmentation draw the same numbers as in the run that was not interrupted) and the
    best-so-far trackers of the LightningModule (``MaxMetric``/``MinMetric``, e.g.
    ``val/auc_best``, which modules reset when training starts). The random states matter
    for the rest of an epoch interrupted in its middle (SIGTERM): each new epoch is seeded
    by ``EpochSeed``, so that with ``trainer.deterministic=true`` a run resumed from an
    end-of-epoch checkpoint ends with the same weights and metrics, DataLoader workers
    included. Everything is stored as tensors and numbers: checkpoints still load with
    ``torch.load(weights_only=True)``.
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


_WHAT_TO_TRY = ("lower the learning rate (model.optimizer.lr), check the inputs for NaN/inf "
                "values or extreme intensities, clip gradients (trainer.gradient_clip_val=1.0), "
                "or use 32-bit precision (trainer.precision=32-true)")


def _non_finite(value: Any) -> bool:
    tensor = torch.as_tensor(value)
    return tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())


class DivergenceGuard(Callback):
    """Stop training with a ``TrainingError`` as soon as it diverges, before a bad checkpoint.

    A NaN or infinite training loss is caught before its backward pass (the weights are
    still those of the previous step) and non-finite gradients before the optimiser step
    (except with 16-bit mixed precision, whose gradient scaler skips those steps by design).
    After each validation and training epoch, before the checkpoint callbacks run (Lightning
    runs them last), the logged losses, the monitored metric and the weights are checked:
    neither the best ``epoch_*.ckpt`` nor ``last.ckpt`` is ever written from a diverged
    state, so ``last.ckpt`` stays the last healthy epoch. train.py always adds this callback.
    """

    def __init__(self, monitor: str | None = None) -> None:
        self.monitor = monitor

    @staticmethod
    def _where(trainer: pl.Trainer, batch_idx: int | None = None) -> str:
        where = f"epoch {trainer.current_epoch}"
        if batch_idx is not None:
            where += f", batch {batch_idx}"
        return where + f" (global step {trainer.global_step})"

    def _stop(self, trainer: pl.Trainer, what: str, batch_idx: int | None = None) -> None:
        from radiogenomics.errors import TrainingError

        raise TrainingError(
            f"training diverged at {self._where(trainer, batch_idx)}: {what}; no checkpoint was "
            f"written from this state (checkpoints/last.ckpt, if any, is the last healthy epoch) "
            f"-> {_WHAT_TO_TRY}")

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: torch.Tensor) -> None:
        if _non_finite(loss.detach()):
            self._stop(trainer, f"the training loss is {float(loss.detach().float().mean())}",
                       getattr(self, "_batch_idx", None))

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if "16-mixed" in str(trainer.precision):  # the grad scaler skips such steps itself
            return
        for name, param in pl_module.named_parameters():
            if param.grad is not None and _non_finite(param.grad):
                self._stop(trainer, f"the gradient of {name} holds NaN or infinite values",
                           getattr(self, "_batch_idx", None))

    def _check_epoch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        monitor = self.monitor or getattr(pl_module, "hparams", {}).get("monitor")
        watched = {monitor, f"{monitor}_best"} if monitor else set()
        bad = {name: float(torch.as_tensor(value).float().mean())
               for name, value in trainer.callback_metrics.items()
               if (name.endswith("loss") or name in watched) and _non_finite(value)}
        if bad:
            self._stop(trainer, "non-finite metrics " + ", ".join(
                f"{name}={value}" for name, value in sorted(bad.items())))
        for name, param in pl_module.named_parameters():
            if _non_finite(param.detach()):
                self._stop(trainer, f"the weights of {name} hold NaN or infinite values")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check_epoch(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_epoch(trainer, pl_module)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of training epoch `epoch` of a run seeded with `seed` (a 32-bit integer)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(epoch)]).generate_state(1)[0])


class EpochSeed(Callback):
    """Draw each training epoch's random numbers from a seed of (run seed, epoch).

    At the start of every training epoch the torch (CPU and CUDA), numpy and Python random
    states are seeded with ``epoch_seed(seed, epoch)``, and the epoch's training batches are
    drawn by a new iterator with new DataLoader workers, whose seeds (torch derives them
    from the main process's state; Lightning's ``seed_everything(workers=True)`` seeds numpy
    and Python in each worker from them) are thus a function of (seed, epoch, worker id).
    Shuffling, augmentation and dropout of an epoch then do not depend on what happened
    before it in this process: a run resumed from an end-of-epoch checkpoint (SIGKILL, a
    crash) draws the same numbers as the run that was never stopped, with DataLoader
    workers too. train.py adds it when the config has a ``seed``.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed = epoch_seed(self.seed, trainer.current_epoch)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # every device too
        # (Lightning and torch internals below, checked: without them only the seeding holds)
        fit_loop = trainer.fit_loop
        combined = getattr(fit_loop, "_combined_loader", None)
        fetcher = getattr(fit_loop, "_data_fetcher", None)
        if combined is None or fetcher is None:
            return
        # persistent workers keep the random state of the epoch they were started in: stop
        # them, so that this epoch's iterator starts new ones seeded from the state above
        for loader in getattr(combined, "flattened", []):
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
                loader._iterator = None
        # Lightning makes the epoch's iterator after this hook, except in the first epoch a
        # process trains (made, and a batch fetched, before the hook): make that one again
        lightning_iterates = (trainer.current_epoch > 0 and not fit_loop.is_resuming
                              and not fit_loop.epoch_loop.restarting)
        if not lightning_iterates:
            iter(fetcher)


class DataSetupRecord(Callback):
    """Store the run's data setup (cohort, split, inputs, target) in every checkpoint.

    ``radiogenomics.runs.check_checkpoint`` compares it with the setup of a run that resumes
    from the checkpoint, before any training. train.py always adds this callback.
    """

    KEY = "data_setup"

    def __init__(self, setup: dict[str, Any]) -> None:
        self.setup = dict(setup)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[self.KEY] = dict(self.setup)


class SyncEpochMetrics(Callback):
    """Compute the epoch's logged metrics on every process before a progress bar reads them.

    Metrics logged as torchmetrics objects are synchronised across processes when first
    computed. At the end of a training epoch the progress bar, which lives on process 0 only,
    computes them before the LightningModule's own epoch-end hook does, so the processes
    would enter different collectives (a crash with gloo, a hang with NCCL; Lightning issue
    #21264). This callback, first in the list, computes them on every process beforehand.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            trainer.callback_metrics  # noqa: B018 (computing the metrics is the point)


class InputSamples(Callback):
    """At the first training batch of epoch 0, a few axial slices of each sequence of its
    first `samples` inputs, as the network receives them (preprocessed and augmented):
    ``<output_dir>/figures/input_samples.png``, sent as ``train/input_samples`` to W&B and
    TensorBoard. Nothing is drawn when no logger takes images."""

    def __init__(self, output_dir: str | None = None, samples: int = 4) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.samples = samples

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if (batch_idx or trainer.current_epoch or not trainer.is_global_zero
                or not isinstance(batch, dict) or not torch.is_tensor(batch.get("image"))
                or not any(takes_images(logger) for logger in trainer.loggers)):
            return
        images = batch["image"][:self.samples].detach().float().cpu().numpy()
        sequences = list(getattr(trainer.datamodule, "sequences", ()))
        if len(sequences) != images.shape[1]:
            sequences = [f"channel {c}" for c in range(images.shape[1])]
        names = [str(name) for name in batch.get("id", [])][:self.samples]
        path = plot_input_samples(
            images, sequences, Path(self.output_dir or trainer.default_root_dir) / "figures"
            / "input_samples.png", names, title="First training batch (preprocessed, augmented)")
        log_figures({"input_samples": path}, trainer.loggers, "train", trainer.global_step)


class OutOfFoldPredictions(Callback):
    """After testing, predict the fold's validation patients with the tested (best) weights.

    Writes ``<output_dir>/val_predictions.csv`` (``id, fold, label, probability``; one
    ``probability_<k>`` column per class for multiclass targets) and a validation report
    (``val_report/``: ROC, calibration, confusion matrix) whose figures go to every logger
    that takes images (W&B, TensorBoard). Slice outputs of 2D models are aggregated per
    patient as the model does (its ``aggregate`` setting: mean or vote).
    Only the global-zero process predicts, over every validation patient.
    """

    def __init__(self, output_dir: str | None = None, report: bool = True) -> None:
        super().__init__()
        self.output_dir = output_dir
        self.report = report

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if (not trainer.is_global_zero or not hasattr(pl_module, "probabilities")
                or not getattr(datamodule, "val_cases", None)
                or getattr(datamodule, "target", None) == "seg"):  # masks: no class labels
            return
        ids, labels, probabilities = predict(pl_module, datamodule.val_dataloader(), trainer)
        out = Path(self.output_dir or trainer.default_root_dir)
        table = prediction_table(ids, labels, probabilities, getattr(datamodule, "fold", None))
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / OOF_FILE, index=False)
        log.info("validation predictions of %d patients: %s", len(table), out / OOF_FILE)
        if self.report:
            target = getattr(datamodule, "target", "label")
            report = write_classification_report(
                out / "val_report", labels, probabilities, target,
                title=f"Fold {table['fold'].iloc[0]} validation (out-of-fold)")
            log_figures(report.figures, trainer.loggers, "val_oof", trainer.global_step)


def predict(module: pl.LightningModule, loader: Any, trainer: pl.Trainer
            ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Patient ids, labels and probabilities (N, 1 or K) of every item of `loader`."""
    was_training = module.training
    module.eval()
    ids: list[str] = []
    labels: dict[str, int] = {}
    outputs = []
    with torch.inference_mode(), trainer.strategy.precision_plugin.forward_context():
        for batch in loader:
            logits = module(batch["image"].to(module.device))
            outputs.append(module.probabilities(logits).float().cpu())
            ids += list(batch["id"])
            labels.update(zip(batch["id"], batch["label"].tolist()))
    module.train(was_training)
    how = module.hparams.get("aggregate", "mean")
    by_patient = aggregate_by_patient(ids, torch.cat(outputs), how)
    patients = sorted(by_patient)
    scores = torch.stack([by_patient[p] for p in patients]).numpy()
    return patients, np.array([labels[p] for p in patients]), scores.reshape(len(patients), -1)


def prediction_table(ids: list[str], labels: np.ndarray, probabilities: np.ndarray,
                     fold: int | None) -> pd.DataFrame:
    """``id, fold, label, probability`` (binary) or ``probability_<k>`` columns (multiclass)."""
    table = pd.DataFrame({"id": ids, "fold": fold, "label": labels.astype(int)})
    if probabilities.shape[1] == 1:
        table["probability"] = probabilities[:, 0]
    else:
        for k in range(probabilities.shape[1]):
            table[f"probability_{k}"] = probabilities[:, k]
    return table
