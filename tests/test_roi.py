"""Segment, then classify: the tumour ROI crop (data.roi=tumour), masks predicted by a segmenter
run (data.roi_model), predict.py chaining the two runs, survival features on predicted masks."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from monai.data import MetaTensor

from radiogenomics import config as rc
from radiogenomics.data.cache import PreprocessCache, case_sources, run_preprocessing
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.readers import load_volume
from radiogenomics.data.roi import PREDICTED_MASK_KEY, TumourCropd, tumour_box
from radiogenomics.data.synthetic import generate_cohort
from radiogenomics.data.transforms import PreprocessConfig, preprocessing
from radiogenomics.errors import ConfigError, DataError
from radiogenomics.inference.predicted_masks import PredictedMasks
from radiogenomics.inference.preprocess import CasePreprocessor
from radiogenomics.models.survival import survival_features
from radiogenomics.runs import data_setup
from radiogenomics.train import train
from tests.conftest import compose_train
from tests.test_predict import _predict, _train, _with_run_dir

SEQUENCES = ("T1wCE", "FLAIR")


def _case(cohort: Path, index: int = 0, image_format: str = "nifti") -> dict:
    cases = load_cohort("synthetic", cohort, split="train", sequences=list(SEQUENCES),
                        image_format=image_format).cases
    return cases[index]


# ---------------------------------------------------------------------------- the crop
def test_the_box_holds_the_tumour_and_its_margin_in_the_proportions_of_the_output() -> None:
    start, end = tumour_box([10, 20, 30], [14, 40, 33], voxel_mm=[2.0, 2.0, 3.0],
                            margin_mm=5.0, spatial_size=[32, 32, 16])
    size = end - start
    margin_voxels = np.array([3, 3, 2])  # 5 mm rounded up to whole voxels
    assert (start <= np.array([10, 20, 30]) - margin_voxels).all()
    assert (end >= np.array([14, 40, 33]) + margin_voxels).all()
    mm = size * np.array([2.0, 2.0, 3.0])
    # same mm per output voxel on every axis (no distortion), to a voxel's rounding
    np.testing.assert_allclose(mm / np.array([32, 32, 16]), mm[1] / 32, atol=3.0 / 16)
    # centred on the tumour
    centre = (start + end) / 2
    np.testing.assert_allclose(centre, [12, 30, 31.5], atol=1.0)


def test_a_box_leaving_the_volume_is_zero_padded_to_the_configured_size() -> None:
    image = MetaTensor(torch.rand(1, 20, 20, 20) + 1, affine=torch.eye(4, dtype=torch.float64))
    mask = MetaTensor(torch.zeros(1, 20, 20, 20), affine=torch.eye(4, dtype=torch.float64))
    mask[0, 0:3, 8:12, 17:20] = 1  # at two faces of the volume
    crop = TumourCropd(["image", "mask"], mask_key="mask", margin_mm=4.0,
                       spatial_size=(12, 12, 12), modes=["bilinear", "nearest-exact"])
    out = crop({"id": "00007", "image": image, "mask": mask})
    assert out["image"].shape == (1, 12, 12, 12) and out["mask"].shape == (1, 12, 12, 12)
    start, end = crop.box({"mask": mask})
    assert start[0] < 0 and end[2] > 20  # the box leaves the volume on both faces...
    assert float(out["image"][0, 0].abs().max()) == 0.0  # ...and is padded there with zeros
    assert float(out["image"][0, :, :, -1].abs().max()) == 0.0
    assert float(out["mask"].sum()) > 0


def test_an_empty_mask_is_an_error_naming_the_patient() -> None:
    volume = MetaTensor(torch.ones(1, 8, 8, 8), affine=torch.eye(4, dtype=torch.float64))
    crop = TumourCropd(["image", "mask"], mask_key="mask", margin_mm=4.0,
                       spatial_size=(8, 8, 8), modes=["bilinear", "nearest-exact"])
    with pytest.raises(DataError, match=r"00042.*mask is empty.*data.roi=null"):
        crop({"id": "00042", "image": volume, "mask": torch.zeros_like(volume)})


def test_the_crop_holds_the_tumour_and_its_margin_and_maps_back_onto_the_scan(
        tiny_cohort) -> None:
    case = _case(tiny_cohort)
    margin = 12.0
    config = PreprocessConfig(sequences=SEQUENCES, spacing=(3.0, 3.0, 3.0),
                              spatial_size=(16, 16, 12), roi="tumour", roi_margin_mm=margin)
    preprocessor = CasePreprocessor(config)
    prepared = preprocessor(case)
    assert prepared.image.shape == (2, 16, 16, 12)
    # the field of view of the crop, back on the scan's grid: every voxel within the margin
    # of the tumour's bounding box lies inside it, and it is smaller than the whole scan
    footprint, affine = preprocessor.to_input_geometry(prepared, np.ones((16, 16, 12)))
    scan = load_volume(case["images"]["T1wCE"])
    np.testing.assert_allclose(affine, scan.affine, atol=1e-3)
    tumour = np.argwhere(load_volume(case["seg"]).array > 0)
    voxel_mm = np.linalg.norm(scan.affine[:3, :3], axis=0)
    reach = np.floor(margin / voxel_mm).astype(int)
    low = np.maximum(tumour.min(0) - reach, 0)
    high = np.minimum(tumour.max(0) + reach + 1, footprint.shape)
    assert (footprint[low[0]:high[0], low[1]:high[1], low[2]:high[2]] > 0).all()
    assert (footprint > 0).mean() < 0.8
    # the whole-brain crop sees another field of view
    whole = CasePreprocessor(PreprocessConfig(sequences=SEQUENCES, spacing=(3.0, 3.0, 3.0),
                                              spatial_size=(16, 16, 12)))(case)
    assert not torch.equal(whole.image, prepared.image)


def test_the_tumour_mask_is_read_for_the_crop_even_when_the_target_is_not_seg(
        tiny_cohort) -> None:
    case = _case(tiny_cohort, image_format="dicom")
    config = PreprocessConfig(sequences=SEQUENCES, spatial_size=(8, 8, 8), roi="tumour")
    sources = case_sources(case, config)
    assert sources["roi"] == case["seg"]
    result = run_preprocessing(preprocessing(config), case, sources)
    assert "roi" not in result and "seg" not in result  # the mask serves the crop only
    assert result["image"].shape == (2, 8, 8, 8)
    with pytest.raises(DataError, match=r"00000.*no tumour mask.*data.roi_model"):
        case_sources({**case, "id": "00000", "seg": None}, config)


def test_cache_keys_are_unchanged_without_a_roi_and_change_with_its_settings(
        tiny_cohort, tmp_path) -> None:
    case = _case(tiny_cohort)
    case[PREDICTED_MASK_KEY] = case["seg"]  # read with roi_model only
    fields = {"sequences", "spacing", "spatial_size", "with_seg", "crop_foreground", "slab",
              "dtype", "skip_invalid_files"}  # those of the caches made before the ROI
    assert set(PreprocessConfig().to_dict()) == fields
    assert PreprocessConfig(roi_margin_mm=25.0).to_dict() == PreprocessConfig().to_dict()
    keys = {PreprocessCache(tmp_path, config).key(case) for config in (
        PreprocessConfig(), PreprocessConfig(roi="tumour"),
        PreprocessConfig(roi="tumour", roi_margin_mm=20.0),
        PreprocessConfig(roi="tumour", roi_model="segmenter A"))}
    assert len(keys) == 4


@pytest.mark.parametrize(("overrides", "message"), [
    (["data.roi=tumor"], "data.roi: must be null .* or one of"),
    (["data.roi=tumour", "data.slab=8"], "data.roi: a tumour ROI and a slab"),
    (["data.roi=tumour", "data.roi_margin_mm=-1"], "data.roi_margin_mm: must be a margin"),
    (["data.roi=tumour", "data.roi_model=/no/such/run"], "data.roi_model: .*no such file"),
])
def test_roi_mistakes_are_config_errors_before_any_work(train_cfg, tmp_path, overrides,
                                                        message) -> None:
    with pytest.raises(Exception, match=message) as error:
        train(train_cfg(*overrides))
    assert isinstance(error.value, ConfigError) or isinstance(error.value.__cause__,
                                                              ConfigError)
    assert not (tmp_path / "cache").exists()


def test_checkpoints_record_the_roi_so_a_resume_with_another_field_of_view_is_refused(
        train_cfg) -> None:
    assert not any(key.startswith("roi") for key in data_setup(train_cfg().data))
    setup = data_setup(train_cfg("data.roi=tumour", "data.roi_margin_mm=5").data)
    assert (setup["roi"], setup["roi_margin_mm"], setup["roi_model"]) == ("tumour", 5, None)


# ---------------------------------------------------------------------------- trained runs
@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the runs and caches of this module (predicted masks are shared)."""
    return tmp_path_factory.mktemp("roi")


