"""Registration to template space: the template grid, saved transforms, mapping images both
ways, the moved synthetic cohort's ground truth, and the `register` command."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from radiogenomics.cli import main as cli_main
from radiogenomics.data.case import SEQUENCES
from radiogenomics.data.readers import load_volume
from radiogenomics.data.register import main as register_main
from radiogenomics.data.register import read_series, register_series
from radiogenomics.data.synthetic import generate_cohort
from radiogenomics.data.synthetic.anatomy import rotation
from radiogenomics.data.template import BRATS_SHAPE, brain_points, load_template
from radiogenomics.data.template_space import (
    Registration,
    SeriesGeometry,
    load,
    resample,
    save,
    tfm_name,
    to_native,
    to_template,
)
from radiogenomics.data.volume import Volume


def rigid(degrees: tuple[float, float, float], shift: tuple[float, float, float]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(np.deg2rad(degrees))
    matrix[:3, 3] = shift
    return matrix


def oblique_series() -> Volume:
    """A native series: 1.8 x 1.8 x 4 mm sagittal-ish voxels, tilted, as a scanner writes."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(np.deg2rad([5.0, -3.0, 8.0])) @ np.diag([4.0, 1.8, 1.8])
    affine[:3, 3] = [-70.0, -120.0, -60.0]
    return Volume.from_array(np.zeros((36, 128, 110), np.float32), affine)


def registration_of(volume: Volume, native_from_template: np.ndarray) -> Registration:
    t1, _ = load_template()
    return Registration("00001", t1.array.shape, t1.affine,
                        {"T1wCE": SeriesGeometry(volume.array.shape, volume.affine,
                                                 native_from_template)})


# ------------------------------------------------------------------------------ template


def test_the_template_is_nilearns_mni152_and_brain_mask_on_the_brats_grid() -> None:
    from nilearn.datasets import load_mni152_brain_mask

    t1, mask = load_template()
    assert t1.array.shape == mask.array.shape == BRATS_SHAPE == (240, 240, 155)
    assert np.allclose(t1.affine[:3, :3], np.eye(3))
    nilearn_mask = load_mni152_brain_mask(resolution=1)
    expected = np.asarray(nilearn_mask.dataobj) > 0
    assert int(mask.array.sum()) == int(expected.sum())  # the whole brain lies on the grid
    ours = resample(mask.array, mask.affine, expected.shape, nilearn_mask.affine, np.eye(4), 0)
    assert np.array_equal(ours > 0, expected)
    brain = np.argwhere(mask.array > 0)
    low, high = brain.min(0), brain.max(0)
    assert low[2] == 0 and high[2] == 154  # the brain fills the 155 slices
    assert abs((low[0] + high[0]) / 2 - 119.5) <= 1 and abs((low[1] + high[1]) / 2 - 119.5) <= 1


# ------------------------------------------------------------------- transforms and maps


def test_a_mask_goes_native_to_template_and_back_onto_itself() -> None:
    native = oblique_series()
    index = np.indices(native.array.shape).reshape(3, -1).T
    world = index @ native.affine[:3, :3].T + native.affine[:3, 3]
    centre = np.array([0.0, -20.0, 10.0])
    blob = (np.linalg.norm((world - centre) / [25.0, 15.0, 20.0], axis=1) < 1).reshape(
        native.array.shape)
    mask = Volume.from_array(blob.astype(np.float32), native.affine)
    registration = registration_of(native, rigid((12.0, -9.0, 4.0), (15.0, -22.0, 8.0)))
    in_template = to_template(mask, registration, "T1wCE", order=0)
    assert in_template.sum() > blob.sum()  # 1 mm template voxels, ~13 mm^3 native ones
    back = to_native(in_template, registration.template_affine, registration, "T1wCE", order=0)
    assert np.array_equal(back.affine, native.affine)
    assert np.array_equal(back.array > 0, blob)
    # the wrong transform does not map it back
    wrong = registration_of(native, rigid((12.0, -9.0, 4.0), (17.0, -22.0, 8.0)))
    assert not np.array_equal(to_native(in_template, wrong.template_affine, wrong, "T1wCE",
                                        order=0).array > 0, blob)


