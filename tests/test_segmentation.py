"""Tumour segmentation: the segmenters train, score as BraTS does, and write masks that line
up voxel for voxel with the input images, in the label codes of the input cohort."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms.utils import generate_spatial_bounding_box
from torch import nn

from radiogenomics import config as rc
from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.datamodule import MRIDataModule
from radiogenomics.data.labels import from_internal, regions, to_internal
from radiogenomics.data.nifti import read_nifti
from radiogenomics.data.readers import load_volume
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.evaluation.segmentation_scores import region_volumes, segmentation_scores
from radiogenomics.inference.masks import predict_mask, segment_cases
from radiogenomics.models.segmenter import (
    LOSSES,
    OUTPUTS,
    SegmentationModule,
    labels_from_regions,
    segmentation_loss,
)
from radiogenomics.train import train

SCORE_KEYS = ("dice_et", "dice_tc", "dice_wt", "dice_ncr", "dice_ed", "dice", "iou", "hd95")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One preprocessing cache for the module's runs (entries are keyed by their config)."""
    return tmp_path_factory.mktemp("seg_cache")


@pytest.fixture
def seg_cfg(train_cfg, cache_dir):
    """Segmentation runs on the BraTS-layout volumes of the tiny cohort, 32 voxels a side."""

    def make(*overrides: str):
        return train_cfg(f"data.cache_dir={cache_dir}", "data.cohort_options.image_format=nifti",
                         "data.spatial_size=[32,32,32]", *overrides)

    return make


# ------------------------------------------------------------------------------ training


def _check_scores(metrics: dict[str, float], cfg) -> None:
    assert math.isfinite(metrics["train/loss"])
    for key in SCORE_KEYS:
        assert f"val/{key}" in metrics and f"test/{key}" in metrics
        if key != "hd95":
            assert 0.0 <= metrics[f"test/{key}"] <= 1.0
    assert rc.metric_value(metrics, cfg.optimized_metric) == metrics["val/dice_best"]


@pytest.mark.parametrize("layout", ["model.channels_last=false", "model.channels_last=true"])
def test_fast_dev_run_trains_unet(seg_cfg, layout) -> None:
    cfg = seg_cfg("model=unet", "debug=fdr", layout)
    metrics, objects = train(cfg)
    _check_scores(metrics, cfg)
    assert objects["datamodule"].preprocess.with_seg


def test_segresnet_trains_on_patches_and_infers_whole_volumes_by_sliding_windows(
        seg_cfg) -> None:
    cfg = seg_cfg("model=segresnet", "debug=fdr", "model.patch_size=[16,16,16]", "model.overlap=0")
    metrics, objects = train(cfg)
    _check_scores(metrics, cfg)
    datamodule, module = objects["datamodule"], objects["model"]
    assert datamodule.patch_size == (16, 16, 16)
    train_batch = next(iter(datamodule.train_dataloader()))
    val_batch = next(iter(datamodule.val_dataloader()))
    assert train_batch["image"].shape[2:] == train_batch["seg"].shape[2:] == (16, 16, 16)
    assert val_batch["image"].shape[2:] == (32, 32, 32)
    with torch.no_grad():
        assert module.logits(val_batch["image"]).shape[2:] == (32, 32, 32)


