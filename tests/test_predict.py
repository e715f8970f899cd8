"""predict.py: submissions for every patient, failures reported, fold ensembles, maps, masks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from predict import predict
from radiogenomics.data.errors import RadiogenomicsError
from radiogenomics.data.readers import load_volume
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.inference.models import SliceSampling, TrainedModel
from radiogenomics.interpret.volume import to_slices
from radiogenomics.models.classifier import ClassificationModule
from tests.conftest import CONF_DIR, compose_train
from train import train

ROOT = Path(__file__).resolve().parents[1]
SEQUENCES = ("T1wCE", "FLAIR")  # conf/data/synthetic.yaml: the first is the reference grid


def _with_run_dir(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """A composed config as Hydra hands it to a task whose run directory is `run_dir`."""
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _train(cohort: Path, work: Path, run_dir: Path, *overrides: str) -> Path:
    """Train a tiny model with train.py's `train` into `run_dir` (one epoch, 16 voxels)."""
    cfg = compose_train([
        f"data.root={cohort}", f"data.cache_dir={work / 'cache'}", "data.synthetic=null",
        "data.spatial_size=[16,16,16]", "data.batch_size=2", "data.n_folds=2",
        "data.num_workers=0", "data.prepare_workers=0", "trainer=cpu", "trainer.max_epochs=1",
        "logger=none", "callbacks=model_checkpoint", "test=false", f"paths.root_dir={work}",
        *overrides,
    ])
    train(_with_run_dir(cfg, run_dir))
    GlobalHydra.instance().clear()
    return run_dir


def _predict(out: Path, *overrides: str):
    """predict.py's task on a config composed from conf/predict.yaml."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="predict", return_hydra_config=True,
                      overrides=[f"output_dir={out}", "device=cpu", "bootstrap=100", *overrides])
    try:
        return predict(_with_run_dir(cfg, out))
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def folds(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multirun directory of a 2-fold CV: <dir>/0 and <dir>/1, as `train.py -m` writes."""
    work = tmp_path_factory.mktemp("folds")
    for fold in (0, 1):
        _train(tiny_cohort, work, work / "multirun" / str(fold), f"data.fold={fold}",
               "model.net.widen_factor=0.25")
    return work / "multirun"


def _ids(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir()}


def test_submission_has_every_patient_with_a_probability(folds, tiny_cohort, tmp_path) -> None:
    result, report = _predict(tmp_path, f"ckpt_path={folds / '0'}", f"data.root={tiny_cohort}",
                              "data.split=train")
    submission = pd.read_csv(tmp_path / "submission.csv", dtype={"BraTS21ID": str})
    assert list(submission.columns) == ["BraTS21ID", "MGMT_value"]
    assert set(submission.BraTS21ID) == _ids(tiny_cohort / "rsna" / "train")
    assert len(submission) == 8 and submission.BraTS21ID.str.fullmatch(r"\d{5}").all()
    assert submission.MGMT_value.between(0, 1).all()
    assert pd.read_csv(tmp_path / "errors.csv").empty and not result.failures
    # the train split is labelled: the evaluation report comes with it
    assert report is not None and 0 <= report.metrics["auc"] <= 1
    assert {"roc.png", "confusion.png", "calibration.png", "report.md"} <= {
        p.name for p in tmp_path.iterdir()}


def test_one_patient_folder_is_detected_and_predicted(folds, tiny_cohort, tmp_path) -> None:
    patient = sorted((tiny_cohort / "rsna" / "test").iterdir())[0]
    _predict(tmp_path, f"ckpt_path={folds / '0' / 'checkpoints' / 'last.ckpt'}",
             f"data.root={patient}")
    submission = pd.read_csv(tmp_path / "submission.csv", dtype={"BraTS21ID": str})
    assert submission.BraTS21ID.tolist() == [patient.name]


def test_broken_patients_get_a_fallback_row_an_error_and_exit_code_3(folds, tiny_cohort,
                                                                     tmp_path) -> None:
    cohort = tmp_path / "rsna"  # Kaggle's layout: an unlabelled test/ folder
    for patient in sorted(_ids(tiny_cohort / "rsna" / "train"))[:3]:
        shutil.copytree(tiny_cohort / "rsna" / "train" / patient, cohort / "test" / patient)
    truncated, incomplete, _ = sorted(_ids(cohort / "test"))
    for dicom in (cohort / "test" / truncated / "T1wCE").iterdir():
        dicom.write_bytes(dicom.read_bytes()[:200])
    shutil.rmtree(cohort / "test" / incomplete / "FLAIR")
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, "predict.py", f"ckpt_path={folds / '0'}", f"data.root={cohort}",
         f"output_dir={out}", "device=cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 3, run.stderr[-3000:]
    errors = pd.read_csv(out / "errors.csv", dtype=str).fillna("")
    assert set(errors.patient) == {truncated, incomplete}
    assert errors.set_index("patient").series[truncated] == "T1wCE"
    assert "FLAIR" in errors.set_index("patient").error[incomplete]
    submission = pd.read_csv(out / "submission.csv", dtype={"BraTS21ID": str})
    assert set(submission.BraTS21ID) == _ids(cohort / "test")
    values = submission.set_index("BraTS21ID").MGMT_value
    assert values[truncated] == values[incomplete] == 0.5
    assert values.notna().all() and values.between(0, 1).all()


