"""predict.py: submissions for every patient, failures reported, fold ensembles, maps, masks."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
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

from radiogenomics.data.readers import load_volume
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.errors import RadiogenomicsError
from radiogenomics.evaluation.overlays import focus_point
from radiogenomics.inference import pipeline, runner
from radiogenomics.inference.runner import CohortPredictor
from radiogenomics.inference.trained_models import SliceSampling, TrainedModel
from radiogenomics.interpret.slice_batch import to_slices
from radiogenomics.models.classifier import ClassificationModule
from radiogenomics.predict import predict
from radiogenomics.train import train
from tests.conftest import CONF_DIR, compose_train, write_png_series

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
    truncated, incomplete, _ = _kaggle_test_folder(tiny_cohort, cohort, 3)
    for dicom in (cohort / "test" / truncated / "T1wCE").iterdir():
        dicom.write_bytes(dicom.read_bytes()[:200])
    shutil.rmtree(cohort / "test" / incomplete / "FLAIR")
    out = tmp_path / "out"
    run = _predict_subprocess(folds / "0", cohort, out)
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


def _kaggle_test_folder(tiny_cohort: Path, root: Path, count: int) -> list[str]:
    """`count` patients of the tiny cohort copied into Kaggle's unlabelled ``root/test/``."""
    for patient in sorted(_ids(tiny_cohort / "rsna" / "train"))[:count]:
        shutil.copytree(tiny_cohort / "rsna" / "train" / patient, root / "test" / patient)
    return sorted(_ids(root / "test"))


