"""DICOM -> NIfTI cohort conversion (BraTS names, RAS affine, error summary)."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.convert import convert_cohort, main
from radiogenomics.data.dicom_write import write_series
from radiogenomics.data.nifti import read_nifti
from radiogenomics.data.readers import load_volume
from radiogenomics.errors import CohortError, NiftiError

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


def converted(out: Path, patient: str, sequence: str) -> Path:
    return out / f"BraTS2021_{patient}" / f"BraTS2021_{patient}_{BRATS[sequence]}.nii.gz"


def assert_converted(out: Path, patient: str, expected: dict) -> None:
    for sequence, (volume, affine) in expected.items():
        result = read_nifti(converted(out, patient, sequence))
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
    assert converted(tmp_path / "out", "00003", "T1w").exists()
    assert not converted(tmp_path / "out", "00003", "FLAIR").exists()
    with open(tmp_path / "out" / "conversion_errors.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["patient"], r["series"]) for r in rows] == [("00003", "FLAIR"), ("00003", "T2w")]


def test_missing_input_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), str(tmp_path / "out")]) == 2  # bad input: exit 2
    assert "does not exist" in capsys.readouterr().err


def test_output_is_a_brats_cohort_with_the_labels(tmp_path, cohort):
    root, expected = cohort
    (root / "train_labels.csv").write_text("BraTS21ID,MGMT_value\n1,1\n2,0\n")
    out = tmp_path / "out"
    assert main([str(root), str(out), "--workers", "1"]) == 0
    cases = load_cohort("brats2021", out)
    assert cases.ids == ["00001", "00002"]
    assert [case["labels"]["mgmt"] for case in cases] == [1, 0]
    for case in cases:
        for sequence, (volume, _) in expected[case["id"]].items():
            np.testing.assert_array_equal(load_volume(case["images"][sequence]).array, volume)
    assert (out / "train_labels.csv").read_text() == (root / "train_labels.csv").read_text()


def test_output_inside_the_input_is_refused(cohort):
    root, _ = cohort
    with pytest.raises(CohortError, match="inside the input"):
        convert_cohort(root, root / "nifti")
    assert not (root / "nifti").exists()


def test_skipped_files_are_noted_and_skip_invalid_files_flag(tmp_path, cohort, capsys):
    root, expected = cohort
    flair = root / "train" / "00001" / "FLAIR"
    (flair / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(300))
    first = sorted(flair.glob("*.dcm"))[0]
    first.write_bytes(first.read_bytes()[:300])
    assert main([str(root), str(tmp_path / "a"), "--workers", "1"]) == 1
    assert "--skip-invalid-files" in capsys.readouterr().out
    assert main([str(root), str(tmp_path / "b"), "--workers", "1", "--skip-invalid-files"]) == 0
    printed = capsys.readouterr().out
    assert "00001 FLAIR: skipped Thumbs.db: not a DICOM file" in printed
    assert f"00001 FLAIR: skipped {first.name}" in printed
    notes = (tmp_path / "b" / "conversion_notes.csv").read_text()
    assert "Thumbs.db" in notes and first.name in notes
    result = read_nifti(converted(tmp_path / "b", "00001", "FLAIR"))
    assert result.array.shape[2] == expected["00001"]["FLAIR"][0].shape[2] - 1


def test_multi_volume_series_becomes_a_4d_nifti_that_training_refuses(tmp_path, cohort):
    root, expected = cohort
    t2 = root / "train" / "00001" / "T2w"
    volume, affine = expected["00001"]["T2w"]
    write_series(volume + 1000, affine, t2, plane="coronal", patient_id="00001", series_number=4,
                 series_description="T2w", first_number=500)
    report = convert_cohort(root, tmp_path / "out", workers=1)
    assert report.ok
    assert any("4D series: 2 volumes of 7 slices" in n.note for n in report.notes)
    image = nib.load(converted(tmp_path / "out", "00001", "T2w"))
    assert image.shape[3] == 2
    with pytest.raises(NiftiError, match="4D image of 2 volumes"):
        read_nifti(converted(tmp_path / "out", "00001", "T2w"))


def real_dwi_mosaic(name: str, folder: Path) -> Path:
    """nibabel's real Siemens DWI mosaic (pixels blanked there) with a ramp of 12-bit values."""
    from nibabel.nicom import csareader

    with gzip.open(Path(csareader.__file__).parent / "tests" / "data" / name) as handle:
        ds = pydicom.dcmread(handle)
    ds.PixelData = (np.arange(ds.Rows * ds.Columns) * 7 % 4001).astype("<u2").tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / name.removesuffix(".gz"), enforce_file_format=True)
    return folder / name.removesuffix(".gz")


def test_real_siemens_mosaics_convert_to_3d_and_4d_nifti(tmp_path, cohort):
    root, _ = cohort
    patient = root / "train" / "00001"
    for sequence in ("FLAIR", "T2w"):
        shutil.rmtree(patient / sequence)
    real_dwi_mosaic("siemens_dwi_0.dcm.gz", patient / "FLAIR")
    for name in ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"):
        real_dwi_mosaic(name, patient / "T2w")
    report = convert_cohort(root, tmp_path / "out", workers=1)
    assert report.ok
    flair = nib.load(converted(tmp_path / "out", "00001", "FLAIR"))
    dwi = nib.load(converted(tmp_path / "out", "00001", "T2w"))
    assert flair.shape == (128, 128, 48) and dwi.shape == (128, 128, 48, 2)
    np.testing.assert_allclose(dwi.affine, flair.affine)
    assert any("4D series: 2 volumes of 48 slices" in n.note for n in report.notes)
