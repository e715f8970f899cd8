"""Synthetic cohort generator: layout, tables, anatomy, contrast, labels, determinism, geometry."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from radiogenomics.data.case import SEQUENCES
from radiogenomics.data.readers import load_volume
from radiogenomics.data.synthetic import cohort as cohort_module
from radiogenomics.data.synthetic import ensure_cohort, generate_cohort
from radiogenomics.data.synthetic.__main__ import main
from radiogenomics.data.synthetic.clinical import draw_clinical
from radiogenomics.data.synthetic.contrast import MGMT_EFFECT, draw_contrast
from radiogenomics.data.synthetic.patient import simulate_patient
from radiogenomics.data.synthetic.settings import make_settings
from radiogenomics.errors import CohortError

SIZE = 48  # 4 mm voxels: small and fast, still resolves the tumour rim
PATIENTS = 3
BRATS_FILES = ("flair", "t1", "t1ce", "t2", "seg")
ARGS = {"patients": PATIENTS, "seed": 0, "format": "both", "size": SIZE}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cohort(tmp_path_factory.mktemp("syn") / "cohort", workers=1, **ARGS)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return next(csv.reader(handle))


def hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def nifti(root: Path, pid: str, suffix: str) -> nib.Nifti1Image:
    return nib.load(root / "brats" / f"BraTS2021_{pid}" / f"BraTS2021_{pid}_{suffix}.nii.gz")


def manifest(root: Path) -> dict:
    return json.loads((root / "cohort.json").read_text())


def split_ids(root: Path, split: str) -> list[str]:
    return sorted(p.name for p in (root / "rsna" / split).iterdir())


def kaggle_ids(pids: list[str]) -> list[str]:
    """Ids as Kaggle's tables write them: integers without zero padding."""
    return [str(int(p)) for p in pids]


def world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]


# ------------------------------------------------------------------------------ layout


