"""The joint model: one encoder, a mask and a case label, two weighted losses, both metric
families; it trains from `model=multitask` (cases without masks too) and predict.py scores
its runs like a classifier's and writes their masks like a segmenter's."""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from radiogenomics import config as rc
from radiogenomics.data.readers import load_volume
from radiogenomics.interpret.gradcam import GradCAMExplainer
from radiogenomics.models.multitask import MultiTaskModule
from radiogenomics.models.nets.multitask import MultiTaskSegResNet
from radiogenomics.models.segmenter import segmentation_loss, segmentation_target
from radiogenomics.train import train
from tests.conftest import compose_train
from tests.test_cv import train_command
from tests.test_predict import _predict, _train, _with_run_dir

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["model=multitask", "model.net.init_filters=8"]
BOTH_FAMILIES = {"val/auc", "val/acc", "val/f1", "val/dice", "val/dice_wt", "val/hd95",
                 "val/cls_loss", "val/seg_loss", "test/auc", "test/dice", "train/loss"}


def _module(**options) -> MultiTaskModule:
    torch.manual_seed(0)
    net = MultiTaskSegResNet(in_channels=2, out_channels=3, num_classes=1, init_filters=8)
    return MultiTaskModule(net, functools.partial(torch.optim.Adam, lr=1e-3), **options)


def _batch(has_seg: list[bool] | None = None) -> dict:
    torch.manual_seed(1)
    batch = {"id": ["00001", "00002"], "image": torch.randn(2, 2, 16, 16, 16),
             "label": torch.tensor([0, 1]), "seg": torch.randint(0, 4, (2, 1, 16, 16, 16))}
    if has_seg is not None:
        batch["has_seg"] = torch.tensor(has_seg)
    return batch


@pytest.mark.parametrize("out_channels, num_classes", [(3, 1), (4, 3)])
def test_net_gives_a_mask_and_class_logits_from_one_encoder(out_channels, num_classes) -> None:
    net = MultiTaskSegResNet(in_channels=2, out_channels=out_channels, num_classes=num_classes,
                             init_filters=8).eval()
    image = torch.randn(2, 2, 32, 24, 16)
    segmentation, logits = net(image, segment=True)
    assert segmentation.shape == (2, out_channels, 32, 24, 16)
    assert logits.shape == (2, num_classes)
    # called plainly it is a classifier (the decoder is skipped): Grad-CAM reads its encoder
    torch.testing.assert_close(net(image), logits)
    heatmap = GradCAMExplainer()(net, image[0])
    assert heatmap.shape == (32, 24, 16) and 0 <= heatmap.min() <= heatmap.max() <= 1


def _gradients(module: MultiTaskModule, batch: dict) -> tuple[float, float]:
    """Gradient norms of the classification head and of the segmentation output layer."""
    module.zero_grad()
    module._step(batch, "train").backward()
    head = module.net.head[-1].weight.grad
    decoder = module.net.segresnet.conv_final[-1].conv.weight.grad
    return (0.0 if head is None else float(head.norm()),
            0.0 if decoder is None else float(decoder.norm()))


@pytest.mark.parametrize("cls_weight, seg_weight", [(1.0, 1.0), (0.0, 1.0), (1.0, 0.0)])
def test_a_zero_weight_removes_its_term_and_its_gradient(cls_weight, seg_weight) -> None:
    module = _module(cls_weight=cls_weight, seg_weight=seg_weight)
    batch = _batch()
    head, decoder = _gradients(module, batch)
    assert (head > 0) == (cls_weight > 0) and (decoder > 0) == (seg_weight > 0)

    with torch.no_grad():
        segmentation, logits = module.eval().heads(batch["image"])
        cls = module.criterion(logits.squeeze(-1), batch["label"].float())
        seg = segmentation_loss("dice_ce", "regions")(
            segmentation, segmentation_target(batch["seg"], "regions"))
        loss = module._step(batch, "train")
    torch.testing.assert_close(loss, cls_weight * cls + seg_weight * seg)


def test_both_weights_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="cls_weight and model.seg_weight"):
        _module(cls_weight=0.0, seg_weight=0.0)


def test_a_case_without_a_mask_trains_the_classification_term_only() -> None:
    module = _module().eval()
    batch = _batch(has_seg=[True, False])
    with torch.no_grad():
        segmentation, logits = module.heads(batch["image"])
        cls = module.criterion(logits.squeeze(-1), batch["label"].float())
        seg_first = segmentation_loss("dice_ce", "regions")(
            segmentation[:1], segmentation_target(batch["seg"][:1], "regions"))
        torch.testing.assert_close(module._step(batch, "val"), cls + seg_first)
        no_masks = {k: v for k, v in batch.items() if k not in ("seg", "has_seg")}
        torch.testing.assert_close(module._step(no_masks, "val"), cls)
    # a batch of mask-less cases still teaches the head, and leaves the decoder alone
    head, decoder = _gradients(module.train(), _batch(has_seg=[False, False]))
    assert head > 0 and decoder == 0