@pytest.fixture(scope="module")
def segmenter(tiny_cohort: Path, work: Path) -> Path:
    """A tiny 3D U-Net run (1 epoch: its masks are poor but not empty, which is all the
    chaining needs)."""
    return _train(tiny_cohort, work, work / "unet", "model=unet", "model.net.channels=[4,8,16]",
                  "model.net.strides=[2,2]")


@pytest.fixture(scope="module")
def roi_classifier(tiny_cohort: Path, work: Path) -> Path:
    """A tiny cnn3d trained on the ground-truth tumour ROI."""
    return _train(tiny_cohort, work, work / "cnn3d_roi", "data.roi=tumour",
                  "data.roi_margin_mm=6", "model.net.widen_factor=0.25")


def test_a_cnn3d_trains_on_the_ground_truth_tumour_roi(roi_classifier) -> None:
    info = json.loads((roi_classifier / "run_info.json").read_text())
    assert info["mask_source"] == "ground truth"
    assert list((roi_classifier / "checkpoints").glob("*.ckpt"))
    saved = (roi_classifier / "config.yaml").read_text()
    assert "roi: tumour" in saved and "roi_margin_mm: 6" in saved


def test_predicted_masks_give_the_roi_and_are_cached_outside_the_cohort(
        segmenter, tiny_cohort, work) -> None:
    cfg = compose_train([
        f"data.root={tiny_cohort}", f"data.cache_dir={work / 'cache'}", "data.synthetic=null",
        "data.spatial_size=[16,16,16]", "data.n_folds=2", "data.prepare_workers=0",
        "data.roi=tumour", f"data.roi_model={segmenter}", f"paths.root_dir={work}"])
    datamodule = rc.instantiate(cfg.data)
    assert datamodule.mask_source == f"predicted by {segmenter}"
    assert datamodule.preprocess.roi_model and str(segmenter) in datamodule.preprocess.roi_model
    datamodule.prepare_data()
    datamodule.setup("fit")
    case = datamodule.train_cases[0]
    predicted = Path(case[PREDICTED_MASK_KEY])
    assert predicted.is_relative_to(work / "cache" / "roi_masks")
    assert not predicted.is_relative_to(tiny_cohort)
    assert np.any(load_volume(predicted).array)
    # the cached input is the crop around the predicted tumour, not the ground-truth one
    by_predicted = PreprocessConfig(sequences=SEQUENCES, spacing=(3.0, 3.0, 3.0),
                                    spatial_size=(16, 16, 16), roi="tumour")
    expected = run_preprocessing(preprocessing(by_predicted), case,
                                 case_sources({**case, "seg": str(predicted)}, by_predicted))
    by_truth = run_preprocessing(preprocessing(by_predicted), case,
                                 case_sources(case, by_predicted))
    cached = np.asarray(datamodule.cache.load(case)["image"])
    np.testing.assert_array_equal(cached, expected["image"].numpy().astype(np.float16))
    assert not np.array_equal(cached, by_truth["image"].numpy().astype(np.float16))


