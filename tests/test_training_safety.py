"""Careless use loses nothing: a diverging run stops clearly without a diverged checkpoint, a
resumed run refuses a checkpoint of other data and keeps its metrics history, and a model
given data of the wrong dimensionality fails before any work."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import open_dict
from torch import nn

from radiogenomics.errors import CheckpointError, ConfigError, TrainingError
from radiogenomics.train import train

SMALL_NET = "model.net.widen_factor=0.25"
CHECKPOINTED = ["callbacks=default", "~callbacks.progress_bar", "~callbacks.oof_predictions",
                SMALL_NET]


class NaNAfter(nn.Module):
    """A tiny 3D classifier whose output turns NaN from its `after`-th forward pass in
    training mode on."""

    def __init__(self, in_channels: int = 2, after: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, 2, 3)
        self.head = nn.Linear(2, 1)
        self.after = after
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.conv(x).mean(dim=(2, 3, 4)))
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out


def best_checkpoints(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").glob("epoch_*.ckpt"))


def test_a_diverging_learning_rate_stops_with_a_clear_error_and_no_best_checkpoint(
        train_cfg) -> None:
    cfg = train_cfg(*CHECKPOINTED, "model.optimizer.lr=1e10", "model.scheduler=null",
                    "trainer.max_epochs=3")
    with pytest.raises(TrainingError) as stopped:
        train(cfg)
    message = str(stopped.value)
    assert "epoch 0" in message and "batch" in message
    assert "learning rate" in message and "gradient_clip_val" in message
    run = Path(cfg.paths.output_dir)
    assert best_checkpoints(run) == []
    assert not (run / "checkpoints" / "last.ckpt").exists()


def test_a_net_turning_nan_in_the_second_epoch_leaves_the_healthy_first_epoch_as_last(
        train_cfg) -> None:
    cfg = train_cfg(*CHECKPOINTED, "trainer.max_epochs=3", "model.scheduler=null")
    with open_dict(cfg):
        cfg.model.net = {"_target_": f"{__name__}.NaNAfter", "in_channels": 2, "after": 2}
    with pytest.raises(TrainingError, match="epoch 1, batch 0"):
        train(cfg)
    run = Path(cfg.paths.output_dir)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values()
               if v.is_floating_point())
    assert all(name == "epoch_000.ckpt" for name in best_checkpoints(run))


class PoisonAtEpochEnd(pl.Callback):
    """Fill a weight with NaN after the last training step of epoch `epoch` (an optimiser
    step that overflowed): the next thing to run is validation, then the checkpoints."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           *args: object) -> None:
        if trainer.current_epoch == self.epoch and trainer.fit_loop.epoch_loop.done:
            next(pl_module.parameters()).data.fill_(float("nan"))


def test_weights_diverged_in_the_last_step_of_an_epoch_write_no_checkpoint(train_cfg) -> None:
    cfg = train_cfg(*CHECKPOINTED, "trainer.max_epochs=3")
    with open_dict(cfg):
        cfg.callbacks.poison = {"_target_": f"{__name__}.PoisonAtEpochEnd", "epoch": 1}
    with pytest.raises(TrainingError, match="epoch 1") as stopped:
        train(cfg)
    assert "val/loss=nan" in str(stopped.value)
    run = Path(cfg.paths.output_dir)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 0
    assert best_checkpoints(run) in ([], ["epoch_000.ckpt"])


def test_resuming_with_another_fold_or_sequence_order_names_each_difference(train_cfg) -> None:
    cfg = train_cfg(*CHECKPOINTED, "test=false")
    train(cfg)
    with pytest.raises(CheckpointError) as refused:
        train(train_cfg(*CHECKPOINTED, "test=false", "ckpt_path=last", "data.fold=1",
                        "data.sequences=[FLAIR,T1wCE]", "trainer.max_epochs=2"))
    message = str(refused.value)
    assert "data.fold: 0 in the checkpoint, 1 now" in message
    assert "data.sequences: ['T1wCE', 'FLAIR'] in the checkpoint, ['FLAIR', 'T1wCE'] now" \
        in message
    assert "data.n_folds" not in message  # only what differs


