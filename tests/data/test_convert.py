"""DICOM -> NIfTI cohort conversion (BraTS names, RAS affine, error summary)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from radiogenomics.data.convert import convert_cohort, main
from radiogenomics.data.dicom_write import write_series
from radiogenomics.data.nifti import read_nifti

SERIES = {"FLAIR": "axial", "T1w": "sagittal", "T1wCE": "axial", "T2w": "coronal"}
BRATS = {"FLAIR": "flair", "T1w": "t1", "T1wCE": "t1ce", "T2w": "t2"}


def make_patient(folder: Path, patient: str, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the four RSNA series of one patient; return the expected array and affine of each."""
    rng = np.random.default_rng(seed)
    expected = {}
    for number, (sequence, plane) in enumerate(SERIES.items(), start=1):
        volume = rng.integers(0, 500, size=(6, 7, 5)).astype(np.float32)
        affine = np.diag([1.0, 1.1, 2.0 + number, 1.0])
        affine[:3, 3] = [-3.0 * number, 4.0, 5.0]
        write_series(volume, affine, folder / sequence, plane=plane, patient_id=patient,
                     series_number=number, series_description=sequence,
                     first_number=10 * number + 7)
        expected[sequence] = (volume, affine)
    return expected


@pytest.fixture
def cohort(tmp_path) -> tuple[Path, dict[str, dict]]:
    root = tmp_path / "rsna"
    expected = {
        "00001": make_patient(root / "train" / "00001", "00001", 1),
        "00002": make_patient(root / "test" / "00002", "00002", 2),
    }
    return root, expected


def assert_converted(out: Path, patient: str, expected: dict) -> None:
    for sequence, (volume, affine) in expected.items():
        result = read_nifti(out / patient / f"{patient}_{BRATS[sequence]}.nii.gz")
        np.testing.assert_array_equal(result.array, volume)
        np.testing.assert_allclose(result.affine, affine, atol=1e-4)


def test_cohort_converts_to_brats_names(tmp_path, cohort):
    root, expected = cohort
    report = convert_cohort(root, tmp_path / "out", workers=2)
    assert report.ok and report.patients == ["00001", "00002"]
    assert len(report.written) == 8
    for patient, series in expected.items():
        assert_converted(tmp_path / "out", patient, series)
    errors = (tmp_path / "out" / "conversion_errors.csv").read_text().splitlines()
    assert errors == ["patient,series,path,error"]


def test_single_patient_folder(tmp_path, cohort):
    root, expected = cohort
    assert main([str(root / "train" / "00001"), str(tmp_path / "out"), "--workers", "1"]) == 0
    assert_converted(tmp_path / "out", "00001", expected["00001"])


def test_broken_patient_is_reported_and_others_convert(tmp_path, cohort, capsys):
    root, expected = cohort
    broken = root / "train" / "00003"
    make_patient(broken, "00003", 3)
    flair = sorted((broken / "FLAIR").iterdir())[2]
    flair.write_bytes(flair.read_bytes()[:300])
    for path in (broken / "T2w").iterdir():
        path.unlink()

    assert main([str(root), str(tmp_path / "out"), "--workers", "2"]) == 1
    printed = capsys.readouterr().out
    assert "00003 FLAIR" in printed and "00003 T2w" in printed and flair.name in printed
    assert "truncated" in printed
    for patient, series in expected.items():
        assert_converted(tmp_path / "out", patient, series)
    assert (tmp_path / "out" / "00003" / "00003_t1.nii.gz").exists()
    assert not (tmp_path / "out" / "00003" / "00003_flair.nii.gz").exists()
    with open(tmp_path / "out" / "conversion_errors.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["patient"], r["series"]) for r in rows] == [("00003", "FLAIR"), ("00003", "T2w")]


def test_missing_input_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 1
    assert "does not exist" in capsys.readouterr().err
