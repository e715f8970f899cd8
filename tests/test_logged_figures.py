"""Figures reach TensorBoard and W&B: the first training batch, the CV summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from radiogenomics import cv
from radiogenomics.evaluation import plots
from radiogenomics.runs import RUN_CONFIG, RUN_INFO
from radiogenomics.train import train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)


def _images(log_dir: Path) -> dict[str, list]:
    (events,) = {p.parent for p in log_dir.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events), size_guidance={"images": 0})
    accumulator.Reload()
    return {tag: accumulator.Images(tag) for tag in accumulator.Tags()["images"]}


def test_first_training_batch_is_shown_per_sequence_in_tensorboard(train_cfg, tmp_path) -> None:
    cfg = train_cfg("logger=tensorboard", "callbacks=input_samples", "test=false",
                    "data.sequences=[T1wCE,FLAIR]")
    train(cfg)
    figure = tmp_path / "run" / "figures" / "input_samples.png"
    assert figure.is_file()
    images = _images(tmp_path / "run" / "tensorboard")
    (sample,) = images["train/input_samples"]  # once: at the first batch of the first epoch
    assert sample.step == 0 and sample.width > 300


def test_input_samples_name_each_sequence_and_sample() -> None:
    batch = np.random.default_rng(0).normal(size=(3, 2, 12, 12, 10))
    figure = plots.draw_input_samples(batch, ["T1wCE", "FLAIR"], ["00001", "00002", "00003"])
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert [t.split(",")[0] for t in titles] == ["T1wCE"] * 3 + ["FLAIR"] * 3
    assert [ax.get_ylabel() for ax in figure.axes if ax.get_ylabel()] == [
        "00001", "00002", "00003"]
    with pytest.raises(ValueError, match="one channel per sequence"):
        plots.draw_input_samples(batch, ["T1wCE"])


def _fold(sweep: Path, fold: int, logger: dict) -> None:
    run = sweep / str(fold)
    run.mkdir(parents=True)
    (run / RUN_INFO).write_text("{}")
    OmegaConf.save(OmegaConf.create({"data": {"fold": fold}, "logger": logger}), run / RUN_CONFIG)


def _summary(sweep: Path) -> cv.CVSummary:
    figure = plots.plot_cv_summary({"a": [0.7, 0.8]}, "test/auc", {}, sweep / "cv_summary.png")
    empty = pd.DataFrame()
    return cv.CVSummary(empty, empty, empty, {"figure": figure})


def test_cv_summary_figure_goes_to_tensorboard_when_the_folds_used_it(tmp_path) -> None:
    sweep = tmp_path / "sweep"
    for fold in (0, 1):
        _fold(sweep, fold, {"tensorboard": {"_target_": "radiogenomics.loggers."
                                                        "tensorboard_logger"}})
    log_dir = cv.log_to_tensorboard(sweep, _summary(sweep))
    assert log_dir is not None and log_dir.is_relative_to(sweep / "tensorboard")
    (summary,) = _images(log_dir)["cv/summary"]
    assert summary.width > 500

    csv_only = tmp_path / "csv"
    for fold in (0, 1):
        _fold(csv_only, fold, {"csv": {"_target_": "radiogenomics.loggers.CSVLogger"}})
    assert cv.log_to_tensorboard(csv_only, _summary(csv_only)) is None
    assert not (csv_only / "tensorboard").exists()
