"""Interrupted runs: SIGTERM saves a checkpoint, SIGKILL loses at most an epoch, and a
resumed run ends where the uninterrupted one does; killed cache writes leave nothing half-done.
"""

from __future__ import annotations

import csv
import functools
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import open_dict

from radiogenomics.callbacks import SIGTERM_EXIT_CODE
from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.train import train

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 2
"""4 training patients (fold 0 of 2 of the tiny cohort's 8) in batches of 2."""
SMALL_NET = "model.net.widen_factor=0.25"
"""A ResNet-10 a sixteenth the size: 11 MB checkpoints instead of 170 MB."""


class SigtermAfterStep(Callback):
    """Send this process SIGTERM after training step `step`, as a cluster scheduler would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def cache_dir(tiny_cohort: Path) -> Path:
    return tiny_cohort.parent / "reliability-cache"


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_sigterm_saves_last_checkpoint_mid_epoch_and_the_run_resumes(train_cfg,
                                                                     cache_dir) -> None:
    overrides = ["callbacks=default", "~callbacks.progress_bar", "trainer.max_epochs=2",
                 "test=false", f"data.cache_dir={cache_dir}", SMALL_NET]
    cfg = train_cfg(*overrides)
    with open_dict(cfg):
        cfg.callbacks.sigterm = {"_target_": f"{__name__}.SigtermAfterStep", "step": 1}
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    assert stopped.value.code == SIGTERM_EXIT_CODE
    run = Path(cfg.paths.output_dir)
    assert checkpoint(run)["global_step"] == 1  # saved in the middle of the first epoch
    _, objects = train(train_cfg(*overrides, "ckpt_path=last"))
    assert objects["trainer"].global_step == 2 * STEPS_PER_EPOCH
    assert checkpoint(run)["global_step"] == 2 * STEPS_PER_EPOCH


def write_then_die(cache: PreprocessCache, case: dict, arrays: dict) -> None:
    """In a forked child: store a cache entry, killed by SIGKILL half-way through image.npy."""

    def save_half_then_die(path: Path, array: np.ndarray) -> None:
        with open(path, "wb") as handle:
            np.lib.format.write_array(handle, array)
        os.truncate(path, os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)

    np.save = save_half_then_die  # the child's numpy only
    cache.write(case, arrays)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_preparation_killed_while_writing_leaves_no_entry_and_is_redone(tiny_cohort,
                                                                        tmp_path) -> None:
    case = load_cohort("synthetic", tiny_cohort)[0]
    cache = PreprocessCache(tmp_path / "cache", PreprocessConfig(sequences=("T1wCE",),
                                                                 spatial_size=(8, 8, 8)))
    child = multiprocessing.get_context("fork").Process(
        target=write_then_die, args=(cache, case, cache.compute(case)))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    leftovers = [p for p in cache.root.iterdir() if p.name.startswith(".")]
    assert leftovers and (leftovers[0] / "image.npy").is_file()  # the half-written file
    assert not cache.has(case)
    report = cache.prepare([case], progress=False)
    assert report.prepared == [case["id"]] and not report.failed
    assert cache.load(case)["image"].shape == (1, 8, 8, 8)


def train_command(tiny_cohort: Path, cache_dir: Path, run: Path, *overrides: str,
                  workers: int | None = 0) -> list[str]:
    """train.py on the tiny cohort; `workers=None`: the default number of DataLoader workers."""
    loader = [] if workers is None else [f"data.num_workers={workers}"]
    return [sys.executable, "train.py", f"data.root={tiny_cohort}", f"data.cache_dir={cache_dir}",
            "data.synthetic=null", "data.spatial_size=[16,16,16]", "data.batch_size=2",
            "data.n_folds=2", *loader, "data.prepare_workers=0", "trainer=cpu",
            "trainer.deterministic=true", "trainer.max_epochs=4", "logger=csv",
            "~callbacks.progress_bar", "test=false", SMALL_NET, f"hydra.run.dir={run}", *overrides]


class SigkillAtStep(Callback):
    """SIGKILL this process when training step `step` starts: no handler runs, nothing is
    saved (an out-of-memory kill, a node failure, a hard time limit)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def start_and_signal(command: list[str], run: Path, signum: int) -> subprocess.Popen:
    """Start a training and send it `signum` once its first epoch is checkpointed."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "last.ckpt").exists():
        assert process.poll() is None and time.monotonic() < deadline, "training never saved"
        time.sleep(0.05)
    process.send_signal(signum)
    process.wait(timeout=300)
    return process


def last_epoch_metrics(run: Path) -> dict[str, str]:
    with open(run / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    last = max(int(row["epoch"]) for row in rows if row["epoch"])
    merged: dict[str, str] = {}
    for row in rows:
        if row["epoch"] == str(last):
            merged.update({k: v for k, v in row.items() if v and k != "step"})
    return merged


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_to_the_same_weights_and_metrics(tiny_cohort, cache_dir,
                                                                      tmp_path) -> None:
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = subprocess.run(train_command(tiny_cohort, cache_dir, reference), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = start_and_signal(train_command(tiny_cohort, cache_dir, resumed), resumed,
                              signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert checkpoint(resumed)["epoch"] < 3  # killed before the end
    again = subprocess.run(train_command(tiny_cohort, cache_dir, resumed, "ckpt_path=last"),
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert last_epoch_metrics(resumed) == last_epoch_metrics(reference)
    expected, actual = checkpoint(reference)["state_dict"], checkpoint(resumed)["state_dict"]
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)


@pytest.mark.slow
def test_sigterm_to_train_py_exits_143_with_a_checkpoint_that_resumes(tiny_cohort, cache_dir,
                                                                      tmp_path) -> None:
    run = tmp_path / "run"
    stopped = start_and_signal(train_command(tiny_cohort, cache_dir, run), run, signal.SIGTERM)
    assert stopped.returncode == SIGTERM_EXIT_CODE
    saved = checkpoint(run)["global_step"]
    assert STEPS_PER_EPOCH <= saved < 4 * STEPS_PER_EPOCH
    again = subprocess.run(train_command(tiny_cohort, cache_dir, run, "ckpt_path=last"),
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert checkpoint(run)["global_step"] == 4 * STEPS_PER_EPOCH


def test_a_resumed_epoch_with_no_batch_left_ends_without_train_metrics() -> None:
    """Resuming from a checkpoint taken after an epoch's last batch trains no batch in it."""
    from radiogenomics.models.classifier import ClassificationModule
    from radiogenomics.models.nets.resnet3d import ResNet3D
    from radiogenomics.models.nets.series_resnet import SeriesResNet
    from radiogenomics.models.series_classifier import SeriesModule

    ClassificationModule(ResNet3D(in_channels=1), torch.optim.Adam).on_train_epoch_end()
    SeriesModule(SeriesResNet(), torch.optim.Adam).on_train_epoch_end()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [None, 2])
def test_sigkill_mid_epoch_then_resume_ends_as_the_run_never_stopped(tiny_cohort, cache_dir,
                                                                     tmp_path, workers) -> None:
    """With the default settings (DataLoader workers, persistent between epochs), a run
    killed mid-epoch and resumed from its last end-of-epoch checkpoint logs the same metrics,
    epoch by epoch, and ends with the same weights as the run that was never stopped."""
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    command = functools.partial(train_command, tiny_cohort, cache_dir, workers=workers)
    done = subprocess.run(command(reference), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # step 5: the second batch of the third epoch (2 batches an epoch)
    kill = [f"+callbacks.sigkill._target_={__name__}.SigkillAtStep", "+callbacks.sigkill.step=5"]
    killed = subprocess.run(command(resumed, *kill), cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert checkpoint(resumed)["epoch"] == 1  # the last end of epoch before the kill
    again = subprocess.run(command(resumed, "ckpt_path=last"), cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert metric_rows(resumed) == metric_rows(reference)
    expected, actual = checkpoint(reference)["state_dict"], checkpoint(resumed)["state_dict"]
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