def test_a_retrained_segmenter_is_another_identity(segmenter, tmp_path) -> None:
    copy = tmp_path / "unet"
    shutil.copytree(segmenter, copy)
    before = PredictedMasks(str(copy), tmp_path / "masks").identity
    checkpoint = next((copy / "checkpoints").glob("*.ckpt"))
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert PredictedMasks(str(copy), tmp_path / "masks").identity != before


def test_predict_chains_a_roi_classifier_with_a_segmenter_on_a_cohort_without_masks(
        roi_classifier, segmenter, tiny_cohort, work, tmp_path) -> None:
    cohort = tiny_cohort / "rsna"  # DICOM only: no tumour masks
    result, _ = _predict(tmp_path / "out", f"ckpt_path={roi_classifier}",
                         f"data.root={cohort}", f"data.roi_model={segmenter}")
    patients = {p.name for p in (cohort / "test").iterdir()}
    assert not result.failures
    submission = pd.read_csv(tmp_path / "out" / "submission.csv", dtype={"BraTS21ID": str})
    assert set(submission.BraTS21ID) == patients
    assert submission.MGMT_value.between(0, 1).all()
    masks = list((work / "cache" / "roi_masks").glob("*/mask.nii.gz"))
    assert {m.parent.name.split("-")[0] for m in masks} >= patients
    assert not list(cohort.rglob("*.nii.gz"))  # nothing written under data.root


