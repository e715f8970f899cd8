"""`data.register=true`: DICOM patients registered to template space in the cached
preprocessing, masks taken back onto each series, and the moved cohort's guard.

The round trip of a mask native -> template -> native through a registration is
tests/data/test_register.py's; here the registration runs inside the pipeline."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hydra.core.global_hydra import GlobalHydra

from radiogenomics import config as rc
from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.readers import load_volume
from radiogenomics.data.synthetic import generate_cohort
from radiogenomics.data.template import BRATS_SHAPE, load_template
from radiogenomics.data.template_space import load, resample
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.errors import CohortError, ConfigError
from radiogenomics.inference.masks import predict_mask
from radiogenomics.inference.pipeline import check_mask_space
from tests.conftest import compose_train
from tests.test_predict import _predict, _train
from tests.test_segmentation import _oracle

pytest.importorskip("SimpleITK")

SEQUENCES = ("T1wCE", "FLAIR")  # conf/data/synthetic.yaml's


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three moved patients (realistic preset) on the 32-voxel grid: 6 mm NIfTI in template
    space, DICOM series in the scanner's world (registration takes ~2 s a patient)."""
    return generate_cohort(tmp_path_factory.mktemp("moved") / "cohort", patients=3,
                           test_patients=0, preset="realistic", size=32, workers=1)


def _datamodule(cohort: Path, work: Path, *overrides: str):
    """The data config a user composes (train.yaml), instantiated."""
    cfg = compose_train([
        f"data.root={cohort}", f"data.cache_dir={work / 'cache'}", "data.synthetic=null",
        f"paths.root_dir={work}", "data.n_folds=2", "data.test_split=val",
        "data.prepare_workers=0", "data.num_workers=0", *overrides])
    GlobalHydra.instance().clear()
    return rc.instantiate(cfg.data)


def _truth(cohort: Path) -> dict[str, dict[str, np.ndarray]]:
    """Ground-truth template -> series world transforms of each patient (cohort.json)."""
    cases = json.loads((cohort / "cohort.json").read_text())["cases"]
    return {c["id"]: {s: np.array(m) for s, m in c["native_from_template"].items()}
            for c in cases}


def _mean_error_mm(transform: np.ndarray, truth: np.ndarray) -> float:
    """Mean distance between where two transforms put the atlas brain's points."""
    _, atlas = load_template()
    points = np.argwhere(atlas.array[::4, ::4, ::4] > 0) * 4 + atlas.affine[:3, 3]
    error = transform - truth
    return float(np.linalg.norm(points @ error[:3, :3].T + error[:3, 3], axis=1).mean())


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, float).ravel(), np.asarray(b, float).ravel())[0, 1])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_register_true_caches_dicom_patients_in_template_space_with_their_registration(
        moved: Path, tmp_path: Path) -> None:
    registered = _datamodule(moved, tmp_path, "model=unet", "data.register=true")
    registered.prepare_data()
    nifti = _datamodule(moved, tmp_path, "model=unet", "data.cohort_options.image_format=nifti")
    nifti.prepare_data()
    truth = _truth(moved)
    # the same patients read from their scanner-world DICOM, without registration
    unregistered = PreprocessCache(tmp_path / "unregistered", PreprocessConfig(
        sequences=SEQUENCES, spacing=(3.0, 3.0, 3.0), spatial_size=(32, 32, 32)))
    dicom_cases = load_cohort("synthetic", moved, image_format="dicom").cases
    nifti_cases = {c["id"]: c for c in load_cohort("synthetic", moved, image_format="nifti")}
    for case in dicom_cases:
        pid = case["id"]
        saved = registered.cache.registration_dir(case)
        assert saved.is_relative_to(tmp_path / "cache") and not saved.is_relative_to(moved)
        registration = load(saved)
        assert set(registration.series) == set(SEQUENCES)
        assert registration.template_shape == BRATS_SHAPE
        for series, geometry in registration.series.items():
            assert geometry.source == case["images"][series]
            error = _mean_error_mm(geometry.native_from_template, truth[pid][series])
            pose = _mean_error_mm(np.eye(4), truth[pid][series])
            assert error < 6.0 < 10.0 < pose, (series, error, pose)  # 6 mm NIfTI voxels
        # what the model is served: the registered DICOM looks like the template-space NIfTI
        served = registered.cache.load(case)
        reference = nifti.cache.load(nifti_cases[pid])
        plain = unregistered.get(case)
        for channel in range(len(SEQUENCES)):
            fit = _correlation(served["image"][channel], reference["image"][channel])
            before = _correlation(plain["image"][channel], reference["image"][channel])
            assert fit > before + 0.05 and fit > 0.5, (pid, channel, fit, before)
        assert _dice(served["seg"], reference["seg"]) > 0.6
    # NIfTI inputs are in template space already: left as they are, under another cache key
    nifti_registered = _datamodule(moved, tmp_path, "model=unet", "data.register=true",
                                   "data.cohort_options.image_format=nifti")
    nifti_registered.prepare_data()
    case = dicom_cases[0]
    left = nifti_registered.cache.load(nifti_cases[case["id"]])
    assert np.array_equal(left["image"], nifti.cache.load(nifti_cases[case["id"]])["image"])
    assert (nifti_registered.cache.entry(nifti_cases[case["id"]])
            != nifti.cache.entry(nifti_cases[case["id"]]))