def test_fold_ensemble_is_the_mean_of_its_members(folds, tiny_cohort, tmp_path) -> None:
    ensemble, _ = _predict(tmp_path / "ensemble", f"ckpt_path={folds}",
                           f"data.root={tiny_cohort}")
    members = [_predict(tmp_path / fold, f"ckpt_path={folds / fold}",
                        f"data.root={tiny_cohort}")[0] for fold in ("0", "1")]
    assert ensemble.members == ["0", "1"] and len(ensemble.patients) == 2
    for k, patient in enumerate(ensemble.patients):
        alone = [member.patients[k].probabilities[0] for member in members]
        assert patient.probabilities[0] == pytest.approx(np.mean(alone), abs=1e-6)
        assert alone[0] != pytest.approx(alone[1], abs=1e-7)  # two different models
    table = pd.read_csv(tmp_path / "ensemble" / "predictions.csv")
    assert np.allclose(table.probability, table[["member_0", "member_1"]].mean(axis=1))


def test_gradcam_maps_open_over_the_scan_they_explain(folds, tiny_cohort, tmp_path) -> None:
    _predict(tmp_path, f"ckpt_path={folds / '1'}", f"data.root={tiny_cohort}",
             "interpret=gradcam", "interpret.layer=backbone.layer2")
    for patient in _ids(tiny_cohort / "rsna" / "test"):
        heatmap = nib.load(tmp_path / "maps" / f"{patient}_gradcam.nii.gz")
        scan = load_volume(tiny_cohort / "rsna" / "test" / patient / SEQUENCES[0])
        assert heatmap.shape == scan.array.shape
        assert np.allclose(heatmap.affine, scan.affine, atol=1e-3)
        assert (tmp_path / "maps" / f"{patient}_gradcam.png").is_file()


def test_tta_uncertainty_is_written_next_to_the_predictions(folds, tiny_cohort,
                                                            tmp_path) -> None:
    _predict(tmp_path, f"ckpt_path={folds / '0'}", f"data.root={tiny_cohort}",
             "uncertainty=tta", "uncertainty.samples=4")
    table = pd.read_csv(tmp_path / "uncertainty.csv", dtype={"BraTS21ID": str})
    assert set(table.BraTS21ID) == _ids(tiny_cohort / "rsna" / "test")
    assert (table.samples == 4).all() and (table["std"] >= 0).all()
    assert table.entropy_bits.between(0, 1).all()


def test_a_checkpoint_outside_its_run_directory_is_a_clear_error(folds, tmp_path) -> None:
    shutil.copy(folds / "0" / "checkpoints" / "last.ckpt", tmp_path / "model.ckpt")
    with pytest.raises(RadiogenomicsError, match="no config.yaml.*run directory"):
        _predict(tmp_path / "out", f"ckpt_path={tmp_path / 'model.ckpt'}")


def test_segmenter_writes_masks_on_the_scan_volumes_and_dice(tiny_cohort, tmp_path) -> None:
    run = _train(tiny_cohort, tmp_path, tmp_path / "unet", "model=unet",
                 "model.net.channels=[4,8,16]", "model.net.strides=[2,2]")
    result, report = _predict(tmp_path / "out", f"ckpt_path={run}", f"data.root={tiny_cohort}")
    table = pd.read_csv(tmp_path / "out" / "segmentations.csv", dtype={"BraTS21ID": str})
    assert set(table.BraTS21ID) == _ids(tiny_cohort / "rsna" / "test")
    assert {"ET_ml", "TC_ml", "WT_ml", "dice_wt", "hd95"} <= set(table.columns)
    for patient in table.BraTS21ID:
        mask = nib.load(tmp_path / "out" / "masks" / f"{patient}_seg.nii.gz")
        scan = load_volume(tiny_cohort / "rsna" / "test" / patient / SEQUENCES[0])
        assert mask.shape == scan.array.shape
        assert set(np.unique(mask.get_fdata())) <= {0, 1, 2, 4}  # BraTS 2021 codes
    assert report is not None and "dice_wt" in report.metrics


def test_a_2d_classifier_aggregates_the_slices_it_was_trained_on() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    module = ClassificationModule(net, optimizer=None).eval()
    volume = torch.zeros(1, 1, 4, 4, 6)
    volume[..., 2], volume[..., 3] = 1.0, -3.0  # the 2 central slices of 6
    with torch.no_grad():
        per_slice = torch.sigmoid(net(to_slices(volume[0], axis=2)[[2, 3]]))[:, 0]
    for how, expected in (("mean", per_slice.mean()), ("vote", (per_slice >= 0.5).float().mean())):
        model = TrainedModel("2d", Path("run"), Path("run.ckpt"), OmegaConf.create(), module,
                             PreprocessConfig(sequences=("FLAIR",)), "mgmt",
                             SliceSampling("axial", 2, "central", how))
        assert model.probabilities(volume)[0, 0] == pytest.approx(float(expected))