def _predict_subprocess(ckpt_path: Path, root: Path, out: Path) -> subprocess.CompletedProcess:
    """``python predict.py`` on CPU as a user runs it (exit code and files are what count)."""
    return subprocess.run(
        [sys.executable, "predict.py", f"ckpt_path={ckpt_path}", f"data.root={root}",
         f"output_dir={out}", "device=cpu"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def _check_fallback_submission(out: Path, patients: list[str]) -> None:
    """Every patient failed: a fallback row and an error row each."""
    submission = pd.read_csv(out / "submission.csv", dtype={"BraTS21ID": str})
    assert sorted(submission.BraTS21ID) == patients
    assert (submission.MGMT_value == 0.5).all()
    errors = pd.read_csv(out / "errors.csv", dtype=str)
    assert sorted(set(errors.patient)) == patients
    predictions = pd.read_csv(out / "predictions.csv", dtype={"BraTS21ID": str})
    assert (predictions.status == "failed").all()


def test_when_every_patient_fails_each_still_gets_a_row_and_the_exit_code_is_3(
        folds, tiny_cohort, tmp_path) -> None:
    # no patient has the FLAIR series the model needs: the cohort itself has no usable case
    cohort = tmp_path / "rsna"
    patients = _kaggle_test_folder(tiny_cohort, cohort, 2)
    for patient in patients:
        shutil.rmtree(cohort / "test" / patient / "FLAIR")
    out = tmp_path / "out"
    run = _predict_subprocess(folds / "0", cohort, out)
    assert run.returncode == 3, run.stderr[-3000:]
    _check_fallback_submission(out, patients)
    assert pd.read_csv(out / "errors.csv").error.str.contains("FLAIR").all()
    # every patient is read by the cohort but none can be preprocessed
    for patient in patients:
        shutil.copytree(tiny_cohort / "rsna" / "train" / patient / "FLAIR",
                        cohort / "test" / patient / "FLAIR")
        for dicom in (cohort / "test" / patient / "T1wCE").iterdir():
            dicom.write_bytes(dicom.read_bytes()[:200])
    result, report = _predict(tmp_path / "truncated", f"ckpt_path={folds / '0'}",
                              f"data.root={cohort}")
    assert report is None and {f.patient for f in result.failures} == set(patients)
    _check_fallback_submission(tmp_path / "truncated", patients)


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


def test_gradcam_maps_open_over_the_scan_they_explain(folds, tiny_cohort, tmp_path,
                                                     monkeypatch) -> None:
    drawn = {}
    draw = runner.write_map_figure

    def keep(view, path, explainer, title):
        drawn[path.name] = view, title
        return draw(view, path, explainer, title)

    monkeypatch.setattr(runner, "write_map_figure", keep)
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _predict(tmp_path, f"ckpt_path={folds / '1'}", f"data.root={tiny_cohort}",
             "interpret=gradcam", "interpret.layer=backbone.layer2", "logger=tensorboard")
    patients = _ids(tiny_cohort / "rsna" / "test")
    for patient in patients:
        heatmap = nib.load(tmp_path / "maps" / f"{patient}_gradcam.nii.gz")
        scan = load_volume(tiny_cohort / "rsna" / "test" / patient / SEQUENCES[0])
        assert heatmap.shape == scan.array.shape
        assert np.allclose(heatmap.affine, scan.affine, atol=1e-3)
        assert (tmp_path / "maps" / f"{patient}_gradcam.png").is_file()
        # the figure: the scan at its own resolution (not the 16-voxel input), the map on it,
        # slices through the case's tumour, and the patient's prediction in the title
        view, title = drawn[f"{patient}_gradcam.png"]
        assert view.scan.array.shape == scan.array.shape and view.scan.array.shape != (16,) * 3
        np.testing.assert_allclose(view.heatmap, heatmap.get_fdata(), atol=1e-5)
        assert view.tumour is not None and view.tumour.any()
        point = focus_point(view.scan.array, view.heatmap, view.tumour)
        assert all(np.take(view.tumour, index, axis=axis).any()
                   for axis, index in enumerate(point))
        assert title.startswith(f"patient {patient}: predicted ") and "methylated" in title
    events = EventAccumulator(str(next((tmp_path / "tensorboard").rglob("events.*")).parent))
    events.Reload()
    assert {f"maps/{patient}_gradcam" for patient in patients} <= set(events.Tags()["images"])


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


@pytest.fixture(scope="module")
def unet_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 3D U-Net run, with dropout so that MC dropout has something to switch on."""
    work = tmp_path_factory.mktemp("unet")
    return _train(tiny_cohort, work, work / "unet", "model=unet", "model.net.channels=[4,8,16]",
                  "model.net.strides=[2,2]", "model.net.dropout=0.2")


def test_segmenter_writes_masks_on_the_scan_volumes_and_dice(unet_run, tiny_cohort,
                                                             tmp_path, monkeypatch) -> None:
    titles = {}
    draw = pipeline.write_segmentation_figure

    def keep(case, mask, preprocessor, path, title):
        titles[path.name] = title
        return draw(case, mask, preprocessor, path, title)

    monkeypatch.setattr(pipeline, "write_segmentation_figure", keep)
    result, report = _predict(tmp_path / "out", f"ckpt_path={unet_run}",
                              f"data.root={tiny_cohort}")
    table = pd.read_csv(tmp_path / "out" / "segmentations.csv", dtype={"BraTS21ID": str})
    assert set(table.BraTS21ID) == _ids(tiny_cohort / "rsna" / "test")
    assert {"ET_ml", "TC_ml", "WT_ml", "dice_wt", "hd95"} <= set(table.columns)
    for patient in table.BraTS21ID:
        mask = nib.load(tmp_path / "out" / "masks" / f"{patient}_seg.nii.gz")
        scan = load_volume(tiny_cohort / "rsna" / "test" / patient / SEQUENCES[0])
        assert mask.shape == scan.array.shape
        assert set(np.unique(mask.get_fdata())) <= {0, 1, 2, 4}  # BraTS 2021 codes
    assert report is not None and "dice_wt" in report.metrics
    # the best and worst of the two test patients by whole-tumour Dice, drawn and reported
    ranked = table.sort_values(["dice_wt", "BraTS21ID"], ascending=[False, True]).BraTS21ID
    assert set(report.figures) >= {"segmentation_best", "segmentation_worst"}
    page = report.markdown.read_text()
    for rank, patient in (("best", ranked.iloc[0]), ("worst", ranked.iloc[-1])):
        figure = plt.imread(tmp_path / "out" / f"segmentation_{rank}.png")
        assert figure.shape[0] > 600 and figure.shape[1] > 600
        assert f"![segmentation_{rank}](segmentation_{rank}.png)" in page
        assert titles[f"segmentation_{rank}.png"].startswith(
            f"{rank} of 2 patients by whole-tumour Dice: patient {patient}, Dice WT ")


@pytest.mark.parametrize("method, samples", [("tta", 4), ("mc_dropout", 3)])
def test_segmenter_uncertainty_maps_lie_on_the_scan_beside_the_masks(unet_run, tiny_cohort,
                                                                     tmp_path, method,
                                                                     samples) -> None:
    result, _ = _predict(tmp_path, f"ckpt_path={unet_run}", f"data.root={tiny_cohort}",
                         f"uncertainty={method}", f"uncertainty.samples={samples}")
    table = pd.read_csv(tmp_path / "uncertainty.csv", dtype={"BraTS21ID": str})
    assert set(table.BraTS21ID) == _ids(tiny_cohort / "rsna" / "test")
    assert (table["method"] == method).all() and (table.samples == samples).all()
    assert {"tumour_voxels", "entropy_tumour_bits", "std_tumour_ET", "std_tumour_TC",
            "std_tumour_WT"} <= set(table.columns)
    spread = []
    for patient in result.patients:
        folder = tmp_path / "masks"
        mask = nib.load(folder / f"{patient.id}_seg.nii.gz")
        scan = load_volume(tiny_cohort / "rsna" / "test" / patient.id / SEQUENCES[0])
        mean, std, entropy = (nib.load(folder / f"{patient.id}_{name}.nii.gz")
                              for name in ("prob_mean", "prob_std", "entropy"))
        for image in (mean, std, entropy):
            assert image.shape[:3] == scan.array.shape == mask.shape
            assert np.allclose(image.affine, scan.affine, atol=1e-3)
        assert mean.shape[3] == std.shape[3] == 3  # ET, TC, WT
        values = entropy.get_fdata()
        assert values.min() >= 0 and values.max() <= 1 + 1e-6  # mean binary entropy, bits
        assert mean.get_fdata().min() >= 0 and mean.get_fdata().max() <= 1 + 1e-6
        tumour = mask.get_fdata() > 0
        row = table.set_index("BraTS21ID").loc[patient.id]
        assert row.tumour_voxels == tumour.sum()
        if tumour.any():
            assert row.entropy_tumour_bits == pytest.approx(values[tumour].mean(), rel=1e-4)
        spread.append(std.get_fdata().max())
    assert max(spread) > 0  # the samples differ


def test_segmenter_tta_without_a_random_transform_is_refused(unet_run, tiny_cohort,
                                                              tmp_path) -> None:
    with pytest.raises(RadiogenomicsError, match="no random transform"):
        _predict(tmp_path, f"ckpt_path={unet_run}", f"data.root={tiny_cohort}",
                 "uncertainty=tta", "uncertainty.transforms=[]")
    with pytest.raises(RadiogenomicsError, match="interpret= explains classifiers"):
        _predict(tmp_path, f"ckpt_path={unet_run}", f"data.root={tiny_cohort}",
                 "interpret=gradcam")


def _png_cohort(tiny_cohort: Path, root: Path) -> Path:
    """The tiny cohort's train patients as PNG slice folders <id>/FLAIR/Image-N.png."""
    for folder in sorted((tiny_cohort / "rsna" / "train").iterdir()):
        write_png_series(folder / "FLAIR", root / folder.name / "FLAIR")
    shutil.copy(tiny_cohort / "rsna" / "train_labels.csv", root)
    return root


def test_a_slice_model_trained_on_png_predicts_png_cohorts(tiny_cohort, tmp_path) -> None:
    png = _png_cohort(tiny_cohort, tmp_path / "png")
    run = _train(png, tmp_path, tmp_path / "run", "data=png", "model=multiscale",
                 "data.slices_per_case=4",
                 "model.net.pathway_channels=[4,8]", "model.net.fusion_channels=8")
    patients = sorted(_ids(png))
    for name, overrides in (("detected", [f"data.root={png}"]),
                            ("named", [f"data.root={png}", "data.layout=png"]),
                            ("trained", [])):  # no root: the training cohort, in its layout
        result, report = _predict(tmp_path / name, f"ckpt_path={run}", *overrides)
        submission = pd.read_csv(tmp_path / name / "submission.csv", dtype={"BraTS21ID": str})
        assert sorted(submission.BraTS21ID) == patients, name
        assert submission.MGMT_value.between(0, 1).all() and not result.failures
        assert report is not None  # train_labels.csv beside the folders: labelled
    # one PNG patient folder, with a series missing from another
    shutil.rmtree(png / patients[1] / "FLAIR")
    _predict(tmp_path / "one", f"ckpt_path={run}", f"data.root={png / patients[0]}")
    assert pd.read_csv(tmp_path / "one" / "submission.csv", dtype=str).BraTS21ID.tolist() == [
        patients[0]]
    result, _ = _predict(tmp_path / "broken", f"ckpt_path={run}", f"data.root={png}")
    assert [f.patient for f in result.failures] == [patients[1]]
    assert len(result.patients) == len(patients)


class SliceOracle:
    """An explainer whose map is 1 on one slice of the network's grid and 0 elsewhere."""

    name = "oracle"

    def __init__(self, index: int) -> None:
        self.index = index

    def check(self, net: nn.Module) -> None:
        """Any net."""

    def __call__(self, net: nn.Module, image: torch.Tensor, axis: int | None = None
                 ) -> np.ndarray:
        heatmap = np.zeros(image.shape[1:], dtype=np.float32)
        heatmap[:, :, self.index] = 1.0
        return heatmap


def test_maps_of_a_slab_model_land_on_their_own_slices_of_the_scan(tmp_path) -> None:
    # a 24x24x40 "brain" on slices 5-35, largest on slice 25: the slab of 8 is slices 21-28
    brain = np.zeros((24, 24, 40), dtype=np.float32)
    for z in range(5, 36):
        half = max(12 - abs(z - 25), 1)
        brain[12 - half:12 + half, 12 - half:12 + half, z] = 100.0 + z
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = [-20.0, -30.0, -40.0]
    path = tmp_path / "flair.nii.gz"
    nib.save(nib.Nifti1Image(brain, affine), path)
    case = {"id": "00001", "images": {"FLAIR": str(path)}, "seg": None, "labels": {},
            "label_scheme": None}
    # the foreground crop keeps slices 3-37 (margin 2): the slab is slices 18-25 of the crop
    config = PreprocessConfig(sequences=("FLAIR",), spacing=None, spatial_size=(24, 24, 8),
                              slab=8, dtype="float32")
    net = nn.Sequential(nn.Conv3d(1, 1, 1), nn.AdaptiveAvgPool3d(1), nn.Flatten())
    model = TrainedModel("slab", Path("run"), Path("run.ckpt"), OmegaConf.create(),
                         ClassificationModule(net, optimizer=None).eval(), config, "mgmt")
    predictor = CohortPredictor([model], tmp_path / "out", explainer=SliceOracle(3))
    prepared = predictor.preprocessor(case)
    assert prepared.image.shape == (1, 24, 24, 8)
    np.testing.assert_allclose(prepared.affine[:3, 3], [-20.0, -30.0, -40.0 + 3.0 * 21])
    _, maps = predictor.predict_case(case)
    written = nib.load(next(p for p in maps if p.name.endswith(".nii.gz")))
    assert written.shape == brain.shape and np.allclose(written.affine, affine)
    heatmap = written.get_fdata()
    assert np.flatnonzero(heatmap.sum(axis=(0, 1))).tolist() == [21 + 3]
    assert heatmap[:, :, 24].min() == pytest.approx(1.0)


def test_a_2d_classifier_aggregates_the_slices_it_was_trained_on() -> None:
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    module = ClassificationModule(net, optimizer=None).eval()
    volume = torch.zeros(1, 1, 4, 4, 6)
    volume[..., 2], volume[..., 3] = 1.0, -3.0  # the 2 central slices of 6
    with torch.no_grad():
        per_slice = torch.sigmoid(net(to_slices(volume[0], axis=2)[[2, 3]]))[:, 0]
    share = (per_slice >= 0.5).float().mean()
    for how, expected in (("mean", per_slice.mean()),
                          ("vote", (1 - 1e-4) * share + 1e-4 * per_slice.mean())):
        model = TrainedModel("2d", Path("run"), Path("run.ckpt"), OmegaConf.create(), module,
                             PreprocessConfig(sequences=("FLAIR",)), "mgmt",
                             SliceSampling("axial", 2, "central", how))
        assert model.probabilities(volume)[0, 0] == pytest.approx(float(expected))
