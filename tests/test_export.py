"""radiogenomics export: ONNX and TorchScript networks that predict as their checkpoint (or
their multirun's fold ensemble) does, a manifest and a MONAI bundle, and predict.py with the
export folder as ckpt_path."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from radiogenomics.errors import CheckpointError, MissingExtraError, RadiogenomicsError
from radiogenomics.inference.export import example_input, export_run
from radiogenomics.inference.exported import MANIFEST, MODEL_FILES, ExportedNet
from radiogenomics.inference.fold_ensemble import FoldEnsemble
from radiogenomics.inference.trained_models import load_models
from tests.test_cv import train_command
from tests.test_predict import _predict, _train

ROOT = Path(__file__).resolve().parents[1]
FORMATS = tuple(MODEL_FILES)
TOLERANCE = 1e-5
"""Float tolerance of probabilities, exported against checkpoint."""
SLICE_MODEL = ("model=multiscale", "data.slices_per_case=4", "model.net.pathway_channels=[4,8]",
               "model.net.fusion_channels=8")
"""A tiny 2D multiscale CNN on 4 axial slices per patient."""
ENSEMBLE_TOLERANCE = 1e-4
"""Float tolerance of probabilities, exported fold ensemble (and slice, multitask) against
predict.py with the run(s)."""


@pytest.fixture(scope="module")
def runs(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny cnn3d (the default model) and a tiny unet run, one epoch each; the unet segments
    by sliding windows of 8^3 over the 16^3 volume, as large-volume segmenters do."""
    work = tmp_path_factory.mktemp("export-runs")
    return {
        "cnn3d": _train(tiny_cohort, work, work / "cnn3d", "model.net.widen_factor=0.25"),
        "unet": _train(tiny_cohort / "brats", work, work / "unet", "model=unet", "data=brats",
                       "model.net.channels=[4,8,16]", "model.net.strides=[2,2]",
                       "model.patch_size=[8,8,8]"),
    }


@pytest.fixture(scope="module")
def exports(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
            ) -> dict[tuple[str, str], Path]:
    """Each run exported in each format."""
    out = tmp_path_factory.mktemp("exports")
    return {(model, format): export_run(run, format, out / f"{model}-{format}").parent
            for model, run in runs.items() for format in FORMATS}


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("model", ["cnn3d", "unet"])
def test_exported_network_gives_the_checkpoints_outputs(runs, exports, model, format) -> None:
    trained = load_models(runs[model])[0]
    exported = load_models(exports[model, format])[0]
    assert isinstance(exported.net, ExportedNet) and exported.net.format == format
    batch = torch.randn(3, *example_input(trained).shape[1:])  # another batch size than exported
    with torch.no_grad():
        expected, got = trained.net(batch), exported.net(batch)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=TOLERANCE, rtol=0)
    assert exported.preprocess == trained.preprocess and exported.target == trained.target


