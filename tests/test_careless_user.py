"""A careless user's mistakes (issue #14): one clear message and exit 2, no user file lost."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radiogenomics import compare, cv
from radiogenomics.data.convert import ERRORS_FILE, convert_cohort
from radiogenomics.data.convert import main as convert_main
from radiogenomics.data.dicom import read_dicom
from radiogenomics.data.synthetic.__main__ import main as synthetic_main
from radiogenomics.errors import CohortError, DicomError

PATIENT = "00000"


def patient_copy(tiny_cohort: Path, tmp_path: Path) -> Path:
    """A real copy of one RSNA patient folder, free to break."""
    return Path(shutil.copytree(tiny_cohort / "rsna" / "train" / PATIENT, tmp_path / PATIENT))


def test_convert_never_replaces_a_file_already_in_out(tiny_cohort, tmp_path, capsys) -> None:
    patient = patient_copy(tiny_cohort, tmp_path)
    out = tmp_path / "out"
    mine = out / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own file")
    (out / "notes.txt").write_text("precious")
    assert convert_main([str(patient), str(out), "--workers", "1"]) == 2
    error = capsys.readouterr().err
    assert "already holds 1 file(s)" in error and "--overwrite" in error
    assert "Traceback" not in error
    assert mine.read_text() == "my own file"
    assert sorted(p.name for p in out.rglob("*")) == sorted(
        ["BraTS2021_00000", "BraTS2021_00000_flair.nii.gz", "notes.txt"])
    # converting twice into one folder is refused too; --overwrite replaces only its own files
    assert convert_main([str(patient), str(out), "--workers", "1", "--overwrite"]) == 0
    assert mine.stat().st_size > 1000 and (out / "notes.txt").read_text() == "precious"
    assert convert_main([str(patient), str(out), "--workers", "1"]) == 2


def test_convert_overwrite_leaves_no_stale_file_of_a_series_that_now_fails(
    tiny_cohort, tmp_path
) -> None:
    patient = patient_copy(tiny_cohort, tmp_path)
    out = tmp_path / "out"
    assert convert_cohort(patient, out, workers=1).ok
    stale = out / "BraTS2021_00000" / "BraTS2021_00000_t2.nii.gz"
    assert stale.is_file()
    shutil.rmtree(patient / "T2w")
    report = convert_cohort(patient, out, workers=1, overwrite=True)
    assert [(f.patient, f.series) for f in report.failures] == [(PATIENT, "T2w")]
    assert not stale.exists()


@pytest.mark.parametrize("case", ["missing input", "input is a file", "output is a file"])
def test_convert_bad_folders_exit_2_without_traceback(tiny_cohort, tmp_path, capsys,
                                                      case) -> None:
    patient = patient_copy(tiny_cohort, tmp_path)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    args = {
        "missing input": [tmp_path / "nowhere", tmp_path / "out"],
        "input is a file": [a_file, tmp_path / "out"],
        "output is a file": [patient, a_file],
    }[case]
    assert convert_main([*map(str, args), "--workers", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: [file ") and " -> " in error
    assert a_file.read_text() == "x"


def test_convert_refuses_two_folders_of_one_sequence(tiny_cohort, tmp_path) -> None:
    patient = patient_copy(tiny_cohort, tmp_path)
    shutil.copytree(patient / "T1wCE", patient / "T1C")
    out = tmp_path / "out"
    report = convert_cohort(patient, out, workers=1)
    assert [(f.patient, f.series) for f in report.failures] == [(PATIENT, "T1wCE")]
    message = report.failures[0].reason
    assert "two folders of one sequence" in message and "T1C" in message and "keep one" in message
    assert not (out / "BraTS2021_00000" / "BraTS2021_00000_t1ce.nii.gz").exists()
    assert "T1wCE" in (out / ERRORS_FILE).read_text()


@pytest.mark.parametrize("size", [0, 100, 131])
def test_an_empty_or_cut_dicom_image_is_an_error_not_a_stray_file(tiny_cohort, tmp_path,
                                                                   size) -> None:
    folder = patient_copy(tiny_cohort, tmp_path) / "FLAIR"
    first = sorted(folder.glob("*.dcm"))[0]
    first.write_bytes(first.read_bytes()[:size])
    with pytest.raises(DicomError, match="empty or truncated DICOM file") as caught:
        read_dicom(folder, PATIENT)
    assert caught.value.path == str(first) and "copy it again" in str(caught.value)
    skipped = read_dicom(folder, PATIENT, skip_invalid_files=True).meta["skipped"]
    assert skipped == [f"{first.name}: empty or truncated DICOM file ({size} bytes, cut before "
                       "its header)"]


def test_a_stray_non_dicom_file_is_still_left_out(tiny_cohort, tmp_path) -> None:
    folder = patient_copy(tiny_cohort, tmp_path) / "FLAIR"
    (folder / "Thumbs.db").write_bytes(b"not an image at all")
    volume = read_dicom(folder, PATIENT)
    assert volume.meta["skipped"] == ["Thumbs.db: not a DICOM file"]


@pytest.mark.parametrize("holds", ["user files", "a file", "a cohort and user files"])
def test_synthetic_overwrite_never_deletes_user_files(tmp_path, capsys, holds) -> None:
    out = tmp_path / "mine"
    if holds == "a file":
        out.write_text("precious")
    else:
        out.mkdir()
        if holds == "a cohort and user files":
            (out / "cohort.json").write_text("{}")
            (out / "rsna").mkdir()
        (out / "notes.txt").write_text("precious")
    with pytest.raises(SystemExit) as caught:
        synthetic_main(["--out", str(out), "--patients", "2", "--size", "16", "--overwrite",
                        "--workers", "1"])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "never" in error and str(out) in error and "Traceback" not in error
    assert (out if holds == "a file" else out / "notes.txt").read_text() == "precious"


def test_synthetic_refuses_a_user_folder_without_suggesting_overwrite(tmp_path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(SystemExit) as caught:
        synthetic_main(["--out", str(out), "--patients", "2", "--size", "16", "--workers", "1"])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "pass overwrite" not in error and "new or empty folder" in error
    assert (out / "notes.txt").read_text() == "precious"


def test_cohort_error_is_raised_for_an_output_path_that_is_a_file(tiny_cohort, tmp_path) -> None:
    patient = patient_copy(tiny_cohort, tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(CohortError, match="not a folder"):
        convert_cohort(patient, a_file, workers=1)


def write_fold(folder: Path, fold: int, n_folds: int) -> None:
    """A finished fold of a `train.py -m data.fold=...` multirun (what the summary reads)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- data.fold={fold}\n")
    (folder / "config.yaml").write_text(f"data:\n  fold: {fold}\n  n_folds: {n_folds}\n")
    (folder / "run_info.json").write_text(json.dumps({"fold": fold}))
    (folder / "csv").mkdir()
    pd.DataFrame({"epoch": [0, 0], "step": [1, 2], "val/auc": [0.5, np.nan],
                  "test/auc": [np.nan, 0.7]}).to_csv(folder / "csv" / "metrics.csv", index=False)
    pd.DataFrame({"id": [f"{fold}{i:04d}" for i in range(6)], "label": [0, 1] * 3,
                  "probability": np.linspace(0.1, 0.9, 6), "fold": fold}).to_csv(
        folder / cv.OOF_FILE, index=False)