def test_saved_transforms_read_back_and_are_itks_own(tmp_path: Path) -> None:
    sitk = pytest.importorskip("SimpleITK")
    native = oblique_series()
    truth = rigid((10.0, 5.0, -7.0), (3.0, -12.0, 20.0)) @ np.diag([1.05, 0.97, 1.02, 1.0])
    registration = registration_of(native, truth)
    save(registration, tmp_path)
    again = load(tmp_path)
    assert np.array_equal(again.series["T1wCE"].native_from_template, truth)
    assert again.template_shape == registration.template_shape
    transform = sitk.ReadTransform(str(tmp_path / tfm_name("T1wCE")))
    point_ras = np.array([30.0, -40.0, 25.0])
    lps = transform.TransformPoint((-point_ras[0], -point_ras[1], point_ras[2]))
    expected = truth[:3, :3] @ point_ras + truth[:3, 3]
    assert np.allclose([-lps[0], -lps[1], lps[2]], expected)


# ------------------------------------------------------------ the moved synthetic cohort


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("moved") / "cohort", patients=2,
                           test_patients=0, preset="realistic", size=48, workers=1)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_moved_patients_keep_their_ground_truth_in_the_manifest(moved: Path) -> None:
    case = json.loads((moved / "cohort.json").read_text())["cases"][0]
    pid = case["id"]
    truth = {s: np.array(m) for s, m in case["native_from_template"].items()}
    assert set(truth) == set(SEQUENCES)
    nifti = nib.load(moved / "brats" / f"BraTS2021_{pid}" / f"BraTS2021_{pid}_t1ce.nii.gz")
    t1ce = load_volume(moved / "rsna" / "train" / pid / "T1wCE")
    through = {name: resample(np.asarray(nifti.dataobj, np.float32), nifti.affine,
                              t1ce.array.shape, t1ce.affine, np.linalg.inv(transform))
               for name, transform in (("truth", truth["T1wCE"]), ("identity", np.eye(4)))}
    # the DICOM series is the NIfTI seen through the true transform, not through none
    fit = {name: correlation(image, t1ce.array) for name, image in through.items()}
    assert fit["truth"] > 0.9 and fit["identity"] < fit["truth"] - 0.1, fit
    # the series moved between them: rigid motion of a few degrees / millimetres at most
    motion = truth["FLAIR"] @ np.linalg.inv(truth["T1wCE"])
    assert np.allclose(motion[:3, :3] @ motion[:3, :3].T, np.eye(3), atol=1e-9)
    assert not np.allclose(motion, np.eye(4)) and np.abs(motion[:3, 3]).max() < 15


# --------------------------------------------------------------------------- the command


def test_a_patient_without_all_series_is_one_line_and_the_batch_goes_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = tmp_path / "in"
    (cohort / "00001" / "T1wCE").mkdir(parents=True)
    (cohort / "00002" / "FLAIR").mkdir(parents=True)
    out = tmp_path / "out"
    assert register_main([str(cohort), str(out)]) == 1
    printed = capsys.readouterr()
    assert "00001: series missing: FLAIR, T1w, T2w" in printed.out
    assert "00002: series missing: T1w, T1wCE, T2w" in printed.out
    assert "Traceback" not in printed.out + printed.err
    assert (out / "registration_errors.csv").read_text().count("series missing") == 2


