"""The classification model zoo: every model trains from its config; nets keep their promises."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from radiogenomics import config as rc
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.readers import load_volume
from radiogenomics.data.series import (
    PLANE_CLASSES,
    SEQUENCE_CLASSES,
    SeriesCache,
    SeriesDataModule,
    SeriesSlicing,
    cut_series,
)
from radiogenomics.data.volume import Volume
from radiogenomics.errors import RadiogenomicsError
from radiogenomics.models.classifier import ClassificationModule
from radiogenomics.models.nets.attention_vgg import AttentionVGG16
from radiogenomics.models.nets.efficientnet3d import EfficientNet3D
from radiogenomics.models.nets.resnet3d import ResNet3D
from radiogenomics.models.nets.series_resnet import SeriesResNet
from radiogenomics.models.nets.vgg import VGG16Classifier
from radiogenomics.models.series_classifier import tag_series
from radiogenomics.train import train
from tests.conftest import compose_train

SLICES = ["data.sequences=[FLAIR,T1wCE,T2w]", "data.spatial_size=[32,32,4]",
          "data.slices_per_case=2", "data.augment=null"]
SERIES = ["data.slices_per_series=2", "data.slice_size=[32,32]", "data.test_split=val"]


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preprocessing cache shared by the models of this module."""
    return tmp_path_factory.mktemp("zoo_cache")


@pytest.fixture
def zoo_cfg(tiny_cohort: Path, zoo_cache: Path, tmp_path: Path):
    """Factory: a train config of one model on the tiny cohort, CPU, one process, no logger.

    Unlike `train_cfg` it sets no volume size, which the series data have not.
    """

    def make(*overrides: str) -> DictConfig:
        base = [f"data.root={tiny_cohort}", f"data.cache_dir={zoo_cache}", "data.synthetic=null",
                "data.batch_size=4", "data.n_folds=2", "data.num_workers=0",
                "data.prepare_workers=0", "trainer=cpu", "trainer.max_epochs=1", "logger=none",
                "callbacks=none", f"paths.root_dir={tmp_path}"]
        cfg = compose_train(base + list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    return make


PATIENT_AND_SLICE = {"val/auc", "val/slice_auc", "test/auc", "test/slice_auc"}


@pytest.mark.parametrize("overrides, logged", [
    (["model=vgg16", *SLICES], PATIENT_AND_SLICE),
    (["model=attention_vgg", *SLICES], PATIENT_AND_SLICE),
    (["model=multiscale", *SLICES], PATIENT_AND_SLICE),
    (["model=multiscale", "data=synthetic", "data.spatial_size=[16,16,16]",
      "model.net.spatial_dims=3", "model.net.kernel_sizes=[5,3,1]"], {"val/auc", "test/auc"}),
    (["model=efficientnet3d", "data.spatial_size=[32,32,32]"], {"val/auc", "test/auc"}),
    (["model=cnn3d", "data.spatial_size=[16,16,16]", "model.channels_last=true"],
     {"val/auc", "test/auc"}),
    (["model=series_resnet", *SERIES],
     {"val/acc_sequence", "val/acc_plane", "val/acc", "val/series_acc_sequence",
      "val/series_acc_plane", "test/acc"}),
    (["model=multitask", "model.net.init_filters=8"],
     {"val/auc", "val/dice", "test/auc", "test/dice"}),
], ids=["vgg16", "attention_vgg", "multiscale", "multiscale_3d", "efficientnet3d",
        "cnn3d_channels_last", "series_resnet", "multitask"])
def test_model_trains_from_its_config(zoo_cfg, overrides, logged):
    cfg = zoo_cfg(*overrides, "debug=fdr")
    metrics, _ = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert logged <= set(metrics)
    assert rc.metric_value(metrics, cfg.optimized_metric) is not None


def test_slice_models_report_patient_and_slice_metrics_and_load_safely(zoo_cfg):
    cfg = zoo_cfg("model=attention_vgg", *SLICES, "callbacks=default", "~callbacks.progress_bar",
                  "+trainer.limit_train_batches=1")
    metrics, _ = train(cfg)
    assert PATIENT_AND_SLICE | {"val/auc_best"} <= set(metrics)
    checkpoint = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt",
                            weights_only=True)
    assert checkpoint["hyper_parameters"]["aggregate"] == "vote"
    assert checkpoint["hyper_parameters"]["loss"] == "focal"