@pytest.mark.slow
def test_predict_uses_the_segmenter_a_roi_classifier_was_trained_with(
        segmenter, tiny_cohort, work, tmp_path) -> None:
    run = _train(tiny_cohort, work, work / "cnn3d_predicted_roi", "data.roi=tumour",
                 f"data.roi_model={segmenter}", "model.net.widen_factor=0.25")
    info = json.loads((run / "run_info.json").read_text())
    assert info["mask_source"] == f"predicted by {segmenter}"
    cohort = tiny_cohort / "rsna"
    result, _ = _predict(tmp_path / "out", f"ckpt_path={run}", f"data.root={cohort}")
    assert not result.failures
    assert {p.id for p in result.patients} == {p.name for p in (cohort / "test").iterdir()}


def test_a_roi_classifier_on_a_cohort_without_masks_names_what_to_set(
        roi_classifier, tiny_cohort, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"data.roi_model: .*no tumour mask.*set "
                                          r"data.roi_model=<run dir of a trained segmenter>"):
        _predict(tmp_path / "out", f"ckpt_path={roi_classifier}",
                 f"data.root={tiny_cohort / 'rsna'}")


@pytest.mark.slow
def test_survival_features_on_predicted_masks_say_so(segmenter, work, tmp_path,
                                                     caplog) -> None:
    # as tests/test_survival.py's cohort: two survival classes in each fold's training part
    cohort = generate_cohort(tmp_path / "cohort", patients=20, test_patients=4, seed=1,
                             format="nifti", size=16, workers=1)
    cfg = compose_train([
        "model=survival_knn", f"data.root={cohort}", f"data.cache_dir={work / 'cache'}",
        "data.synthetic=null", "data.spatial_size=[8,8,8]", "data.n_folds=2",
        "data.cohort_options.image_format=nifti",
        "data.num_workers=0", "data.prepare_workers=0", f"data.roi_model={segmenter}",
        "trainer=cpu", "logger=none", "callbacks=none", f"paths.root_dir={work}"])
    cfg = _with_run_dir(cfg, tmp_path / "survival")
    with caplog.at_level(logging.INFO):
        _, objects = train(cfg)
    assert f"survival features measured on tumour masks predicted by {segmenter}" in caplog.text
    info = json.loads((tmp_path / "survival" / "run_info.json").read_text())
    assert info["mask_source"] == f"predicted by {segmenter}"
    case = objects["datamodule"].train_cases[0]
    assert Path(case[PREDICTED_MASK_KEY]).is_relative_to(work / "cache" / "roi_masks")


def test_survival_features_are_measured_on_the_predicted_mask_when_the_case_has_one(
        tmp_path) -> None:
    brain = np.zeros((10, 10, 10), dtype=np.float32)
    brain[1:9, 1:9, 1:9] = 100.0  # 512 voxels of 1 mm^3
    truth, predicted = np.zeros((10, 10, 10), np.uint8), np.zeros((10, 10, 10), np.uint8)
    truth[2:4, 2:4, 2:4] = 2      # 8 voxels of oedema
    predicted[2:6, 2:6, 2:4] = 2  # 32 voxels
    files = {}
    for name, array in (("t1", brain), ("seg", truth), ("predicted", predicted)):
        files[name] = str(tmp_path / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(array, np.eye(4)), files[name])
    case = {"id": "00042", "images": {"T1w": files["t1"]}, "seg": files["seg"],
            "labels": {"age": 50.0, "survival_class": 1}, "label_scheme": "brats2021"}
    assert survival_features(case)["WT_fraction"] == pytest.approx(8 / 512)
    on_predicted = survival_features({**case, PREDICTED_MASK_KEY: files["predicted"]})
    assert on_predicted["WT_fraction"] == pytest.approx(32 / 512)