def test_unet2d_trains_on_slices_and_its_checkpoint_loads_with_weights_only(seg_cfg) -> None:
    cfg = seg_cfg("model=unet2d", "callbacks=default", "~callbacks.progress_bar",
                  "trainer.max_epochs=1", "+trainer.limit_train_batches=1",
                  "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1")
    metrics, _ = train(cfg)
    _check_scores(metrics, cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["hyper_parameters"]["output"] == "labels"
    assert "optimizer" not in checkpoint["hyper_parameters"]


def test_patch_size_needs_the_seg_target(tiny_cohort) -> None:
    with pytest.raises(ValueError, match="patch_size.*target seg"):
        MRIDataModule("synthetic", str(tiny_cohort), target="mgmt", patch_size=(16, 16, 16))


def test_wrong_number_of_net_channels_is_a_clear_error() -> None:
    module = SegmentationModule(nn.Conv3d(1, 4, 1), functools.partial(torch.optim.SGD, lr=0.1),
                                output="regions")
    batch = {"image": torch.randn(1, 1, 8, 8, 8), "seg": torch.zeros(1, 1, 8, 8, 8).long()}
    with pytest.raises(ValueError, match="needs 3: set model.net.out_channels"):
        module.training_step(batch, 0)


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("name", LOSSES)
def test_losses_prefer_the_true_mask(name: str, output: str) -> None:
    seg = torch.zeros(2, 1, 8, 8, 8, dtype=torch.long)
    seg[:, :, 2:6, 2:6, 2:6] = 2
    seg[:, :, 3:5, 3:5, 3:5] = 1
    seg[:, :, 4, 4, 4] = 3
    if output == "regions":
        target = torch.stack([regions(mask) for mask in seg]).float()
        right = (target * 2 - 1) * 8
    else:
        target = seg
        right = nn.functional.one_hot(seg[:, 0], 4).permute(0, 4, 1, 2, 3).float() * 8
    loss = segmentation_loss(name, output)
    assert loss(right, target) < loss(-right, target)
    assert loss(right, target) < loss(torch.zeros_like(right), target)


def test_unknown_loss_and_output_name_the_choices() -> None:
    with pytest.raises(ValueError, match="dice_ce"):
        segmentation_loss("hinge", "regions")
    with pytest.raises(ValueError, match="regions"):
        segmentation_loss("dice", "voxels")


# ------------------------------------------------------------------------------- scores


def _mask(*boxes: tuple[int, slice]) -> torch.Tensor:
    """A (1, 1, 8, 8, 8) internal label map with each (code, x-slice) box painted in order."""
    mask = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    for code, xs in boxes:
        mask[0, 0, xs, 2:4, 2:4] = code
    return mask


def test_perfect_prediction_scores_one_and_zero_distance() -> None:
    truth = _mask((2, slice(0, 6)), (1, slice(1, 4)), (3, slice(2, 3)))
    scores = segmentation_scores(truth.clone(), truth)
    for key in SCORE_KEYS[:-1]:
        assert scores[key].item() == pytest.approx(1.0)
    assert scores["hd95"].item() == 0.0


def test_partial_overlap_gives_the_hand_computed_dice() -> None:
    truth = _mask((2, slice(0, 4)))            # WT = ED: 16 voxels
    prediction = _mask((2, slice(0, 2)))       # 8 of them
    scores = segmentation_scores(prediction, truth)
    assert scores["dice_wt"].item() == pytest.approx(2 * 8 / (16 + 8))
    assert scores["dice_ed"].item() == pytest.approx(2 * 8 / (16 + 8))
    assert scores["iou"].item() == pytest.approx((8 / 16 + 1 + 1) / 3)  # ET, TC empty in both


def test_empty_regions_follow_brats() -> None:
    no_et = _mask((2, slice(0, 4)))
    with_et = _mask((2, slice(0, 4)), (3, slice(1, 2)))
    both_empty = segmentation_scores(no_et, no_et)
    assert both_empty["dice_et"].item() == 1.0 and both_empty["dice_tc"].item() == 1.0
    assert both_empty["dice_ncr"].item() == 1.0
    assert both_empty["hd95"].item() == 0.0
    false_positive = segmentation_scores(with_et, no_et)
    assert false_positive["dice_et"].item() == 0.0
    missed = segmentation_scores(no_et, with_et)
    assert missed["dice_et"].item() == 0.0 and missed["dice_tc"].item() == 0.0
    diagonal = math.sqrt(3 * 8**2)
    # ET and TC missed entirely: the largest distance; WT perfect: 0
    assert missed["hd95"].item() == pytest.approx((diagonal + diagonal + 0) / 3)


def test_scores_are_per_case() -> None:
    good, bad = _mask((2, slice(0, 4))), _mask((2, slice(4, 8)))
    scores = segmentation_scores(torch.cat([good, bad]), torch.cat([good, good]))
    assert scores["dice_wt"].tolist() == [1.0, 0.0]


def test_region_channels_map_back_to_labels() -> None:
    labels = _mask((2, slice(0, 6)), (1, slice(1, 4)), (3, slice(2, 3)))
    channels = torch.stack([regions(mask) for mask in labels])
    assert torch.equal(labels_from_regions(channels), labels)
    # an ET voxel predicted outside TC and WT is still ET (regions are nested as in BraTS)
    lone_et = torch.zeros_like(channels)
    lone_et[0, 0, 0, 0, 0] = 1
    assert labels_from_regions(lone_et)[0, 0, 0, 0, 0].item() == 3


def test_region_volumes_in_ml_for_each_scheme() -> None:
    affine = np.diag([2.0, 2.0, 2.0, 1.0])  # 8 mm^3 = 0.008 ml per voxel
    internal = np.zeros((6, 6, 6), dtype=np.uint8)
    internal[0, :5] = 2   # 30 ED voxels
    internal[1, :2] = 1   # 12 NCR voxels
    internal[2, :1] = 3   # 6 ET voxels
    for scheme in ("brats2021", "brats2023", "msd"):
        volumes = region_volumes(from_internal(internal, scheme), affine, scheme)
        assert volumes == pytest.approx({"ET_ml": 0.048, "TC_ml": 0.144, "WT_ml": 0.384})


# ------------------------------------------------------------------------------ masks out


class OracleNet(nn.Module):
    """Returns fixed logits: the one-hot of a known mask on the preprocessed grid."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[2:] == self.logits.shape[2:]
        return self.logits.expand(len(x), -1, -1, -1, -1)


def _oracle(case: dict, config: PreprocessConfig, output: str, root: Path) -> SegmentationModule:
    """A segmenter that predicts the case's true mask, as preprocessing serves it."""
    truth = PreprocessCache(root, dataclasses.replace(config, with_seg=True)).compute(case)["seg"]
    seg = torch.from_numpy(truth.astype(np.int64))[None]
    if output == "regions":
        logits = (torch.stack([regions(m) for m in seg]).float() * 2 - 1) * 10
    else:
        logits = nn.functional.one_hot(seg[:, 0], 4).permute(0, 4, 1, 2, 3).float() * 10
    return SegmentationModule(OracleNet(logits), functools.partial(torch.optim.SGD, lr=0.0),
                              output=output)


def _lossless_config(case: dict, sequence: str = "FLAIR") -> PreprocessConfig:
    """Preprocessing whose only spatial step is the foreground crop (resize to the same size)."""
    image = load_volume(case["images"][sequence]).array[None]
    start, end = generate_spatial_bounding_box(image, margin=2, allow_smaller=True)
    size = tuple(int(e - s) for s, e in zip(start, end))
    assert size != image.shape[1:], "the crop must do something for the test to mean anything"
    return PreprocessConfig(sequences=(sequence,), spacing=None, spatial_size=size)


@pytest.mark.parametrize("output", OUTPUTS)
def test_oracle_mask_lines_up_voxel_for_voxel_with_the_input(tiny_cohort, tmp_path,
                                                             output) -> None:
    case = load_cohort("synthetic", tiny_cohort, image_format="nifti")[0]
    config = _lossless_config(case)
    mask = predict_mask(_oracle(case, config, output, tmp_path), case, config)
    truth = read_nifti(case["seg"])
    reference = load_volume(case["images"]["FLAIR"])
    assert mask.array.shape == reference.array.shape
    np.testing.assert_allclose(mask.affine, reference.affine)
    assert set(np.unique(truth.array)) == {0, 1, 2, 4}
    np.testing.assert_array_equal(mask.array, truth.array.astype(np.uint8))


def test_written_mask_uses_the_scheme_of_the_input_cohort(tiny_cohort, tmp_path) -> None:
    case = load_cohort("synthetic", tiny_cohort, image_format="nifti")[0]
    truth = read_nifti(case["seg"])
    brats2023 = from_internal(to_internal(truth.array.astype(np.uint8), "brats2021"),
                              "brats2023")
    seg_2023 = tmp_path / "seg_2023.nii.gz"
    nib.save(nib.Nifti1Image(brats2023, truth.affine), seg_2023)
    case = {**case, "seg": str(seg_2023), "label_scheme": "brats2023"}
    config = _lossless_config(case)
    mask = predict_mask(_oracle(case, config, "labels", tmp_path), case, config)
    assert set(np.unique(mask.array)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(mask.array, brats2023)
    # a cohort without masks (RSNA) gets BraTS 2021 codes, or the scheme asked for
    rsna_case = {**case, "label_scheme": None}
    assert 4 in predict_mask(_oracle(case, config, "labels", tmp_path), rsna_case, config).array
    msd = predict_mask(_oracle(case, config, "labels", tmp_path), case, config, "msd")
    np.testing.assert_array_equal(msd.array, from_internal(to_internal(brats2023, "brats2023"),
                                                           "msd"))


@pytest.mark.parametrize("image_format", ["nifti", "dicom"])
def test_resampled_mask_has_the_input_geometry_and_overlaps_the_truth(
        tiny_cohort, tmp_path, image_format) -> None:
    case = load_cohort("synthetic", tiny_cohort, image_format=image_format)[0]
    config = PreprocessConfig(sequences=("T1wCE", "FLAIR"), spacing=(4.0, 4.0, 4.0),
                              spatial_size=(16, 16, 16))
    module = _oracle(case, config, "regions", tmp_path)
    table = segment_cases(module, [case], config, tmp_path / "masks")
    written = read_nifti(tmp_path / "masks" / f"{case['id']}_seg.nii.gz")
    reference = load_volume(case["images"]["T1wCE"])
    assert written.array.shape == reference.array.shape
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-4)
    # the truth on the reference grid: the input mask resampled by world coordinates
    truth = PreprocessCache(tmp_path, PreprocessConfig(
        sequences=("T1wCE",), spacing=None, spatial_size=reference.array.shape,
        crop_foreground=False, with_seg=True)).compute(case)["seg"][0]
    predicted = to_internal(written.array.astype(np.int64), "brats2021")
    whole = segmentation_scores(torch.from_numpy(predicted)[None, None],
                                torch.from_numpy(truth.astype(np.int64))[None, None])
    assert whole["dice_wt"].item() > 0.6
    assert list(table.columns) == ["id", "ET_ml", "TC_ml", "WT_ml", "mask"]
    assert table.loc[0, "WT_ml"] == pytest.approx(
        region_volumes(written.array, written.affine)["WT_ml"])
    assert (tmp_path / "masks" / "region_volumes.csv").is_file()


def test_resized_mask_stays_on_its_structure_in_the_image(tmp_path) -> None:
    box = np.zeros((70, 70, 70), dtype=np.float32)
    box[20:40, 25:45, 30:50] = 1.0
    affine = np.eye(4)
    case = {"id": "00001", "label_scheme": "brats2021", "seg": str(tmp_path / "seg.nii.gz"),
            "images": {"FLAIR": str(tmp_path / "flair.nii.gz")}}
    nib.save(nib.Nifti1Image(box * 100, affine), case["images"]["FLAIR"])
    nib.save(nib.Nifti1Image((box * 2).astype(np.uint8), affine), case["seg"])
    config = PreprocessConfig(sequences=("FLAIR",), spacing=None, spatial_size=(48, 48, 48),
                              crop_foreground=False, with_seg=True, dtype="float32")
    arrays = PreprocessCache(tmp_path / "cache", config).compute(case)
    image_centre = np.argwhere(arrays["image"][0] > arrays["image"][0].mean()).mean(0)
    mask_centre = np.argwhere(arrays["seg"][0] > 0).mean(0)
    np.testing.assert_allclose(mask_centre, image_centre, atol=0.1)


def test_mask_of_a_slab_model_lands_on_the_slab_slices(tiny_cohort, tmp_path) -> None:
    case = load_cohort("synthetic", tiny_cohort, image_format="nifti")[0]
    lossless = _lossless_config(case)
    depth = 8
    config = dataclasses.replace(lossless, slab=depth,
                                 spatial_size=(*lossless.spatial_size[:2], depth))
    mask = predict_mask(_oracle(case, config, "labels", tmp_path), case, config)
    truth = read_nifti(case["seg"]).array.astype(np.uint8)
    assert mask.array.shape == truth.shape
    np.testing.assert_allclose(mask.affine, read_nifti(case["seg"]).affine)
    # the slab, found independently: the cropped slices of largest brain area, and `depth` around
    image = load_volume(case["images"]["FLAIR"]).array
    start, end = generate_spatial_bounding_box(image[None], margin=2, allow_smaller=True)
    area = (image[start[0]:end[0], start[1]:end[1], start[2]:end[2]] > 0).sum(axis=(0, 1))
    first = start[2] + min(max(int(np.argmax(area)) - depth // 2, 0), len(area) - depth)
    slab = slice(first, first + depth)
    assert truth[:, :, slab].any(), "the slab must hold tumour for the test to mean anything"
    np.testing.assert_array_equal(mask.array[:, :, slab], truth[:, :, slab])
    outside = np.ones(truth.shape[2], dtype=bool)
    outside[slab] = False
    assert not mask.array[:, :, outside].any()
    # the cache holds the slab's slices of the whole volume, as before the crop was recorded
    cut = PreprocessCache(tmp_path, dataclasses.replace(config, with_seg=True)).compute(case)
    whole = PreprocessCache(tmp_path, dataclasses.replace(lossless, with_seg=True)).compute(case)
    kept = slice(first - start[2], first - start[2] + depth)
    np.testing.assert_array_equal(cut["seg"], whole["seg"][..., kept])
    np.testing.assert_array_equal(cut["image"] != 0, whole["image"][..., kept] != 0)