def test_cv_summary_names_a_fold_that_failed(tmp_path, caplog) -> None:
    """A 3-fold multirun whose fold 2 crashed before its first log (only .hydra/ and train.log):
    the summary of the two other folds says so, it is never taken for the whole CV."""
    write_fold(tmp_path / "0", 0, 3)
    write_fold(tmp_path / "1", 1, 3)
    (tmp_path / "2" / ".hydra").mkdir(parents=True)
    (tmp_path / "2" / "train.log").write_text("ConfigError: ...\n")
    with caplog.at_level(logging.WARNING, logger="radiogenomics.cv"):
        cv.summarize_cv(tmp_path, n_bootstrap=50)
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "fold(s) 2 of 3 have no finished run" in warnings
    assert "hold no run, a job that failed: 2" in warnings


@pytest.mark.parametrize("tool", [cv, compare])
def test_cv_and_compare_exit_2_on_a_wrong_directory(tmp_path, capsys, tool) -> None:
    with pytest.raises(SystemExit) as caught:
        tool.main([str(tmp_path / "nowhere")])
    assert caught.value.code == 2
    error = capsys.readouterr().err
    assert "not found" in error and " -> " in error and "Traceback" not in error


def test_converting_a_nifti_cohort_is_one_clear_message(tiny_cohort, tmp_path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "radiogenomics.data.convert",
                             str(tiny_cohort / "brats"), str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "NIfTI volumes, not DICOM" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()