def test_layout_and_file_names(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == ["brats", "cohort.json", "rsna"]
    assert sorted(p.name for p in (root / "rsna").iterdir()) == [
        "clinical.csv", "sample_submission.csv", "test", "test_labels.csv", "train",
        "train_labels.csv",
    ]
    train, test = split_ids(root, "train"), split_ids(root, "test")
    assert len(train) == 2 and len(test) == 1 and max(train) < min(test)
    ids = train + test
    assert ids[0] == "00000" and all(re.fullmatch(r"\d{5}", i) for i in ids)
    for split, pids in (("train", train), ("test", test)):
        for pid in pids:
            series = root / "rsna" / split / pid
            assert sorted(p.name for p in series.iterdir()) == sorted(SEQUENCES)
            for sequence in SEQUENCES:
                names = [p.name for p in (series / sequence).iterdir()]
                numbers = sorted(int(re.fullmatch(r"Image-(\d+)\.dcm", n)[1]) for n in names)
                assert numbers[0] > 1 and numbers == list(range(numbers[0], numbers[-1] + 1))
    cases = sorted(p.name for p in (root / "brats").iterdir() if p.is_dir())
    assert cases == [f"BraTS2021_{pid}" for pid in ids]
    for pid in ids:
        files = sorted(p.name for p in (root / "brats" / f"BraTS2021_{pid}").iterdir())
        assert files == sorted(f"BraTS2021_{pid}_{s}.nii.gz" for s in BRATS_FILES)


def test_label_tables(root: Path) -> None:
    train, test = split_ids(root, "train"), split_ids(root, "test")
    rsna = root / "rsna"
    for name in ("train_labels.csv", "test_labels.csv", "sample_submission.csv"):
        assert header(rsna / name) == ["BraTS21ID", "MGMT_value"]
    assert [r["BraTS21ID"] for r in read_csv(rsna / "train_labels.csv")] == kaggle_ids(train)
    assert [r["BraTS21ID"] for r in read_csv(rsna / "test_labels.csv")] == kaggle_ids(test)
    submission = read_csv(rsna / "sample_submission.csv")
    assert [(r["BraTS21ID"], r["MGMT_value"]) for r in submission] == [(i, "0.5") for i in
                                                                        kaggle_ids(test)]
    assert header(rsna / "clinical.csv") == ["BraTS21ID", "grade", "age", "survival_days"]
    assert header(root / "brats/clinical.csv") == [
        "BraTS21ID", "MGMT_value", "grade", "age", "survival_days",
    ]
    brats = read_csv(root / "brats/clinical.csv")
    assert [r["BraTS21ID"] for r in brats] == kaggle_ids(train + test)
    mgmt = {r["BraTS21ID"]: r["MGMT_value"] for r in read_csv(rsna / "train_labels.csv")}
    mgmt.update({r["BraTS21ID"]: r["MGMT_value"] for r in read_csv(rsna / "test_labels.csv")})
    for row in brats:
        assert row["MGMT_value"] == mgmt[row["BraTS21ID"]] and row["grade"] in ("0", "1")
        assert 18 <= float(row["age"]) <= 89 and int(row["survival_days"]) > 0
    info = manifest(root)
    assert info["seed"] == 0 and info["patients"] == PATIENTS and info["format"] == "both"
    assert info["nifti_shape"] == [48, 58, 48] and [c["id"] for c in info["cases"]] == train + test


def test_nifti_volumes(root: Path) -> None:
    reference = nifti(root, "00000", "seg")
    for pid in split_ids(root, "train") + split_ids(root, "test"):
        for suffix in BRATS_FILES:
            image = nifti(root, pid, suffix)
            assert image.shape == reference.shape == (48, 58, 48)
            np.testing.assert_allclose(image.affine, reference.affine)
            assert image.get_data_dtype() == (np.uint8 if suffix == "seg" else np.int16)
    assert np.all(np.diag(reference.affine)[:3] > 0)  # RAS


def test_segmentation_labels_inside_the_brain(root: Path) -> None:
    for pid in split_ids(root, "train") + split_ids(root, "test"):
        seg = np.asarray(nifti(root, pid, "seg").dataobj)
        t1 = np.asarray(nifti(root, pid, "t1").dataobj)
        assert set(np.unique(seg)) <= {0, 1, 2, 4} and (seg > 0).sum() > 10
        assert np.all(t1[seg > 0] > 0)  # skull-stripped: 0 outside the brain only


# ------------------------------------------------------------------------ image content


def test_tissue_contrast(root: Path) -> None:
    settings = make_settings(seed=0, size=SIZE)
    patient = simulate_patient(settings, 0, "00000")
    csf, wm = patient.tissues["csf"] > 0.6, patient.tissues["wm"] > 0.8
    assert csf.sum() > 20 and wm.sum() > 200
    flair = np.asarray(nifti(root, "00000", "flair").dataobj).astype(float)
    t2 = np.asarray(nifti(root, "00000", "t2").dataobj).astype(float)
    assert np.median(flair[csf]) < 0.7 * np.median(flair[wm])
    assert np.median(t2[csf]) > 1.5 * np.median(t2[wm])
    assert 500 < np.percentile(t2[t2 > 0], 99) < 4000  # scanner-like integers


def test_t1wce_enhances_vessels_at_the_brain_surface_and_t1w_does_not(root: Path) -> None:
    patient = simulate_patient(make_settings(seed=0, size=SIZE), 0, "00000")
    vessel, wm = patient.tissues["vessel"] > 0.2, patient.tissues["wm"] > 0.8
    t1 = np.asarray(nifti(root, "00000", "t1").dataobj).astype(float)
    t1ce = np.asarray(nifti(root, "00000", "t1ce").dataobj).astype(float)
    vessel &= t1 > 0  # inside the skull-stripped brain
    assert vessel.sum() > 100

    def relative_to_wm(image: np.ndarray) -> float:
        return float(np.median(image[vessel]) / np.median(image[wm]))

    assert relative_to_wm(t1) < 0.6  # CSF with partial volume: dark before contrast
    assert relative_to_wm(t1ce) > 1.6 * relative_to_wm(t1)  # the enhancing rim


def test_hgg_enhances_more_than_lgg() -> None:
    settings = make_settings(seed=0, size=32)
    enhancing = {0: [], 1: []}
    for index in range(8):
        patient = simulate_patient(settings, index, f"{index:05d}")
        core = np.isin(patient.seg, (1, 4)).sum()
        enhancing[patient.clinical.grade].append((patient.seg == 4).sum() / max(core, 1))
    assert enhancing[0] and enhancing[1]
    assert np.mean(enhancing[1]) > 0.3 > np.mean(enhancing[0])


def test_mgmt_signal_and_label_noise() -> None:
    for signal in (1.0, 0.15):
        methylated = draw_contrast(np.random.default_rng(5), 1, signal).intensity
        unmethylated = draw_contrast(np.random.default_rng(5), 0, signal).intensity
        for sequence, (tissues, effect) in MGMT_EFFECT.items():
            ratio = methylated[sequence]["et"] / unmethylated[sequence]["et"]
            assert ratio == pytest.approx((1 + effect * signal) / (1 - effect * signal))
            assert methylated[sequence]["wm"] == unmethylated[sequence]["wm"]
            assert "et" in tissues
    rng = np.random.default_rng(0)
    clean = make_settings(mgmt_label_noise=0.0)
    assert all(c.mgmt == c.mgmt_true for c in (draw_clinical(rng, clean) for _ in range(200)))
    noisy = make_settings("realistic")
    draws = [draw_clinical(rng, noisy) for _ in range(400)]
    flips = np.mean([c.mgmt != c.mgmt_true for c in draws])
    assert abs(flips - noisy.mgmt_label_noise) < 0.06


# --------------------------------------------------------------------------- geometry


def test_dicom_series_share_world_space_with_nifti(root: Path) -> None:
    grades = {r["BraTS21ID"]: r["grade"] for r in read_csv(root / "brats/clinical.csv")}
    pid = next(p for p in split_ids(root, "train") if grades[str(int(p))] == "1")
    seg = nifti(root, pid, "seg")
    brain_nifti = world_centroid(np.asarray(nifti(root, pid, "t1").dataobj) > 0, seg.affine)
    studies = set()
    for sequence in SEQUENCES:
        folder = root / "rsna/train" / pid / sequence
        first = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
        studies.add((first.StudyInstanceUID, first.FrameOfReferenceUID))
        volume = load_volume(folder)
        brain = world_centroid(volume.array > 0, volume.affine)
        assert np.linalg.norm(brain - brain_nifti) < 1.5, sequence
    assert len(studies) == 1
    # The enhancing rim found in the DICOM T1wCE lies where the NIfTI mask puts it.
    volume = load_volume(root / "rsna/train" / pid / "T1wCE")
    labels = np.asarray(seg.dataobj)
    expected = world_centroid(labels == 4, seg.affine)
    index = np.indices(volume.array.shape).reshape(3, -1)
    world = (volume.affine[:3, :3] @ index + volume.affine[:3, 3:4]).reshape(3, *volume.array.shape)
    near = np.linalg.norm(world - expected[:, None, None, None], axis=0) < 30
    brain_median = np.median(volume.array[volume.array > 0])
    threshold = 0.5 * (brain_median + np.percentile(volume.array[near], 99))
    bright = near & (volume.array > threshold)
    assert np.linalg.norm(world_centroid(bright, volume.affine) - expected) < 4.0


def test_series_vary_like_rsna(root: Path) -> None:
    planes, spacings, uids = set(), set(), set()
    for folder in sorted((root / "rsna").glob("t*/*/*")):
        first = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
        normal = np.cross(*np.reshape(np.array(first.ImageOrientationPatient, float), (2, 3)))
        planes.add(int(np.argmax(np.abs(normal))))
        spacings.add(round(float(first.SliceThickness), 2))
        uids.add(first.StudyInstanceUID)
    assert len(planes) >= 2 and len(spacings) >= 6 and len(uids) == PATIENTS


# ----------------------------------------------------------------- determinism and reuse


def test_same_seed_same_bytes_in_parallel(root: Path, tmp_path: Path) -> None:
    again = generate_cohort(tmp_path / "again", workers=2, **ARGS)
    assert hashes(again) == hashes(root)


def test_patient_independent_of_cohort_size_and_format(root: Path, tmp_path: Path) -> None:
    small = generate_cohort(tmp_path / "small", patients=2, test_patients=0, seed=0,
                            format="dicom", size=SIZE, workers=1)
    assert not (small / "brats").exists()
    first_two = split_ids(root, "train")
    assert split_ids(small, "train") == first_two
    for pid in first_two:
        assert hashes(small / "rsna/train" / pid) == hashes(root / "rsna/train" / pid)
    t1 = [np.asarray(nifti(root, pid, "t1").dataobj) for pid in first_two]
    assert not np.array_equal(t1[0], t1[1])


def test_existing_cohort_is_reused_and_other_content_protected(root: Path, tmp_path: Path) -> None:
    stamp = (root / "cohort.json").stat().st_mtime_ns
    assert generate_cohort(root, workers=1, **ARGS) == root
    assert (root / "cohort.json").stat().st_mtime_ns == stamp
    with pytest.raises(CohortError, match="does not hold a synthetic cohort with these settings"):
        generate_cohort(root, **{**ARGS, "seed": 1})
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(CohortError, match="overwrite"):
        generate_cohort(other, patients=1, size=24, format="nifti", workers=1)
    generate_cohort(other, patients=1, size=24, format="nifti", workers=1, overwrite=True)
    assert sorted(p.name for p in other.iterdir()) == ["brats", "cohort.json"]


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and mtime."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


def test_training_never_regenerates_a_cohort_made_with_other_settings(tmp_path: Path) -> None:
    """A cohort made by the command line, with the user's notes in it, passed to a training run
    whose data.synthetic differs: refused with the differences named, nothing touched."""
    out = tmp_path / "cohort"
    main(["--out", str(out), "--patients", "1", "--size", "24", "--format", "nifti",
          "--workers", "1", "--mgmt-signal", "1.0"])
    (out / "notes.txt").write_text("my notes")
    before = listing(out)
    with pytest.raises(CohortError, match=r"mgmt_signal 1\.0, asked 2\.0.*data\.synthetic=null"):
        ensure_cohort(out, patients=1, size=24, format="nifti", workers=1, mgmt_signal=2.0)
    with pytest.raises(CohortError, match="patients 1, asked 2"):
        ensure_cohort(out, patients=2, size=24, format="nifti", workers=1, mgmt_signal=1.0)
    assert listing(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]  # no temporary left


def test_training_reuses_its_cohort_and_never_writes_over_a_user_folder(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    args = {"patients": 1, "size": 24, "format": "nifti", "workers": 1}
    assert ensure_cohort(out, **args) == out  # absent: generated
    before = listing(out)
    assert ensure_cohort(out, **args) == out  # same settings: read as it is
    assert listing(out) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scan.nii.gz").write_bytes(b"not generated")
    with pytest.raises(CohortError, match="no synthetic cohort"):
        ensure_cohort(mine, **args)
    assert [p.name for p in mine.iterdir()] == ["scan.nii.gz"]


def test_a_cohort_of_an_older_generator_version_is_read_as_it_is(tmp_path: Path) -> None:
    out = generate_cohort(tmp_path / "cohort", patients=1, size=24, format="nifti", workers=1)
    info = manifest(out)
    info["version"] = "0.9"
    (out / "cohort.json").write_text(json.dumps(info))
    before = listing(out)
    assert ensure_cohort(out, patients=1, size=24, format="nifti", workers=1) == out
    assert listing(out) == before


def test_killed_run_leaves_no_cohort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(jobs: list, workers: int) -> None:
        cohort_module._build_patient(jobs[0])
        raise KeyboardInterrupt

    monkeypatch.setattr(cohort_module, "_run", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_cohort(tmp_path / "cohort", patients=2, size=24, format="nifti")
    assert list(tmp_path.iterdir()) == []


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--out", str(tmp_path / "cli"), "--patients", "2", "--seed", "3", "--format", "nifti",
          "--size", "24", "--preset", "realistic", "--test-patients", "1", "--workers", "1"])
    assert "synthetic cohort ready" in capsys.readouterr().out
    info = manifest(tmp_path / "cli")
    assert info["preset"] == "realistic" and info["test_patients"] == 1
    assert info["settings"]["mgmt_signal"] == 0.15 and info["seed"] == 3
    assert sorted(p.name for p in (tmp_path / "cli/brats").iterdir())[-1] == "clinical.csv"


def test_command_line_refuses_a_folder_of_other_content_with_one_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as info:
        main(["--out", str(tmp_path / "mine"), "--patients", "1", "--size", "24",
              "--format", "nifti", "--workers", "1"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "not a synthetic cohort" in err and "--overwrite" in err and "Traceback" not in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


# ----------------------------------------------------------------------- full-size preset
def test_the_fullsize_preset_plans_series_of_the_real_cohorts_size() -> None:
    """preset=fullsize: 256-512 matrices, 3D series of ~1 mm slices (100+ of them) and 2D
    stacks of 3-6.5 mm, whatever the NIfTI grid's size; ~600 files per patient as in RSNA."""
    from radiogenomics.data.synthetic.rsna import plan_series

    settings = make_settings("fullsize", size=SIZE)
    matrices, thin, thick, files = set(), [], [], 0
    for index in range(6):
        patient = simulate_patient(settings, index, f"{index:05d}")
        for series in plan_series(settings.rng(index, "rsna_geometry"), settings, patient):
            spacing = np.linalg.norm(series.affine[:3, :3], axis=0)
            slice_axis = int(np.argmax(np.abs(spacing - np.median(spacing))))
            in_plane = [n for axis, n in enumerate(series.shape) if axis != slice_axis]
            matrices.update(in_plane)
            (thin if spacing[slice_axis] < 2 else thick).append(series.shape[slice_axis])
            files += series.shape[slice_axis]
    assert matrices <= {256, 320, 384, 448, 512} and 512 in matrices
    assert thin and min(thin) > 100 and thick and max(thick) < 80
    assert 300 < files / 6 < 1000


def test_the_default_presets_manifest_is_unchanged_by_the_fullsize_option() -> None:
    """Cohorts generated before the full-size preset keep matching their manifest."""
    assert "full_size" not in make_settings("default").as_dict()
    assert make_settings("fullsize").as_dict()["full_size"] is True


# ------------------------------------------------------------------- head pose (moved)
def test_the_default_presets_bytes_and_manifest_are_unchanged_by_the_pose_settings() -> None:
    """The pose settings are off in the default preset, so its manifest (and bytes: the
    tests above) are those of earlier versions; the realistic preset turns them on."""
    assert not make_settings("default").moved
    assert not {"max_pose_deg", "max_shift_mm", "max_motion_deg", "max_motion_mm"} & set(
        make_settings("default").as_dict())
    realistic = make_settings("realistic")
    assert realistic.moved and realistic.as_dict()["max_pose_deg"] == 15.0


def test_moved_cohort_same_seed_same_bytes_and_ground_truth_in_manifest(tmp_path: Path) -> None:
    args = {"patients": 2, "seed": 4, "test_patients": 0, "preset": "realistic", "size": 24}
    first = generate_cohort(tmp_path / "a", workers=1, **args)
    again = generate_cohort(tmp_path / "b", workers=1, **args)
    assert hashes(first) == hashes(again)
    cases = manifest(first)["cases"]
    transforms = [np.array(c["native_from_template"]["T1wCE"]) for c in cases]
    assert transforms[0].shape == (4, 4) and not np.allclose(transforms[0], transforms[1])


def test_a_moved_patients_nifti_lies_in_template_space_and_its_head_does_not() -> None:
    """The NIfTI brain of a moved patient is affinely aligned with the MNI152 brain; its
    ground-truth transform turns and shifts the head by up to the preset's pose."""
    from radiogenomics.data.synthetic.anatomy import brain_points, load_template

    settings = make_settings("realistic", size=SIZE)
    template = load_template(settings.voxel_mm)
    atlas_centre = brain_points(template, step=1).mean(axis=0)
    atlas_ml = (template.brain > 0.5).sum() / 1000.0  # 1 mm voxels
    for index in range(3):
        patient = simulate_patient(settings, index, f"{index:05d}")
        brain = patient.brain > 0.5
        assert np.linalg.norm(world_centroid(brain, patient.affine) - atlas_centre) < 5.0
        assert abs(brain.sum() * settings.voxel_mm ** 3 / 1000.0 / atlas_ml - 1) < 0.06
        head = patient.native_from_template["T1wCE"]
        moved = head[:3, :3] @ atlas_centre + head[:3, 3]
        assert np.linalg.norm(moved - atlas_centre) < 20.0 * np.sqrt(3) + 25.0
    default = simulate_patient(make_settings("default", size=SIZE), 0, "00000")
    assert default.native_from_template == {}