def test_multitask_trains_from_its_config_and_logs_both_metric_families(train_cfg) -> None:
    cfg = train_cfg(*SMALL, "+trainer.limit_train_batches=2")
    assert cfg.data.with_seg and cfg.data.target == cfg.model.target == "mgmt"
    metrics, objects = train(cfg)
    assert set(metrics) >= BOTH_FAMILIES
    assert all(math.isfinite(metrics[key]) for key in BOTH_FAMILIES)
    assert 0 <= metrics["val/dice"] <= 1 and 0 <= metrics["val/auc"] <= 1
    assert rc.metric_value(metrics, cfg.optimized_metric) == metrics["val/auc_best"]
    batch = next(iter(objects["datamodule"].train_dataloader()))
    assert {"image", "seg", "label"} <= set(batch)
    saved = objects["model"].hparams  # what checkpoints keep: both tasks' settings
    assert (saved.target, saved.output, saved.cls_weight, saved.seg_weight) == (
        "mgmt", "regions", 1.0, 1.0)


@pytest.mark.slow  # default run time; the slow Done-when test / test_zoo cover the path
def test_grade_is_a_config_key_away(train_cfg) -> None:
    cfg = train_cfg(*SMALL, "model.target=grade", "debug=fdr")
    assert cfg.data.target == "grade"
    metrics, _ = train(cfg)
    assert {"val/auc", "val/dice"} <= set(metrics)


def test_predict_writes_a_submission_for_every_patient(tiny_cohort, tmp_path) -> None:
    run = _train(tiny_cohort, tmp_path, tmp_path / "run", *SMALL)
    _predict(tmp_path / "out", f"ckpt_path={run}", f"data.root={tiny_cohort}")
    submission = pd.read_csv(tmp_path / "out" / "submission.csv", dtype={"BraTS21ID": str})
    assert list(submission.columns) == ["BraTS21ID", "MGMT_value"]
    test_ids = {p.name for p in (tiny_cohort / "rsna" / "test").iterdir()}
    assert set(submission.BraTS21ID) == test_ids and len(submission) == len(test_ids)
    assert submission.MGMT_value.between(0, 1).all()