def test_the_command_never_writes_under_its_input(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in" / "00001" / "T1wCE").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["register", str(tmp_path / "in"), str(tmp_path / "in" / "out")])
    assert exit_.value.code == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (tmp_path / "in" / "out").exists()


def test_a_missing_simpleitk_names_the_register_extra(
        moved: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "SimpleITK", None)
    patient = next((moved / "rsna" / "train").iterdir())
    assert register_main([str(patient), str(tmp_path / "out")]) == 2
    assert "pip install 'radiogenomics[register]'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def moved_2mm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One moved patient at the benchmark's size (2 mm NIfTI, DICOM ~1.8 x 2-5 mm)."""
    return generate_cohort(tmp_path_factory.mktemp("moved96") / "cohort", patients=1,
                           test_patients=0, preset="realistic", size=96, workers=1)


@pytest.mark.slow
def test_registration_recovers_the_pose_and_maps_the_tumour_back_onto_dicom(
        moved_2mm: Path, tmp_path: Path) -> None:
    """A moved patient through `radiogenomics register`: its transforms match the ground
    truth, and its BraTS mask taken back to T1wCE's DICOM voxels by the saved transform lies
    on the tumour where the true transform puts it."""
    pytest.importorskip("SimpleITK")
    case = json.loads((moved_2mm / "cohort.json").read_text())["cases"][0]
    pid = case["id"]
    patient = moved_2mm / "rsna" / "train" / pid
    assert cli_main_status(["register", str(patient), str(tmp_path)]) == 0
    registration = load(tmp_path / f"BraTS2021_{pid}" / "registration")
    _, atlas = load_template()
    points = np.argwhere(atlas.array[::4, ::4, ::4] > 0) * 4 + atlas.affine[:3, 3]
    for name in SEQUENCES:
        truth = np.array(case["native_from_template"][name])
        error = registration.series[name].native_from_template - truth
        tre = np.linalg.norm(points @ error[:3, :3].T + error[:3, 3], axis=1).mean()
        moved_by = truth - np.eye(4)
        pose = np.linalg.norm(points @ moved_by[:3, :3].T + moved_by[:3, 3], axis=1).mean()
        assert tre < 1.5 and pose > 10.0, (name, tre, pose)  # issue 17's target
    seg = nib.load(moved_2mm / "brats" / f"BraTS2021_{pid}" / f"BraTS2021_{pid}_seg.nii.gz")
    labels = np.asarray(seg.dataobj)
    mapped = to_native((labels > 0).astype(np.uint8), seg.affine, registration, "T1wCE")
    t1ce = load_volume(moved_2mm / "rsna" / "train" / pid / "T1wCE")
    truth = np.array(case["native_from_template"]["T1wCE"])
    true_mask = resample((labels > 0).astype(np.uint8), seg.affine, t1ce.array.shape,
                         t1ce.affine, np.linalg.inv(truth), order=0) > 0
    assert np.array_equal(mapped.affine, t1ce.affine)
    overlap = 2 * (mapped.array.astype(bool) & true_mask).sum() / (
        mapped.array.astype(bool).sum() + true_mask.sum())
    assert overlap > 0.8
    image = nib.load(tmp_path / f"BraTS2021_{pid}" / f"BraTS2021_{pid}_flair.nii.gz")
    assert image.shape == BRATS_SHAPE


@pytest.mark.slow
def test_the_b_spline_refinement_brings_the_affine_closer_to_the_truth(moved_2mm: Path) -> None:
    """The affine part of affine + B-spline (the default) beats the plain affine fit."""
    pytest.importorskip("SimpleITK")
    case = json.loads((moved_2mm / "cohort.json").read_text())["cases"][0]
    series = read_series(moved_2mm / "rsna" / "train" / case["id"], case["id"])
    truth = np.array(case["native_from_template"]["T1wCE"])
    points = brain_points()
    errors = {}
    for affine_only in (True, False):
        registration = register_series({"T1wCE": series["T1wCE"]}, case["id"],
                                       affine_only=affine_only)
        error = registration.series["T1wCE"].native_from_template - truth
        errors[affine_only] = np.linalg.norm((points @ error.T)[:, :3], axis=1).mean()
    assert errors[False] < 1.5 and errors[False] < errors[True] - 0.3, errors


def cli_main_status(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    return int(exit_.value.code or 0)


@pytest.mark.slow
def test_register_series_is_deterministic(moved: Path) -> None:
    pytest.importorskip("SimpleITK")
    patient = next((moved / "rsna" / "train").iterdir())
    series = read_series(patient, patient.name)
    first, again = (register_series(series, patient.name) for _ in range(2))
    for name in SEQUENCES:
        assert np.array_equal(first.series[name].native_from_template,
                              again.series[name].native_from_template)


def test_a_blank_t1wce_is_a_data_error_naming_it() -> None:
    from radiogenomics.errors import DataError

    blank = oblique_series()
    with pytest.raises(DataError, match="the T1wCE series is blank"):
        register_series(dict.fromkeys(SEQUENCES, blank), "00001")


def test_n4_flattens_a_bias_field() -> None:
    pytest.importorskip("SimpleITK")
    from radiogenomics.data.registration import n4

    index = np.indices((40, 40, 40)).astype(np.float32)
    head = np.linalg.norm(index - 19.5, axis=0) < 16
    bias = np.exp(0.4 * (index[0] - 19.5) / 19.5)
    image = Volume.from_array(np.where(head, 100.0 * bias, 0.0), np.diag([2.0, 2.0, 2.0, 1.0]))
    corrected = n4(image).array[head]

    def spread(values: np.ndarray) -> float:
        return float(values.std() / values.mean())

    assert spread(corrected) < 0.5 * spread(image.array[head])