@pytest.mark.parametrize("format", FORMATS)
def test_predict_with_an_exported_classifier_writes_the_checkpoints_predictions(
        runs, exports, tiny_cohort, tmp_path, format) -> None:
    root = f"data.root={tiny_cohort / 'rsna'}"
    _predict(tmp_path / "checkpoint", f"ckpt_path={runs['cnn3d']}", root)
    _predict(tmp_path / "exported", f"ckpt_path={exports['cnn3d', format]}", root)
    expected, got = (pd.read_csv(tmp_path / name / "predictions.csv", dtype={"BraTS21ID": str})
                     for name in ("checkpoint", "exported"))
    assert len(got) == len(expected) > 0 and (got.status == "ok").all()
    assert f"member_cnn3d-{format}" in got.columns  # the exported network predicted
    assert list(got.BraTS21ID) == list(expected.BraTS21ID)
    np.testing.assert_allclose(got.probability, expected.probability, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("format", FORMATS)
def test_predict_with_an_exported_segmenter_writes_the_checkpoints_masks(
        runs, exports, tiny_cohort, tmp_path, format) -> None:
    root = f"data.root={tiny_cohort / 'brats'}"
    _predict(tmp_path / "checkpoint", f"ckpt_path={runs['unet']}", root)
    _predict(tmp_path / "exported", f"ckpt_path={exports['unet', format]}", root)
    masks = sorted((tmp_path / "checkpoint" / "masks").glob("*_seg.nii.gz"))
    assert masks
    report = (tmp_path / "exported" / "report.md").read_text()
    assert f"unet-{format}/{MODEL_FILES[format]}" in report  # the exported network segmented
    for mask in masks:
        expected = nib.load(mask).get_fdata()
        got = nib.load(tmp_path / "exported" / "masks" / mask.name).get_fdata()
        assert (got == expected).all(), mask.name
    expected, got = (pd.read_csv(tmp_path / name / "segmentations.csv")
                     for name in ("checkpoint", "exported"))
    np.testing.assert_allclose(got.WT_ml, expected.WT_ml)


def test_manifest_says_what_the_network_expects_and_returns(runs, exports) -> None:
    manifest = json.loads((exports["cnn3d", "onnx"] / MANIFEST).read_text())
    assert manifest["model_file"] == "model.onnx"
    assert manifest["task"]["target"] == "mgmt"
    assert manifest["preprocessing"]["sequences"] == ["T1wCE", "FLAIR"]
    assert manifest["preprocessing"]["spatial_size"] == [16, 16, 16]
    assert manifest["input"]["shape"] == ["batch", 2, 16, 16, 16]
    assert manifest["output"]["class_names"] == ["unmethylated", "methylated"]
    assert manifest["output"]["activation"] == "sigmoid"
    assert manifest["source"]["run"] == str(runs["cnn3d"].resolve())
    assert "git_commit" in manifest["source"]
    assert manifest["exported"]["versions"]["torch"] and manifest["exported"]["git_commit"] != ""
    segmenter = json.loads((exports["unet", "torchscript"] / MANIFEST).read_text())
    assert segmenter["output"]["channels"] == ["ET", "TC", "WT"]
    assert segmenter["output"]["sliding_window"]["roi_size"] == [8, 8, 8]
    assert segmenter["input"]["shape"] == ["batch", 4, 8, 8, 8]


def _check_bundle(folder: Path, cohort: Path) -> dict:
    """The MONAI bundle in `folder` has MONAI's metadata fields, parses, preprocesses a case,
    predicts a probability and holds the exported network; its metadata."""
    from monai.bundle import ConfigParser

    bundle = folder / "bundle"
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.ts"):
        assert (bundle / name).is_file(), name
    metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
    for key in ("schema", "version", "monai_version", "pytorch_version", "numpy_version",
                "optional_packages_version", "task", "description", "authors", "copyright",
                "network_data_format"):
        assert key in metadata, key
    inputs = metadata["network_data_format"]["inputs"]["image"]
    assert inputs["num_channels"] == 2 and inputs["spatial_shape"] == [16, 16, 16]
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    parser["dataset_dir"] = str(cohort)
    cases = parser.get_parsed_content("datalist")
    assert len(cases) == len([p for p in cohort.iterdir() if p.is_dir()])
    image = parser.get_parsed_content("preprocessing")(cases[0])["image"]
    assert tuple(image.shape) == (2, 16, 16, 16)
    probability = parser.get_parsed_content("predict")(cases[0])
    assert probability.shape == (1,) and 0 <= float(probability) <= 1
    network = parser.get_parsed_content("network")
    batch = torch.randn(2, 2, 16, 16, 16)
    model_file = folder / json.loads((folder / MANIFEST).read_text())["model_file"]
    torch.testing.assert_close(network(batch), ExportedNet(model_file)(batch),
                               atol=TOLERANCE, rtol=0)
    return metadata


@pytest.mark.parametrize("format", FORMATS)
def test_the_monai_bundle_parses_and_runs_its_network(exports, tiny_cohort, format) -> None:
    _check_bundle(exports["cnn3d", format], tiny_cohort / "brats")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_export_command_writes_the_folder_and_refuses_a_full_one(runs, tmp_path) -> None:
    out = tmp_path / "exported"
    result = _run("-m", "radiogenomics", "export", str(runs["cnn3d"]), "--format", "onnx",
                  "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("model.onnx", MANIFEST, "config.yaml", "bundle/models/model.ts"):
        assert (out / name).is_file(), name
    again = _run("-m", "radiogenomics", "export", str(runs["cnn3d"]), "--format", "onnx",
                 "--out", str(out))
    assert again.returncode == 2 and "not empty" in again.stderr
    assert "Traceback" not in again.stderr


def test_gradcam_with_an_exported_model_is_one_message(exports, tiny_cohort, tmp_path) -> None:
    result = _run("predict.py", f"ckpt_path={exports['cnn3d', 'onnx']}",
                  f"data.root={tiny_cohort / 'rsna'}", f"output_dir={tmp_path}", "device=cpu",
                  "interpret=gradcam")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "interpret= needs the trained network" in output and "Traceback" not in output


def test_mc_dropout_with_an_exported_model_is_refused(exports, tiny_cohort, tmp_path) -> None:
    with pytest.raises(RadiogenomicsError, match="uncertainty=mc_dropout needs the trained"):
        _predict(tmp_path, f"ckpt_path={exports['cnn3d', 'torchscript']}",
                 f"data.root={tiny_cohort / 'rsna'}", "uncertainty=mc_dropout")


def test_tta_works_with_an_exported_model(exports, tiny_cohort, tmp_path) -> None:
    _predict(tmp_path, f"ckpt_path={exports['cnn3d', 'onnx']}",
             f"data.root={tiny_cohort / 'rsna'}", "uncertainty=tta", "uncertainty.samples=2")
    assert (tmp_path / "uncertainty.csv").is_file()


@pytest.mark.parametrize("missing", [MANIFEST, "model.onnx"])
def test_export_folder_missing_a_file_names_it(exports, tmp_path, missing) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(exports["cnn3d", "onnx"], folder)
    (folder / missing).unlink()
    with pytest.raises(CheckpointError, match=rf"{missing}.*radiogenomics export RUN"):
        load_models(folder)


def test_predict_with_a_folder_missing_its_manifest_exits_2(exports, tiny_cohort,
                                                            tmp_path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(exports["cnn3d", "torchscript"], folder)
    (folder / MANIFEST).unlink()
    result = _run("predict.py", f"ckpt_path={folder}", f"data.root={tiny_cohort / 'rsna'}",
                  f"output_dir={tmp_path / 'out'}", "device=cpu")
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert f"no {MANIFEST}" in output and "Traceback" not in output


def test_onnx_model_without_onnxruntime_names_the_extra(exports, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"radiogenomics\[onnx\]"):
        ExportedNet(exports["cnn3d", "onnx"] / "model.onnx")


def test_onnx_export_without_its_extra_names_it_and_writes_nothing(runs, tmp_path,
                                                                   monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MissingExtraError, match=r"radiogenomics\[onnx\]"):
        export_run(runs["cnn3d"], "onnx", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def sweep(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-fold CV of a tiny cnn3d by the README's command, ``python train.py cv=kfold``, with
    a Platt calibrator fitted on its out-of-fold predictions: the multirun folder."""
    work = tmp_path_factory.mktemp("cv")
    result = subprocess.run(
        train_command(tiny_cohort, work, "cv=kfold", "data.n_folds=2", "calibration=platt",
                      "logger=csv", "model.net.widen_factor=0.25"),
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (work / "logs" / "train" / "multiruns").iterdir()
    assert (folder / "calibration.json").is_file()
    return folder


@pytest.fixture(scope="module")
def ensemble_exports(sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sweep's fold ensemble exported in each format (ONNX by ``radiogenomics export``)."""
    out = tmp_path_factory.mktemp("ensemble-exports")
    result = _run("-m", "radiogenomics", "export", str(sweep), "--format", "onnx", "--out",
                  str(out / "ensemble-onnx"))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"onnx": out / "ensemble-onnx",
            "torchscript": export_run(sweep, "torchscript", out / "ensemble-torchscript").parent}


def _predictions(out: Path, ckpt_path: Path, *overrides: str) -> tuple[pd.DataFrame, str]:
    """predict.py with `ckpt_path`: its predictions.csv and its report.md ("" if none)."""
    _predict(out, f"ckpt_path={ckpt_path}", *overrides)
    report = out / "report.md"
    return (pd.read_csv(out / "predictions.csv", dtype={"BraTS21ID": str}),
            report.read_text() if report.is_file() else "")


def _assert_same_probabilities(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(got) == len(expected) > 0 and (got.status == "ok").all()
    assert list(got.BraTS21ID) == list(expected.BraTS21ID)
    columns = [c for c in expected.columns if c.startswith("probability")]
    assert columns and columns == [c for c in got.columns if c.startswith("probability")]
    np.testing.assert_allclose(got[columns], expected[columns], atol=ENSEMBLE_TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def multirun_predictions(sweep: Path, tiny_cohort: Path,
                         tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, str]:
    """predict.py with the multirun on its training patients (the leakage audit flags them)."""
    return _predictions(tmp_path_factory.mktemp("multirun-predict"), sweep,
                        f"data.root={tiny_cohort / 'rsna'}", "data.split=train")


def _leakage_line(report: str) -> str:
    (line,) = [line for line in report.splitlines() if "leakage audit" in line]
    return line


@pytest.mark.parametrize("format", FORMATS)
def test_predict_with_an_exported_fold_ensemble_writes_the_multiruns_predictions(
        ensemble_exports, multirun_predictions, tiny_cohort, tmp_path, format) -> None:
    expected, expected_report = multirun_predictions
    got, report = _predictions(tmp_path, ensemble_exports[format],
                               f"data.root={tiny_cohort / 'rsna'}", "data.split=train")
    assert [c for c in got.columns if c.startswith("member_")] == [f"member_ensemble-{format}"]
    _assert_same_probabilities(got, expected)
    # the multirun's Platt calibrator moved its probabilities off the mean of its members,
    # and the export applied the same calibration
    raw = expected[["member_0", "member_1"]].mean(axis=1)
    assert np.abs(expected.probability - raw).max() > 10 * ENSEMBLE_TOLERANCE
    assert "probabilities calibrated" in expected_report and "probabilities calibrated" in report
    # the leakage audit saw every member's training and validation patients
    assert "FAIL" in _leakage_line(expected_report)
    assert _leakage_line(report) == _leakage_line(expected_report)


@pytest.mark.parametrize("activation, channels", [("sigmoid", 1), ("sigmoid", 3),
                                                  ("softmax", 4)])
def test_the_ensemble_network_gives_the_mean_of_its_members_probabilities(activation,
                                                                          channels) -> None:
    torch.manual_seed(0)
    members = [torch.nn.Conv3d(2, channels, 3, padding=1) for _ in range(3)]
    image = torch.randn(2, 2, 6, 6, 6)
    probability = torch.sigmoid if activation == "sigmoid" else (lambda x: x.softmax(dim=1))
    with torch.no_grad():
        expected = torch.stack([probability(net(image) * 4) for net in members]).mean(0)
        got = probability(FoldEnsemble([torch.nn.Sequential(net, Scale(4)) for net in members],
                                       activation)(image))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


class Scale(torch.nn.Module):
    """Multiply by a constant: logits large enough to make the ensemble's mean non-trivial."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_manifest_of_a_fold_ensemble_names_its_members_and_calibration(
        sweep, ensemble_exports) -> None:
    folder = ensemble_exports["onnx"]
    manifest = json.loads((folder / MANIFEST).read_text())
    ensemble = manifest["ensemble"]
    assert [Path(m["run"]).name for m in ensemble["members"]] == ["0", "1"]
    assert [m["fold"] for m in ensemble["members"]] == [0, 1]
    assert manifest["source"]["run"] == str(sweep.resolve())
    assert len(manifest["source"]["checkpoints"]) == 2
    assert "mean probability" in ensemble["combination"]
    for member in ensemble["members"]:
        for name in ("config.yaml", "run_info.json", "splits.json"):
            assert (folder / member["folder"] / name).is_file(), (member["folder"], name)
    assert ensemble["calibration"]["file"] == "calibration.json"
    assert (folder / "calibration.json").read_bytes() == (sweep / "calibration.json").read_bytes()
    assert (folder / "config.yaml").read_bytes() == (sweep / "0" / "config.yaml").read_bytes()


def test_the_bundle_of_an_exported_fold_ensemble_parses_and_runs(ensemble_exports,
                                                                  tiny_cohort) -> None:
    metadata = _check_bundle(ensemble_exports["onnx"], tiny_cohort / "brats")
    assert "the mean of 2 fold models" in metadata["changelog"]["0.1.0"]


def test_an_export_missing_a_members_run_files_names_them(ensemble_exports, tmp_path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(ensemble_exports["torchscript"], folder)
    shutil.rmtree(folder / "members" / "1")
    with pytest.raises(CheckpointError, match=r"members/1 .*copy the whole export folder"):
        load_models(folder)


@pytest.mark.parametrize("member, refusal", [("unet", "sliding windows"),
                                              ("vote", "vote of their slices")])
def test_a_fold_ensemble_one_network_cannot_reproduce_is_refused_with_what_to_do(
        request, tiny_cohort, tmp_path, member, refusal) -> None:
    if member == "unet":
        run = request.getfixturevalue("runs")["unet"]
    else:  # a slice classifier scoring patients by majority vote
        run = _train(tiny_cohort, tmp_path, tmp_path / "vote", *SLICE_MODEL, "model.aggregate=vote")
    multirun = tmp_path / "multirun"
    for job in ("0", "1"):
        shutil.copytree(run, multirun / job)
    with pytest.raises(CheckpointError, match=rf"{refusal}.*ckpt_path={multirun}"):
        export_run(multirun, "torchscript", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def slice_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 2D multiscale CNN on 4 axial slices per patient, scored by their mean."""
    work = tmp_path_factory.mktemp("slice-run")
    return _train(tiny_cohort, work, work / "multiscale", *SLICE_MODEL)


@pytest.fixture(scope="module")
def multitask_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny multitask SegResNet (tumour masks + MGMT from one encoder)."""
    work = tmp_path_factory.mktemp("multitask-run")
    return _train(tiny_cohort, work, work / "multitask", "model=multitask",
                  "model.net.init_filters=8")


def _export_predicts_as_its_checkpoint(run: Path, cohort: Path, tmp_path: Path,
                                       format: str) -> dict:
    """Export `run` and predict the cohort with both: the same probabilities; the manifest."""
    folder = export_run(run, format, tmp_path / "exported").parent
    root = f"data.root={cohort / 'rsna'}"
    expected, _ = _predictions(tmp_path / "checkpoint", run, root)
    got, _ = _predictions(tmp_path / "predicted", folder, root)
    _assert_same_probabilities(got, expected)
    assert "member_exported" in got.columns  # the exported network predicted
    return json.loads((folder / MANIFEST).read_text())


@pytest.mark.parametrize("format", FORMATS)
def test_predict_with_an_exported_slice_classifier_writes_the_checkpoints_predictions(
        slice_run, tiny_cohort, tmp_path, format) -> None:
    manifest = _export_predicts_as_its_checkpoint(slice_run, tiny_cohort, tmp_path, format)
    assert manifest["input"]["shape"] == ["batch", 2, 16, 16]  # a batch of axial slices
    assert manifest["input"]["slices"] == {"plane": "axial", "count": 4,
                                           "selection": "brain_area", "aggregate": "mean"}


@pytest.mark.slow
@pytest.mark.parametrize("format", FORMATS)
def test_predict_with_an_exported_multitask_run_writes_the_checkpoints_class_predictions(
        multitask_run, tiny_cohort, tmp_path, format, caplog) -> None:
    caplog.set_level(logging.INFO, logger="radiogenomics.inference.pipeline")
    manifest = _export_predicts_as_its_checkpoint(multitask_run, tiny_cohort, tmp_path, format)
    assert manifest["output"]["kind"] == "classification"  # the class logits only
    assert "segmentation decoder" in manifest["output"]["segmentation"]
    assert (tmp_path / "checkpoint" / "segmentations.csv").is_file()  # the run writes masks
    assert not (tmp_path / "predicted" / "masks").exists()  # its export cannot
    assert "masks need the training run" in caplog.text