@pytest.mark.slow
def test_kfold_multirun_summarises_the_monitored_auc(tiny_cohort, tmp_path) -> None:
    python, script, *overrides = train_command(tiny_cohort, tmp_path, "data.fold=0,1",
                                               "data.n_folds=2", *SMALL, "logger=csv")
    result = subprocess.run(
        [python, script, "-m", *overrides],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    folds = pd.read_csv(sweep / "cv_folds.csv")
    assert sorted(folds["fold"]) == [0, 1]
    assert folds[["val/auc_best", "val/dice", "test/auc"]].notna().all().all()
    summary = pd.read_csv(sweep / "cv_summary.csv").set_index("metric")
    assert "oof/auc_pooled" in summary.index


SEQUENCES = ["T1wCE", "FLAIR"]
UNMASKED = ("00001", "00005", "00008")
"""Patients of the BraTS-layout copy whose masks are removed."""


@pytest.fixture(scope="module")
def partly_masked(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cohort's BraTS layout with the masks of `UNMASKED` deleted."""
    root = tmp_path_factory.mktemp("partly_masked") / "brats"
    shutil.copytree(tiny_cohort / "brats", root)
    for pid in UNMASKED:
        (root / f"BraTS2021_{pid}" / f"BraTS2021_{pid}_seg.nii.gz").unlink()
    return root


def _train_on(root: Path, work: Path, *overrides: str) -> tuple[dict, dict]:
    """train.py's task on `root` (tiny inputs, one epoch, CPU) into ``work/run``."""
    cfg = compose_train([
        f"data.root={root}", f"data.cache_dir={work / 'cache'}", "data.spatial_size=[16,16,16]",
        "data.batch_size=2", "data.n_folds=2", "data.num_workers=0", "data.prepare_workers=0",
        "trainer=cpu", "trainer.max_epochs=1", "logger=none", "callbacks=model_checkpoint",
        f"paths.root_dir={work}", *overrides])
    try:
        return train(_with_run_dir(cfg, work / "run"))
    finally:
        GlobalHydra.instance().clear()


def _mask_flags(datamodule) -> dict[str, bool]:
    """has_seg of every patient the datamodule serves (its batches collate, with an empty
    mask for those without one)."""
    flags = {}
    for loader in (datamodule.train_dataloader(), datamodule.val_dataloader()):
        batch = next(iter(loader))
        assert batch["seg"].shape[2:] == batch["image"].shape[2:]
        assert batch["has_seg"].dtype == torch.bool
        for item in loader.dataset:
            flags[item["id"]] = item["has_seg"]
            assert item["seg"].shape[1:] == item["image"].shape[1:]
            assert item["has_seg"] or not item["seg"].any()  # the placeholder is empty
    return flags


@pytest.fixture(scope="module")
def partly_masked_run(partly_masked: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> tuple[Path, dict, dict]:
    """A multitask run on `partly_masked` (T1wCE, FLAIR): run folder, metrics, objects."""
    work = tmp_path_factory.mktemp("partly_masked_run")
    metrics, objects = _train_on(partly_masked, work, *SMALL, "data=brats",
                                 f"data.sequences=[{','.join(SEQUENCES)}]")
    return work / "run", metrics, objects


def test_cases_without_masks_train_the_classification_term_only(partly_masked_run) -> None:
    _, metrics, objects = partly_masked_run
    datamodule = objects["datamodule"]
    assert not datamodule.skipped  # every patient is used, none reported failed
    flags = _mask_flags(datamodule)
    assert len(flags) == 10 and {pid for pid, has in flags.items() if not has} == set(UNMASKED)
    assert all(math.isfinite(metrics[key]) for key in ("train/loss", "val/cls_loss", "val/auc"))
    val_masked = [c for c in datamodule.val_cases if c["id"] not in UNMASKED]
    assert ("val/dice" in metrics) == bool(val_masked)
    if val_masked:
        assert 0 <= metrics["val/dice"] <= 1


def test_predict_writes_masks_on_the_scan_and_dice_where_the_cohort_has_masks(
        partly_masked_run, partly_masked, tmp_path) -> None:
    run, _, _ = partly_masked_run
    out = tmp_path / "out"
    result, report = _predict(out, f"ckpt_path={run}", f"data.root={partly_masked}")
    predictions = pd.read_csv(out / "predictions.csv", dtype={"BraTS21ID": str})
    ids = {f"{i:05d}" for i in (0, 1, 3, 4, 5, 7, 8, 10, 11, 13)}
    assert set(predictions.BraTS21ID) == ids and not result.failures
    table = pd.read_csv(out / "segmentations.csv", dtype={"BraTS21ID": str}).set_index(
        "BraTS21ID")
    assert set(table.index) == ids and (table.status == "ok").all()
    assert {"ET_ml", "TC_ml", "WT_ml", "dice_wt", "hd95"} <= set(table.columns)
    scored = set(table.index[table.dice_wt.notna()])
    assert scored == ids - set(UNMASKED) and table.dice_wt[list(scored)].between(0, 1).all()
    for pid in ids:
        mask = nib.load(out / "masks" / f"{pid}_seg.nii.gz")
        scan = load_volume(partly_masked / f"BraTS2021_{pid}" /
                           f"BraTS2021_{pid}_t1ce.nii.gz")
        assert mask.shape == scan.array.shape
        np.testing.assert_allclose(mask.affine, scan.affine, atol=1e-4)
        assert set(np.unique(mask.get_fdata())) <= {0, 1, 2, 4}
    assert report is not None and "mean whole-tumour Dice" in report.markdown.read_text()


def test_a_cohort_without_any_mask_trains_and_logs_no_dice(tiny_cohort, tmp_path) -> None:
    metrics, objects = _train_on(tiny_cohort / "rsna", tmp_path, *SMALL, "data=rsna")
    datamodule = objects["datamodule"]
    assert not datamodule.skipped and len(datamodule.train_cases) == 4
    assert not any(_mask_flags(datamodule).values())
    assert all(math.isfinite(value) for value in metrics.values())
    assert not any("dice" in key or "seg_loss" in key for key in metrics)


def test_a_segmenter_still_leaves_a_case_without_a_mask_out(partly_masked, tmp_path,
                                                           caplog) -> None:
    _, objects = _train_on(partly_masked, tmp_path, "model=unet", "model.net.channels=[4,8,16]",
                           "model.net.strides=[2,2]", "data=brats", "data.batch_size=4",
                           f"data.sequences=[{','.join(SEQUENCES)}]")
    datamodule = objects["datamodule"]
    served = {c["id"] for c in datamodule.train_cases + datamodule.val_cases}
    assert len(served) == 7 and not served & set(UNMASKED)
    assert f"have no 'seg' label and are left out: {', '.join(UNMASKED)}" in caplog.text