def test_every_model_uses_the_one_default_synthetic_cohort():
    def cohort(*overrides: str) -> tuple:
        data = OmegaConf.to_container(compose_train(list(overrides)).data)  # unresolved
        return data["layout"], data["root"], data["synthetic"]

    default = cohort()
    for model in ("vgg16", "attention_vgg", "multiscale", "series_resnet", "efficientnet3d",
                  "multitask"):
        assert cohort(f"model={model}") == default, model


def test_model_configs_bring_their_data_and_a_data_override_wins():
    assert compose_train(["model=vgg16"]).data._target_.endswith("SliceDataModule")
    assert compose_train(["model=vgg16"]).data.sequences == ["FLAIR"]
    assert compose_train(["model=attention_vgg"]).model.target == "grade"
    assert compose_train(["model=series_resnet"]).data._target_.endswith("SeriesDataModule")
    assert compose_train(["model=vgg16", "data=png"]).data.layout == "png"


def test_vgg16_loads_a_torchvision_layout_state_dict(tmp_path):
    source = VGG16Classifier(in_channels=3)
    state = source.base.state_dict()
    assert "features.0.weight" in state and "features.28.bias" in state and len(state) == 26
    path = tmp_path / "vgg16.pth"
    torch.save({**state, "classifier.0.weight": torch.zeros(4096, 25088)}, path)

    loaded = VGG16Classifier(in_channels=3, pretrained_path=str(path))
    for key, tensor in loaded.base.state_dict().items():
        assert torch.equal(tensor, state[key]), key
    assert not any(p.requires_grad for p in loaded.base.parameters())  # frozen by default
    assert all(p.requires_grad for p in loaded.head.parameters())

    grey = VGG16Classifier(in_channels=1, pretrained_path=str(path), freeze=False)
    first = grey.base.state_dict()["features.0.weight"]
    assert torch.allclose(first, state["features.0.weight"].sum(dim=1, keepdim=True))
    assert all(p.requires_grad for p in grey.base.parameters())


def test_vgg16_weights_of_another_net_are_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(RadiogenomicsError, match="features.0.bias|torchvision"):
        VGG16Classifier(pretrained_path=str(path))


def test_vgg16_without_weights_trains_from_scratch_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        net = VGG16Classifier(in_channels=1)
    assert "no pretrained_path: training VGG16 from scratch" in caplog.text
    assert all(p.requires_grad for p in net.parameters())
    with pytest.warns(UserWarning, match="only the head learns"):
        VGG16Classifier(in_channels=1, freeze=True)


@pytest.mark.parametrize("normalize", ["softmax", "sigmoid"])
def test_attention_vgg_returns_its_attention_maps(normalize):
    net = AttentionVGG16(in_channels=3, normalize=normalize).eval()
    x = torch.randn(2, 3, 64, 64)
    logits, maps = net(x, return_attention=True)
    assert logits.shape == (2, 1) and torch.equal(logits, net(x))
    assert maps["pool3"].shape == (2, 1, 8, 8) and maps["pool4"].shape == (2, 1, 4, 4)
    if normalize == "softmax":
        assert torch.allclose(maps["pool3"].sum(dim=(1, 2, 3)), torch.ones(2))
    else:
        assert ((maps["pool4"] >= 0) & (maps["pool4"] <= 1)).all()
    assert [m.shape for m in net.attention_maps(x)] == [(2, 1, 8, 8), (2, 1, 4, 4)]


def test_efficientnet3d_starts_from_small_logits():
    net = EfficientNet3D(in_channels=2, num_classes=1)
    logits = net(torch.randn(2, 2, 32, 32, 32))
    assert logits.shape == (2, 1) and logits.abs().max() < 2  # MONAI's own init gives ~10


