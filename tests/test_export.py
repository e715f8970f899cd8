"""radiogenomics export: ONNX and TorchScript networks that predict as their checkpoint does,
a manifest and a MONAI bundle, and predict.py with the export folder as ckpt_path."""

from __future__ import annotations

import json
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
from radiogenomics.inference.trained_models import load_models
from tests.test_predict import _predict, _train

ROOT = Path(__file__).resolve().parents[1]
FORMATS = tuple(MODEL_FILES)
TOLERANCE = 1e-5
"""Float tolerance of probabilities, exported against checkpoint."""


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


@pytest.mark.parametrize("format", FORMATS)
def test_the_monai_bundle_parses_and_runs_its_network(exports, tiny_cohort, format) -> None:
    from monai.bundle import ConfigParser

    bundle = exports["cnn3d", format] / "bundle"
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
    parser["dataset_dir"] = str(tiny_cohort / "brats")
    cases = parser.get_parsed_content("datalist")
    assert len(cases) == len([p for p in (tiny_cohort / "brats").iterdir() if p.is_dir()])
    image = parser.get_parsed_content("preprocessing")(cases[0])["image"]
    assert tuple(image.shape) == (2, 16, 16, 16)
    probability = parser.get_parsed_content("predict")(cases[0])
    assert probability.shape == (1,) and 0 <= float(probability) <= 1
    network = parser.get_parsed_content("network")
    batch = torch.randn(2, 2, 16, 16, 16)
    expected = ExportedNet(exports["cnn3d", "torchscript"] / "model.ts")(batch)
    torch.testing.assert_close(network(batch), expected, atol=TOLERANCE, rtol=0)


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


def test_a_multirun_is_exported_one_run_at_a_time(runs, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="export one at a time"):
        export_run(runs["cnn3d"].parent, "onnx", tmp_path / "out")


def test_the_predict_benchmark_times_three_backends_on_the_same_patients(runs, tiny_cohort,
                                                                          tmp_path) -> None:
    from benchmarks.predict import BACKENDS, backend_table, compare_backends
    from radiogenomics.data.cohorts import prediction_cohort
    from radiogenomics.inference.runner import CohortPredictor

    models = load_models(runs["cnn3d"], "last")
    cases = prediction_cohort(tiny_cohort / "rsna", models[0].preprocess.sequences,
                              split="test").cases
    result = compare_backends(runs["cnn3d"], cases, CohortPredictor(models), BACKENDS, tmp_path)
    assert list(result) == list(BACKENDS)
    for row in result.values():
        assert 0 < row["network_s"] <= row["total_s"]
        assert row["max_abs_difference"] <= TOLERANCE
    assert all(name in backend_table(result) for name in BACKENDS)