def test_resuming_with_another_split_grid_cohort_or_target_is_refused(train_cfg,
                                                                     tmp_path) -> None:
    from radiogenomics import config as rc
    from radiogenomics.runs import check_checkpoint, data_setup

    cfg = train_cfg(*CHECKPOINTED, "test=false")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["data_setup"] == data_setup(cfg.data)
    model = rc.instantiate(cfg.model)
    check_checkpoint(last, model, data_setup(cfg.data))  # the same setup: accepted
    for override in ("data.split_seed=7", "data.n_folds=3", "data.spatial_size=[8,8,8]",
                     "data.spacing=[2,2,2]", f"data.root={tmp_path}", "data.layout=rsna",
                     "model.target=grade"):
        other = train_cfg(*CHECKPOINTED, override).data
        with pytest.raises(CheckpointError, match=override.split("=")[0].split(".")[-1]):
            check_checkpoint(last, model, data_setup(other))


def read_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_a_finished_run_rerun_with_ckpt_path_last_keeps_its_metrics_and_succeeds(
        train_cfg) -> None:
    overrides = [*CHECKPOINTED, "logger=csv", "trainer.max_epochs=2"]
    cfg = train_cfg(*overrides)
    first, _ = train(cfg)
    run = Path(cfg.paths.output_dir)
    before = read_rows(run)
    assert {r["epoch"] for r in before if r.get("val/auc")} == {"0", "1"}
    again, _ = train(train_cfg(*overrides, "ckpt_path=last"))
    after = read_rows(run)
    assert {r["epoch"] for r in after if r.get("val/auc")} == {"0", "1"}
    assert [r for r in after if not r.get("test/auc")] == [r for r in before
                                                            if not r.get("test/auc")]
    assert len([r for r in after if r.get("test/auc")]) == 1
    assert again["test/auc"] == first["test/auc"]


def test_a_new_run_in_the_same_folder_starts_its_metrics_again(train_cfg) -> None:
    overrides = [*CHECKPOINTED, "logger=csv", "test=false"]
    cfg = train_cfg(*overrides, "trainer.max_epochs=2")
    train(cfg)
    train(train_cfg(*overrides))  # no ckpt_path: from scratch, one epoch
    rows = read_rows(Path(cfg.paths.output_dir))
    assert {r["epoch"] for r in rows if r["epoch"]} == {"0"}
    assert len([r for r in rows if not r["epoch"]]) == 1  # the learning rate, once


@pytest.mark.parametrize(("overrides", "dims"), [
    (["model=vgg16", "data=synthetic"], "2D network"),
    (["model=attention_vgg", "data=synthetic"], "2D network"),
    (["model=series_resnet", "data=synthetic"], "2D network"),
    (["model=cnn3d", "data=slices"], "3D network"),
])
def test_a_model_on_data_of_the_other_dimensionality_fails_before_any_work(
        train_cfg, tmp_path, overrides, dims) -> None:
    cfg = train_cfg(*overrides, "data.synthetic=null", f"data.root={tmp_path / 'absent'}")
    with pytest.raises(ConfigError, match=dims) as refused:
        train(cfg)
    assert "data=" in str(refused.value)
    assert not (tmp_path / "absent").exists() and not (tmp_path / "cache").exists()


def test_unet2d_and_a_3d_multiscale_net_take_volume_data() -> None:
    """unet2d segments volumes slice by slice; multiscale is 2D or 3D (model.net.spatial_dims)."""
    from radiogenomics.data.datamodule import MRIDataModule
    from radiogenomics.models.classifier import ClassificationModule
    from radiogenomics.models.compat import check_model_fits_data
    from radiogenomics.models.nets.multiscale import MultiScaleCNN
    from radiogenomics.models.nets.unet2d import UNet2D
    from radiogenomics.models.segmenter import SegmentationModule

    segmenter = SegmentationModule(UNet2D(in_channels=1, out_channels=4), torch.optim.Adam,
                                   output="labels")
    volumes = MRIDataModule(root="absent", layout="synthetic", target="seg",
                            sequences=["FLAIR"], spatial_size=[8, 8, 8])
    check_model_fits_data(segmenter, volumes)
    classifier = ClassificationModule(MultiScaleCNN(in_channels=1, spatial_dims=3),
                                      torch.optim.Adam)
    check_model_fits_data(classifier, volumes)


def test_an_input_too_small_for_the_network_is_a_config_error_naming_the_size() -> None:
    from omegaconf import OmegaConf

    from radiogenomics import config as rc
    from radiogenomics.errors import ConfigError
    from radiogenomics.models.compat import check_input_size
    from tests.conftest import compose_train

    cfg = compose_train(["model=efficientnet3d", "data.spatial_size=[16,16,16]"])
    model = rc.instantiate(cfg.model)
    with pytest.raises(ConfigError, match=r"data.spatial_size.*too small"):
        check_input_size(model, cfg.data)
    check_input_size(model, OmegaConf.merge(cfg.data, {"spatial_size": [32, 32, 32]}))