def test_channels_last_changes_the_memory_layout_not_the_output():
    torch.manual_seed(0)
    net = ResNet3D(in_channels=2, dropout=0.0)
    plain = ClassificationModule(copy.deepcopy(net), torch.optim.Adam).eval()
    fast = ClassificationModule(copy.deepcopy(net), torch.optim.Adam, channels_last=True).eval()
    conv = next(m for m in fast.net.modules() if isinstance(m, torch.nn.Conv3d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.randn(2, 2, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-4)


def test_focal_loss_is_an_option_of_the_classifier():
    def loss(**options) -> torch.Tensor:
        module = ClassificationModule(torch.nn.Identity(), torch.optim.Adam, **options)
        return module.criterion(logits.squeeze(-1), target.float())

    logits, target = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([1, 1, 0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.squeeze(-1), target.float())
    assert torch.isclose(loss(loss="focal", focal_gamma=0.0), bce)
    assert loss(loss="focal", focal_gamma=2.0) < bce  # well-classified cases weigh less
    # pos_weight p weighs positives p times as much as negatives under both losses
    weighted = loss(pos_weight=3.0)
    assert torch.isclose(loss(loss="focal", focal_gamma=0.0, pos_weight=3.0), weighted / 4)
    with pytest.raises(ValueError, match="bce|focal"):
        ClassificationModule(torch.nn.Identity(), torch.optim.Adam, loss="dice")


def test_series_labels_come_from_the_cohort(tiny_cohort, zoo_cache):
    datamodule = SeriesDataModule("synthetic", str(tiny_cohort), slices_per_series=2,
                                  slice_size=(32, 32), n_folds=2, cache_dir=str(zoo_cache),
                                  num_workers=0, prepare_workers=0, test_split="val")
    datamodule.prepare_data()
    datamodule.setup()
    case = datamodule.val_cases[0]
    dataset = datamodule.val_dataloader().dataset
    items = [dataset[i] for i in range(8)]  # the first patient: 4 series x 2 slices
    assert {item["id"] for item in items} == {case["id"]}
    assert all(item["image"].shape == (1, 32, 32) for item in items)
    for item in items:
        path = case["images"][SEQUENCE_CLASSES[item["sequence"]]]
        assert PLANE_CLASSES[item["plane"]] == load_volume(path).plane
        assert item["series"] == Path(path).name
    assert sorted({item["sequence"] for item in items}) == [0, 1, 2, 3]


def test_series_cache_reports_every_patient_with_parallel_workers(tiny_cohort, tmp_path):
    cases = load_cohort("synthetic", tiny_cohort, split="train").cases[:3]
    broken = {**cases[2], "images": {"T1w": str(tmp_path / "missing")}}
    cache = SeriesCache(tmp_path / "series", SeriesSlicing(2, (16, 16)), SEQUENCE_CLASSES)
    report = cache.prepare([*cases[:2], broken], workers=2, progress=False)
    assert sorted(report.prepared) == sorted(c["id"] for c in cases[:2])
    assert [f.patient for f in report.failed] == [broken["id"]]
    assert "no usable series" in report.failed[0].reason
    again = cache.prepare(cases[:2], workers=2, progress=False)
    assert sorted(again.cached) == sorted(c["id"] for c in cases[:2])
    assert cache.load(cases[0])["slices"].shape[1:] == (1, 16, 16)


def test_series_slices_are_cut_from_the_head_not_the_empty_margins():
    rng = np.random.default_rng(0)
    array = rng.normal(20.0, 5.0, size=(16, 16, 40)).clip(0)  # background noise
    array[:, :, 20:36] = 1000.0 + np.arange(16.0)  # the head fills slices 20-35, a ramp
    slices = cut_series(Volume.from_array(array.astype(np.float32), np.eye(4)), 2,
                        SeriesSlicing(slices_per_series=4, slice_size=(8, 8)))
    assert slices.shape == (4, 1, 8, 8)
    means = slices.mean(axis=(1, 2, 3))
    assert np.all(np.diff(means) > 0)  # four distinct slices, in order
    assert np.all(means > 1.0)  # all inside the head (z-scored background is about -1)


def test_tag_series_names_every_series_of_a_study(tiny_cohort):
    study = tiny_cohort / "rsna" / "test" / sorted(p.name for p in
                                                   (tiny_cohort / "rsna" / "test").iterdir())[0]
    tags = tag_series(SeriesResNet(), study)
    assert [tag["series"] for tag in tags] == sorted(p.name for p in study.iterdir())
    for tag in tags:
        assert tag["sequence"] in SEQUENCE_CLASSES and tag["plane"] in PLANE_CLASSES
        assert 0 < tag["probability"] <= 1
    with pytest.raises(RadiogenomicsError, match="study folder"):
        tag_series(SeriesResNet(), study / "missing")