def test_register_enters_the_cache_key_only_when_true() -> None:
    # off, it is not in the key: caches made before data.register existed stay valid
    # (tests/test_roi.py checks the whole set of fields)
    assert "register" not in PreprocessConfig().to_dict()
    assert PreprocessConfig(register=True).to_dict()["register"] is True
    assert PreprocessConfig.from_dict(PreprocessConfig(register=True).to_dict()).register
    case = {"id": "00001", "images": {"T1wCE": "/nowhere/T1wCE"}, "label_scheme": None}
    keys = {PreprocessCache("/tmp/cache", PreprocessConfig(register=on)).key(case)
            for on in (False, True)}
    assert len(keys) == 2


def test_template_space_masks_over_unregistered_dicom_of_a_moved_cohort_are_refused(
        moved: Path, tmp_path: Path) -> None:
    data = _datamodule(moved, tmp_path, "model=unet")
    with pytest.raises(ConfigError, match="data.register: the synthetic cohort .* is moved") as err:
        data.prepare_data()
    assert "set data.register=true" in str(err.value)
    assert "image_format=nifti" in str(err.value)
    assert not (tmp_path / "cache").exists()
    # a moved cohort still to generate is refused before it is generated
    new = tmp_path / "new"
    with pytest.raises(ConfigError, match="data.register: the synthetic cohort .* is moved"):
        _datamodule(new, tmp_path, "model=unet", "data.synthetic={patients:2,test_patients:0,"
                    "seed:0,preset:realistic,size:32}").prepare_data()
    assert not new.exists()
    # a classifier reads no mask: nothing to refuse
    _datamodule(moved, tmp_path, "model=cnn3d")._cohort("train")
    # predict.py refuses to score such masks too, unless the segmenter registers
    cohort = load_cohort("synthetic", moved, image_format="dicom")
    with pytest.raises(ConfigError, match="data.image_format: the synthetic cohort .* moved"):
        check_mask_space(cohort, "dicom", registered=False)
    check_mask_space(cohort, "dicom", registered=True)
    check_mask_space(load_cohort("synthetic", moved, image_format="nifti"), "nifti", False)


