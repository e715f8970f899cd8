"""Survival grouping: features measured on hand-made masks, and the scikit-learn models train
through train.py, logging accuracy and writing confusion matrices like the deep models."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from radiogenomics.data.synthetic import generate_cohort
from radiogenomics.errors import LabelError
from radiogenomics.models.survival import FEATURES, SurvivalClassifier, survival_features
from radiogenomics.train import train

SMALL_GRIDS = {
    "survival_rf": ["model.param_grid.n_estimators=[20]", "model.param_grid.max_depth=[3]",
                    "model.param_grid.min_samples_leaf=[1]"],
    "survival_svm": ["model.param_grid.C=[1.0,10.0]", "model.param_grid.gamma=[scale]"],
    "survival_knn": [],
}


def _nifti(path: Path, array: np.ndarray, voxel_mm: float) -> str:
    nib.save(nib.Nifti1Image(array, np.diag([voxel_mm] * 3 + [1.0])), path)
    return str(path)


def _case(tmp_path: Path, scheme: str = "brats2021", age: float | None = 61.0) -> dict:
    """A brain of 8x8x8 1-mm voxels (512 mm^3) and a mask on a 2-mm grid (8 mm^3 voxels)."""
    image = np.zeros((10, 10, 10), dtype=np.float32)
    image[1:9, 1:9, 1:9] = 100.0                      # brain: 512 mm^3
    et_code = {"brats2021": 4, "brats2023": 3}[scheme]
    seg = np.zeros((5, 5, 5), dtype=np.uint8)         # 8 mm^3 per voxel
    seg[1, 1, 1:3] = et_code                          # ET: 2 voxels = 16 mm^3
    seg[2, 1, 1:3] = 1                                # NCR: 16 mm^3
    seg[3, 1:3, 1:3] = 2                              # ED: 32 mm^3
    labels = {"survival_class": 1} if age is None else {"survival_class": 1, "age": age}
    return {"id": "00042", "images": {"T1w": _nifti(tmp_path / "t1.nii.gz", image, 1.0)},
            "seg": _nifti(tmp_path / f"seg_{scheme}.nii.gz", seg, 2.0), "labels": labels,
            "label_scheme": scheme}


@pytest.mark.parametrize("scheme", ["brats2021", "brats2023"])
def test_features_are_region_volumes_over_brain_volume_plus_age(tmp_path, scheme) -> None:
    features = survival_features(_case(tmp_path, scheme))
    assert tuple(features) == FEATURES
    assert features["ET_fraction"] == pytest.approx(16 / 512)
    assert features["TC_fraction"] == pytest.approx(32 / 512)
    assert features["WT_fraction"] == pytest.approx(64 / 512)
    assert features["age"] == 61.0


def test_missing_age_names_the_patient(tmp_path) -> None:
    with pytest.raises(LabelError, match="00042.*no age"):
        survival_features(_case(tmp_path, age=None))


def test_missing_brain_sequence_names_what_the_case_has(tmp_path) -> None:
    with pytest.raises(Exception, match="no FLAIR image.*T1w"):
        survival_features(_case(tmp_path), brain_sequence="FLAIR")


@pytest.fixture(scope="module")
def survival_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 synthetic BraTS-layout patients on a 16-voxel grid whose training part holds two
    survival classes in each of 2 folds (the synthetic survival leans to "long")."""
    root = tmp_path_factory.mktemp("survival") / "cohort"
    generate_cohort(root, patients=20, test_patients=4, seed=1, format="nifti", size=16,
                    workers=1)
    return root


@pytest.mark.parametrize("model", sorted(SMALL_GRIDS))
def test_survival_models_train_and_report_like_the_deep_models(train_cfg, survival_cohort,
                                                               model) -> None:
    cfg = train_cfg(f"model={model}", "logger=csv", f"data.root={survival_cohort}",
                    f"data.cache_dir={survival_cohort.parent / 'cache'}",
                    "data.cohort_options.image_format=nifti", "data.spatial_size=[8,8,8]",
                    *SMALL_GRIDS[model])
    metrics, objects = train(cfg)
    assert isinstance(objects["model"], SurvivalClassifier)
    for key in ("val/acc", "test/acc"):
        assert 0.0 <= metrics[key] <= 1.0
    run = Path(cfg.paths.output_dir)
    logged = pd.read_csv(run / "csv" / "metrics.csv")
    assert {"val/acc", "test/acc"} <= set(logged.columns)
    datamodule = objects["datamodule"]
    for split, cases in (("val", datamodule.val_cases), ("test", datamodule.test_cases)):
        matrix = pd.read_csv(run / f"confusion_matrix_{split}.csv", index_col=0)
        assert list(matrix.index) == ["true_short", "true_mid", "true_long"]
        assert list(matrix.columns) == ["predicted_short", "predicted_mid", "predicted_long"]
        assert matrix.to_numpy().sum() == len(cases)
        truth = [case["labels"]["survival_class"] for case in cases]
        np.testing.assert_array_equal(matrix.sum(axis=1), np.bincount(truth, minlength=3))
        correct = np.trace(matrix.to_numpy()) / len(cases)
        assert metrics[f"{split}/acc"] == pytest.approx(correct)
    assert (run / "config.yaml").exists() and (run / "splits.json").exists()