def test_register_without_simpleitk_names_the_extra_before_any_work(
        moved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    with pytest.raises(Exception, match=r"pip install 'radiogenomics\[register\]'"):
        _datamodule(moved, tmp_path, "data.register=true")
    assert not (tmp_path / "cache").exists()


def test_a_patient_that_cannot_be_registered_is_reported_like_any_unreadable_one(
        moved: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from radiogenomics.data import registration

    real = registration.affine
    lost = sorted(p.name for p in (moved / "rsna" / "train").iterdir())[0]

    def diverge(fixed, moving, seed=registration.SEED):
        if Path(moving.meta["source"]).parent.name == lost:
            raise RuntimeError("Exception thrown in SimpleITK ImageRegistrationMethod_Execute:"
                               "\nITK ERROR: Too many samples map outside moving image buffer")
        return real(fixed, moving, seed)

    monkeypatch.setattr(registration, "affine", diverge)
    strict = _datamodule(moved, tmp_path, "model=unet", "data.register=true",
                         "data.sequences=[T1wCE]")
    with pytest.raises(CohortError, match="1 patient.* could not be preprocessed") as err:
        strict.prepare_data()
    assert (f"[patient {lost}] registration to the template failed: RuntimeError: ITK ERROR: "
            "Too many samples") in str(err.value)
    assert "data.on_error=skip" in str(err.value)
    # the same cache: the patients registered above are not registered again
    lenient = _datamodule(moved, tmp_path, "model=unet", "data.register=true",
                          "data.sequences=[T1wCE]", "data.on_error=skip")
    lenient.prepare_data()
    lenient.setup("fit")
    assert [f.patient for f in lenient.skipped] == [lost]
    assert len(lenient.train_cases) + len(lenient.val_cases) == 2


@pytest.mark.slow  # default run time; the slow Done-when test / test_zoo cover the path
def test_a_mask_made_in_template_space_lands_on_the_tumour_of_the_dicom_series(
        moved: Path, tmp_path: Path) -> None:
    """An oracle segmenter (it predicts the true mask as the registered pipeline serves it):
    its mask, taken back through the estimated registration, lies on the tumour where the
    ground-truth transform puts it on T1wCE's DICOM voxels."""
    case = load_cohort("synthetic", moved, image_format="dicom").cases[0]
    config = PreprocessConfig(sequences=("T1wCE",), spacing=(3.0, 3.0, 3.0),
                              spatial_size=(32, 32, 32), register=True)
    mask = predict_mask(_oracle(case, config, "labels", tmp_path), case, config)
    t1wce = load_volume(case["images"]["T1wCE"])
    assert mask.array.shape == t1wce.array.shape
    np.testing.assert_allclose(mask.affine, t1wce.affine, atol=1e-6)
    seg = nib.load(case["seg"])
    truth = resample(np.asarray(seg.dataobj) > 0, seg.affine, t1wce.array.shape, t1wce.affine,
                     np.linalg.inv(_truth(moved)[case["id"]]["T1wCE"]), order=0)
    unmoved = resample(np.asarray(seg.dataobj) > 0, seg.affine, t1wce.array.shape,
                       t1wce.affine, np.eye(4), order=0)
    assert _dice(mask.array, truth) > 0.6 > _dice(unmoved, truth) + 0.2


# ---------------------------------------------------------------------------- Done when


@pytest.fixture(scope="module")
def moved_six(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six moved patients at the registration benchmark's size (2 mm NIfTI, DICOM series of
    ~1.8 mm in-plane and 2-5 mm slices): thicker slices blur what the segmenter sees."""
    return generate_cohort(tmp_path_factory.mktemp("moved6") / "cohort", patients=6,
                           test_patients=0, preset="realistic", size=96, workers=1)


@pytest.mark.slow
def test_a_segmenter_trained_on_nifti_segments_registered_dicom_as_well_and_writes_native_masks(
        moved_six: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17's Done-when: a U-Net trained on the BraTS-layout NIfTI (template space) of the
    moved cohort, given the same patients' RSNA-layout DICOM through data.register=true,
    reaches a whole-tumour Dice within 0.05 of its Dice on the NIfTI; its mask written on
    each series' DICOM voxels lies on the tumour where the ground truth puts it."""
    start = time.perf_counter()
    run = _train(moved_six, tmp_path, tmp_path / "unet", "model=unet",
                 "model.net.channels=[8,16,32]", "model.net.strides=[2,2]",
                 "model.optimizer.lr=3e-3", "data.cohort_options.image_format=nifti",
                 "data.register=true", "data.spatial_size=[32,32,32]", "data.test_split=val",
                 "data.n_folds=2", "trainer.max_epochs=100", "trainer.check_val_every_n_epoch=50",
                 "data.batch_size=2")
    trained = time.perf_counter()
    _predict(tmp_path / "nifti", f"ckpt_path={run}", f"data.root={moved_six}",
             "data.split=train", "data.image_format=nifti", "report=false")
    _, report = _predict(tmp_path / "dicom", f"ckpt_path={run}", f"data.root={moved_six}",
                         "data.split=train", "data.image_format=dicom")
    predicted = time.perf_counter()
    nifti = pd.read_csv(tmp_path / "nifti" / "segmentations.csv", dtype={"BraTS21ID": str})
    dicom = pd.read_csv(tmp_path / "dicom" / "segmentations.csv", dtype={"BraTS21ID": str})
    assert (nifti.status == "ok").all() and (dicom.status == "ok").all() and len(dicom) == 6
    truth = _truth(moved_six)
    native = {}
    for pid in dicom.BraTS21ID:
        folder = tmp_path / "dicom" / "masks"
        assert load(tmp_path / "dicom" / "registration" / pid).patient == pid
        scores = []
        for series in ("T1wCE", "FLAIR"):
            name = f"{pid}_seg.nii.gz" if series == "T1wCE" else f"{pid}_{series}_seg.nii.gz"
            written = nib.load(folder / name)
            scan = load_volume(moved_six / "rsna" / "train" / pid / series)
            assert written.shape == scan.array.shape
            np.testing.assert_allclose(written.affine, scan.affine, atol=1e-4)
            seg = nib.load(moved_six / "brats" / f"BraTS2021_{pid}" / f"BraTS2021_{pid}_seg.nii.gz")
            on_dicom = resample(np.asarray(seg.dataobj) > 0, seg.affine, scan.array.shape,
                                scan.affine, np.linalg.inv(truth[pid][series]), order=0)
            scores.append(_dice(np.asarray(written.dataobj), on_dicom))
        native[pid] = scores
        assert (folder / f"{pid}_template_seg.nii.gz").is_file()
    # the report's figures draw the truth through each patient's registration
    assert {"segmentation_best", "segmentation_worst"} <= set(report.figures)
    nifti_dice, dicom_dice = nifti.dice_wt.mean(), dicom.dice_wt.mean()
    native_dice = float(np.mean([s[0] for s in native.values()]))
    with capsys.disabled():
        print(f"\n[register Done-when] train {trained - start:.0f} s, predict (NIfTI + "
              f"registered DICOM) {predicted - trained:.0f} s; WT Dice NIfTI {nifti_dice:.3f}, "
              f"registered DICOM {dicom_dice:.3f}; native-DICOM mask vs ground truth (T1wCE, "
              f"FLAIR) per patient {native}")
    assert nifti_dice > 0.6, "the segmenter must segment for the comparison to mean anything"
    assert abs(dicom_dice - nifti_dice) <= 0.05, (nifti_dice, dicom_dice)
    assert native_dice > 0.6 and min(s for both in native.values() for s in both) > 0.4, native
