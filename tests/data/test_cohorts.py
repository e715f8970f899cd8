"""Cohort layouts: discovery, labels, schemes and every bad-input error, on tiny fake trees."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radiogenomics.data.case import SEQUENCES
from radiogenomics.data.cohorts import (
    COHORTS,
    Cohort,
    brats2021_cohort,
    brats2023_cohort,
    brats_hgg_lgg_cohort,
    load_cohort,
    png_cohort,
    require_label,
    rsna_cohort,
    survival_class,
    synthetic_cohort,
)
from radiogenomics.data.png import read_png_series
from radiogenomics.errors import CohortError, DataError, LabelError

BRATS21_FILES = ("flair", "t1", "t1ce", "t2")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.strip() + "\n")
    return path


def make_series_patients(
    folder: Path, ids: list[str], suffix: str = ".dcm", sequences=SEQUENCES
) -> None:
    """``folder/<id>/<SEQ>/Image-N<suffix>`` for every id, numbered from an arbitrary N."""
    for pid in ids:
        for sequence in sequences:
            for n in (7, 12, 8):
                touch(folder / pid / sequence / f"Image-{n}{suffix}")


def make_rsna(root: Path, labels: dict[str, int], split: str = "train") -> Path:
    """An RSNA tree with one folder per labelled id; CSV ids without zero padding."""
    make_series_patients(root / split, sorted(labels))
    rows = "\n".join(f"{int(pid)},{value}" for pid, value in labels.items())
    write_csv(root / f"{split}_labels.csv", "BraTS21ID,MGMT_value\n" + rows)
    return root


def make_brats2021_case(root: Path, folder: str, seg: bool = True) -> Path:
    for suffix in BRATS21_FILES + (("seg",) if seg else ()):
        touch(root / folder / f"{folder}_{suffix}.nii.gz")
    return root / folder


# ------------------------------------------------------------------------------ RSNA


@pytest.fixture
def rsna_root(tmp_path: Path) -> Path:
    return make_rsna(tmp_path / "rsna", {"00012": 1, "00003": 0, "00109": 1, "00200": 0})


def test_rsna_ids_sequences_labels(rsna_root: Path) -> None:
    cohort = rsna_cohort(rsna_root)
    assert isinstance(cohort, Cohort)
    assert cohort.ids == ["00003", "00012", "00200"]
    case = cohort[1]
    assert set(case["images"]) == set(SEQUENCES)
    assert case["images"]["T1wCE"] == str(rsna_root / "train" / "00012" / "T1wCE")
    assert case["labels"] == {"mgmt": 1}
    assert case["seg"] is None and case["source"] == "rsna"
    assert cohort.skipped == []


def test_rsna_flagged_cases_excluded_and_configurable(rsna_root: Path) -> None:
    assert rsna_cohort(rsna_root).excluded == ["00109"]
    assert "00109" in rsna_cohort(rsna_root, exclude=()).ids
    assert rsna_cohort(rsna_root, exclude=[12, "00200"]).ids == ["00003", "00109"]


def test_rsna_flagged_case_without_folder_is_not_an_error(rsna_root: Path) -> None:
    for path in sorted((rsna_root / "train" / "00109").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (rsna_root / "train" / "00109").rmdir()
    assert rsna_cohort(rsna_root).ids == ["00003", "00012", "00200"]


def test_rsna_clinical_table_and_survival_class(rsna_root: Path) -> None:
    write_csv(rsna_root / "clinical.csv",
              "BraTS21ID,grade,age,survival_days\n12,1,61.5,320\n3,0,40,\n999,1,50,100")
    cases = {case["id"]: case for case in rsna_cohort(rsna_root)}
    assert cases["00012"]["labels"] == {
        "mgmt": 1, "grade": 1, "age": 61.5, "survival_days": 320.0, "survival_class": 1,
    }
    assert cases["00003"]["labels"] == {"mgmt": 0, "grade": 0, "age": 40.0}


@pytest.mark.parametrize(("days", "group"), [(0, 0), (299.9, 0), (300, 1), (450, 1), (451, 2)])
def test_survival_class_bounds(days: float, group: int) -> None:
    assert survival_class(days) == group


def test_rsna_sequence_subset(rsna_root: Path) -> None:
    cohort = rsna_cohort(rsna_root, sequences=["t1wce", "FLAIR"])
    assert set(cohort[0]["images"]) == {"T1wCE", "FLAIR"}


def test_missing_root_and_split(tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="does not exist") as info:
        rsna_cohort(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    (tmp_path / "rsna" / "train").mkdir(parents=True)
    with pytest.raises(CohortError, match="split folder 'test'"):
        rsna_cohort(tmp_path / "rsna", split="test")


def test_empty_cohort(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    write_csv(tmp_path / "train_labels.csv", "BraTS21ID,MGMT_value")
    with pytest.raises(CohortError, match="no patient folder") as info:
        rsna_cohort(tmp_path)
    assert "train" in str(info.value)


def test_missing_label_table(tmp_path: Path) -> None:
    make_series_patients(tmp_path / "train", ["00001"])
    with pytest.raises(CohortError, match="train_labels.csv"):
        rsna_cohort(tmp_path)
    assert rsna_cohort(tmp_path, allow_unlabelled=True)[0]["labels"] == {}


def test_label_table_missing_column(rsna_root: Path) -> None:
    write_csv(rsna_root / "train_labels.csv", "BraTS21ID,MGMT\n12,1")
    with pytest.raises(CohortError, match="lacks column.*MGMT_value") as info:
        rsna_cohort(rsna_root)
    assert "train_labels.csv" in str(info.value)


def test_label_table_duplicated_ids(rsna_root: Path) -> None:
    write_csv(rsna_root / "train_labels.csv", "BraTS21ID,MGMT_value\n12,1\n3,0\n00012,1")
    with pytest.raises(LabelError, match="patient 00012: more than one row"):
        rsna_cohort(rsna_root)


def test_label_table_non_binary_values(rsna_root: Path) -> None:
    write_csv(rsna_root / "train_labels.csv",
              "BraTS21ID,MGMT_value\n12,2\n3,yes\n109,1\n200,")
    with pytest.raises(LabelError) as info:
        rsna_cohort(rsna_root)
    message = str(info.value)
    for expected in ("patient 00012: MGMT_value is '2'", "patient 00003: MGMT_value is 'yes'",
                     "patient 00200", "train_labels.csv"):
        assert expected in message


def test_labelled_ids_without_folder(rsna_root: Path) -> None:
    write_csv(rsna_root / "train_labels.csv",
              "BraTS21ID,MGMT_value\n12,1\n3,0\n200,0\n555,1\n777,0")
    with pytest.raises(CohortError) as info:
        rsna_cohort(rsna_root)
    assert "00555: labelled in" in str(info.value) and "00777" in str(info.value)
    cohort = rsna_cohort(rsna_root, on_missing="skip")
    assert cohort.ids == ["00003", "00012", "00200"]
    assert [f.patient for f in cohort.skipped] == ["00555", "00777"]


def test_folders_without_label(rsna_root: Path) -> None:
    make_series_patients(rsna_root / "train", ["00400", "00401"])
    with pytest.raises(CohortError) as info:
        rsna_cohort(rsna_root)
    assert "00400: has no MGMT_value row" in str(info.value) and "00401" in str(info.value)
    cohort = rsna_cohort(rsna_root, allow_unlabelled=True)
    assert "00400" in cohort.ids and cohort.cases[cohort.ids.index("00400")]["labels"] == {}


def test_bad_sequences_listed_at_once_then_skipped(rsna_root: Path, caplog) -> None:
    train = rsna_root / "train"
    for path in (train / "00003" / "FLAIR").iterdir():
        path.unlink()
    (train / "00003" / "FLAIR").rmdir()
    for path in (train / "00200" / "T2w").iterdir():
        path.unlink()
    with pytest.raises(CohortError) as info:
        rsna_cohort(rsna_root)
    message = str(info.value)
    assert "2 patient(s)" in message and "data.on_error=skip" in message
    assert "00003: missing sequence folder" in message and "FLAIR" in message
    assert "00200: empty sequence folder" in message and "T2w" in message

    with caplog.at_level(logging.WARNING):
        cohort = rsna_cohort(rsna_root, on_missing="skip")
    assert cohort.ids == ["00012"]
    assert [f.patient for f in cohort.skipped] == ["00003", "00200"]
    assert "00003" in caplog.text and "00200" in caplog.text

    relaxed = rsna_cohort(rsna_root, require_all_sequences=False)
    images = {case["id"]: set(case["images"]) for case in relaxed}
    assert images["00003"] == {"T1w", "T1wCE", "T2w"}
    assert images["00200"] == {"FLAIR", "T1w", "T1wCE"}


def test_every_patient_skipped_is_an_error(rsna_root: Path) -> None:
    with pytest.raises(CohortError, match="no usable case"):
        rsna_cohort(rsna_root, sequences=["FLAIR"], exclude=["3", "12", "109", "200"])


def test_stray_non_numeric_folder_is_reported(rsna_root: Path) -> None:
    make_series_patients(rsna_root / "train", ["notes"])
    with pytest.raises(CohortError, match="notes: folder .* not named by a numeric patient id"):
        rsna_cohort(rsna_root)


def test_on_missing_must_be_known(rsna_root: Path) -> None:
    with pytest.raises(ValueError, match="on_missing"):
        rsna_cohort(rsna_root, on_missing="ignore")


def test_rsna_test_split_needs_no_labels(rsna_root: Path) -> None:
    make_series_patients(rsna_root / "test", ["00001", "00002"])
    cohort = rsna_cohort(rsna_root, split="test")
    assert cohort.ids == ["00001", "00002"] and cohort[0]["labels"] == {}


# ----------------------------------------------------------------------------- BraTS


def test_brats2021_layout_and_label_tables(tmp_path: Path) -> None:
    make_brats2021_case(tmp_path, "BraTS2021_00012")
    make_brats2021_case(tmp_path, "BraTS2021_00003", seg=False)
    write_csv(tmp_path / "clinical.csv", "BraTS21ID,age\n12,70\n3,35")
    write_csv(tmp_path / "train_labels.csv", "BraTS21ID,MGMT_value\n12,1\n4000,0")
    cohort = brats2021_cohort(tmp_path)
    assert cohort.ids == ["00003", "00012"]
    case = cohort[1]
    assert case["images"] == {
        "FLAIR": str(tmp_path / "BraTS2021_00012" / "BraTS2021_00012_flair.nii.gz"),
        "T1w": str(tmp_path / "BraTS2021_00012" / "BraTS2021_00012_t1.nii.gz"),
        "T1wCE": str(tmp_path / "BraTS2021_00012" / "BraTS2021_00012_t1ce.nii.gz"),
        "T2w": str(tmp_path / "BraTS2021_00012" / "BraTS2021_00012_t2.nii.gz"),
    }
    assert case["seg"] == str(tmp_path / "BraTS2021_00012" / "BraTS2021_00012_seg.nii.gz")
    assert case["label_scheme"] == "brats2021" and case["source"] == "brats2021"
    assert case["labels"] == {"mgmt": 1, "age": 70.0}
    assert cohort[0]["seg"] is None and cohort[0]["labels"] == {"age": 35.0}


def test_brats2020_folders_and_survival_info(tmp_path: Path) -> None:
    make_brats2021_case(tmp_path, "BraTS20_Training_001")
    make_brats2021_case(tmp_path, "BraTS20_Training_002")
    write_csv(tmp_path / "survival_info.csv",
              "Brats20ID,Age,Survival_days,Extent_of_Resection\n"
              "BraTS20_Training_001,60.2,289,GTR\nBraTS20_Training_002,51,ALIVE (361 days later),")
    cases = brats2021_cohort(tmp_path).cases
    assert cases[0]["labels"] == {"age": 60.2, "survival_days": 289.0, "survival_class": 0}
    assert cases[1]["labels"] == {"age": 51.0}


def test_brats2021_conflicting_tables(tmp_path: Path) -> None:
    make_brats2021_case(tmp_path, "BraTS2021_00012")
    write_csv(tmp_path / "clinical.csv", "BraTS21ID,MGMT_value\nBraTS2021_00012,0")
    write_csv(tmp_path / "train_labels.csv", "BraTS21ID,MGMT_value\n12,1")
    with pytest.raises(LabelError, match="00012: mgmt is 0 in .*clinical.csv but 1 in .*train_"):
        brats2021_cohort(tmp_path)


def test_brats2021_missing_files(tmp_path: Path) -> None:
    make_brats2021_case(tmp_path, "BraTS2021_00001")
    (make_brats2021_case(tmp_path, "BraTS2021_00002") / "BraTS2021_00002_t1ce.nii.gz").unlink()
    make_brats2021_case(tmp_path, "BraTS2021_00003", seg=False)
    with pytest.raises(CohortError, match="00002: missing BraTS2021_00002_t1ce.nii.gz"):
        brats2021_cohort(tmp_path)
    assert brats2021_cohort(tmp_path, sequences=["FLAIR"]).ids == ["00001", "00002", "00003"]
    cohort = brats2021_cohort(tmp_path, require_seg=True, on_missing="skip")
    assert cohort.ids == ["00001"]
    assert [(f.patient, f.reason) for f in cohort.skipped] == [
        ("00002", "missing BraTS2021_00002_t1ce.nii.gz"),
        ("00003", "missing BraTS2021_00003_seg.nii.gz"),
    ]


def test_brats_wrong_root_and_split(tmp_path: Path) -> None:
    (tmp_path / "MICCAI_BraTS2021").mkdir()
    with pytest.raises(CohortError, match="BraTS2021_XXXXX") as info:
        brats2021_cohort(tmp_path)
    assert "MICCAI_BraTS2021" in str(info.value)
    make_brats2021_case(tmp_path, "BraTS2021_00001")
    with pytest.raises(CohortError, match="no 'test' split"):
        brats2021_cohort(tmp_path, split="test")


def test_brats2023_layout(tmp_path: Path) -> None:
    for folder in ("BraTS-GLI-00002-001", "BraTS-GLI-00002-000", "BraTS-GLI-00005-000"):
        for suffix in ("t1c", "t1n", "t2f", "t2w", "seg"):
            touch(tmp_path / folder / f"{folder}-{suffix}.nii.gz")
    cohort = brats2023_cohort(tmp_path)
    assert cohort.ids == ["00002-000", "00002-001", "00005-000"]
    assert [case["patient"] for case in cohort] == ["00002", "00002", "00005"]
    case = cohort[0]
    assert case["images"]["FLAIR"].endswith("BraTS-GLI-00002-000-t2f.nii.gz")
    assert case["images"]["T1w"].endswith("-t1n.nii.gz")
    assert case["images"]["T1wCE"].endswith("-t1c.nii.gz")
    assert case["seg"].endswith("BraTS-GLI-00002-000-seg.nii.gz")
    assert case["label_scheme"] == "brats2023"


def test_brats_hgg_lgg_grades(tmp_path: Path) -> None:
    make_brats2021_case(tmp_path / "HGG", "Brats18_2013_2_1")
    make_brats2021_case(tmp_path / "LGG", "Brats18_2013_0_1")
    write_csv(tmp_path / "survival_data.csv", "BraTS18ID,Age,Survival\nBrats18_2013_2_1,60,500")
    cohort = brats_hgg_lgg_cohort(tmp_path)
    assert cohort.ids == ["Brats18_2013_0_1", "Brats18_2013_2_1"]
    assert cohort[0]["labels"] == {"grade": 0}
    assert cohort[1]["labels"] == {
        "grade": 1, "age": 60.0, "survival_days": 500.0, "survival_class": 2,
    }
    assert cohort[1]["label_scheme"] == "brats2021"
    assert cohort[1]["images"]["T1wCE"].endswith("Brats18_2013_2_1_t1ce.nii.gz")


def test_brats_hgg_lgg_errors(tmp_path: Path) -> None:
    with pytest.raises(CohortError, match="HGG/ or LGG/"):
        brats_hgg_lgg_cohort(tmp_path)
    make_brats2021_case(tmp_path / "HGG", "Brats18_X")
    make_brats2021_case(tmp_path / "LGG", "Brats18_X")
    with pytest.raises(CohortError, match="Brats18_X: case folder is in both HGG/ and LGG/"):
        brats_hgg_lgg_cohort(tmp_path)


# ------------------------------------------------------------------------------- PNG


def write_png(path: Path, value: int, size: tuple[int, int] = (4, 3)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8)).save(path)


def test_png_series_sorted_numerically(tmp_path: Path) -> None:
    for n in (10, 9, 1, 100, 2):
        write_png(tmp_path / f"Image-{n}.png", n)
    volume = read_png_series(tmp_path)
    assert volume.shape == (5, 3, 4)
    assert volume[:, 0, 0].tolist() == [1, 2, 9, 10, 100]


def test_png_series_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        read_png_series(tmp_path / "FLAIR", patient="00012")
    assert "00012" in str(info.value)
    (tmp_path / "FLAIR").mkdir()
    with pytest.raises(DataError, match="no .png slice"):
        read_png_series(tmp_path / "FLAIR")
    write_png(tmp_path / "FLAIR" / "Image-1.png", 0)
    write_png(tmp_path / "FLAIR" / "Image-2.png", 0)
    with pytest.raises(DataError, match="blank"):
        read_png_series(tmp_path / "FLAIR", patient="00012")
    write_png(tmp_path / "FLAIR" / "Image-3.png", 5, size=(5, 5))
    with pytest.raises(DataError, match="Image-3.png"):
        read_png_series(tmp_path / "FLAIR")
    (tmp_path / "FLAIR" / "Image-3.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read PNG"):
        read_png_series(tmp_path / "FLAIR")


def test_png_cohort_labels_from_parent(tmp_path: Path) -> None:
    make_series_patients(tmp_path / "png", ["00002", "00001"], suffix=".png")
    write_csv(tmp_path / "train_labels.csv", "BraTS21ID,MGMT_value\n1,1\n2,0")
    cohort = png_cohort(tmp_path / "png")
    assert cohort.ids == ["00001", "00002"]
    assert cohort[0]["labels"] == {"mgmt": 1} and cohort[0]["source"] == "png"
    assert cohort[0]["images"]["FLAIR"] == str(tmp_path / "png" / "00001" / "FLAIR")
    write_csv(tmp_path / "png" / "train_labels.csv", "BraTS21ID,MGMT_value\n1,0\n2,0")
    assert png_cohort(tmp_path / "png")[0]["labels"] == {"mgmt": 0}


def test_png_cohort_needs_png_files(tmp_path: Path) -> None:
    make_series_patients(tmp_path / "png", ["00001"], suffix=".dcm")
    write_csv(tmp_path / "train_labels.csv", "BraTS21ID,MGMT_value\n1,1")
    with pytest.raises(CohortError, match=r"00001: empty sequence folder .*FLAIR \(no \.png"):
        png_cohort(tmp_path / "png")


# ------------------------------------------------------------------------- synthetic


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    rsna, brats = tmp_path / "rsna", tmp_path / "brats"
    make_rsna(rsna, {"00000": 1, "00001": 0})
    make_rsna(rsna, {"00002": 1}, split="test")
    write_csv(rsna / "clinical.csv",
              "BraTS21ID,grade,age,survival_days\n0,1,60,200\n1,0,30,900\n2,1,70,400")
    for pid in ("00000", "00001", "00002"):
        make_brats2021_case(brats, f"BraTS2021_{pid}")
    write_csv(brats / "clinical.csv", "BraTS21ID,MGMT_value,grade,age,survival_days\n"
              "0,1,1,60,200\n1,0,0,30,900\n2,1,1,70,400")
    return tmp_path


def test_synthetic_dicom_carries_every_label(synthetic_root: Path) -> None:
    cohort = synthetic_cohort(synthetic_root)
    assert cohort.ids == ["00000", "00001"]
    case = cohort[0]
    assert case["images"]["T1wCE"] == str(synthetic_root / "rsna/train/00000/T1wCE")
    assert case["seg"] == str(synthetic_root / "brats/BraTS2021_00000/BraTS2021_00000_seg.nii.gz")
    assert case["labels"] == {
        "mgmt": 1, "grade": 1, "age": 60.0, "survival_days": 200.0, "survival_class": 0,
    }
    assert case["label_scheme"] == "brats2021" and case["source"] == "synthetic"


def test_synthetic_nifti_and_test_split(synthetic_root: Path) -> None:
    cohort = synthetic_cohort(synthetic_root, split="test", image_format="nifti")
    assert cohort.ids == ["00002"]
    assert cohort[0]["images"]["FLAIR"].endswith("BraTS2021_00002_flair.nii.gz")
    assert cohort[0]["seg"].endswith("BraTS2021_00002_seg.nii.gz")
    assert cohort[0]["labels"]["survival_class"] == 1 and cohort[0]["labels"]["mgmt"] == 1


def test_synthetic_disagreeing_tables(synthetic_root: Path) -> None:
    write_csv(synthetic_root / "rsna/train_labels.csv", "BraTS21ID,MGMT_value\n0,0\n1,0")
    with pytest.raises(LabelError, match="patient 00000: mgmt"):
        synthetic_cohort(synthetic_root)


def test_synthetic_missing_mask(synthetic_root: Path) -> None:
    (synthetic_root / "brats/BraTS2021_00001/BraTS2021_00001_seg.nii.gz").unlink()
    with pytest.raises(CohortError, match="00001: missing BraTS2021_00001_seg.nii.gz"):
        synthetic_cohort(synthetic_root)
    cohort = synthetic_cohort(synthetic_root, on_missing="skip")
    assert cohort.ids == ["00000"] and [f.patient for f in cohort.skipped] == ["00001"]


def test_synthetic_missing_case_folder(synthetic_root: Path) -> None:
    for path in (synthetic_root / "brats/BraTS2021_00001").iterdir():
        path.unlink()
    (synthetic_root / "brats/BraTS2021_00001").rmdir()
    with pytest.raises(CohortError, match="00001: no BraTS2021_00001 folder"):
        synthetic_cohort(synthetic_root)


def test_synthetic_generated_as_nifti_only(synthetic_root: Path) -> None:
    for path in sorted((synthetic_root / "rsna").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (synthetic_root / "rsna").rmdir()
    rows = [{"id": "00000", "split": "train"}, {"id": "00001", "split": "train"},
            {"id": "00002", "split": "test"}]
    (synthetic_root / "cohort.json").write_text(json.dumps({"cases": rows}))
    cohort = synthetic_cohort(synthetic_root, image_format="nifti")
    assert cohort.ids == ["00000", "00001"]
    assert cohort[1]["labels"]["grade"] == 0 and cohort[1]["seg"] is not None


def test_synthetic_generated_as_dicom_only(synthetic_root: Path) -> None:
    for path in sorted((synthetic_root / "brats").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (synthetic_root / "brats").rmdir()
    cohort = synthetic_cohort(synthetic_root, split="test")
    assert cohort.ids == ["00002"] and cohort[0]["seg"] is None
    assert cohort[0]["labels"]["mgmt"] == 1 and cohort[0]["labels"]["survival_class"] == 1
    with pytest.raises(CohortError, match="does not exist"):
        synthetic_cohort(synthetic_root, image_format="nifti")


# --------------------------------------------------------------- registry and labels


def test_load_cohort_dispatches(rsna_root: Path) -> None:
    assert set(COHORTS) == {"rsna", "brats2021", "brats2023", "brats_hgg_lgg", "png", "synthetic"}
    assert load_cohort("rsna", rsna_root, exclude=()).ids == rsna_cohort(rsna_root, exclude=()).ids
    with pytest.raises(CohortError, match="unknown cohort layout 'kaggle'"):
        load_cohort("kaggle", rsna_root)


def test_require_label_names_data_configs(rsna_root: Path, tmp_path: Path) -> None:
    rsna = rsna_cohort(rsna_root)
    assert require_label(rsna, "mgmt", "rsna") == rsna.cases
    assert require_label(rsna, "sequence", "rsna") == rsna.cases
    with pytest.raises(LabelError, match="provides no 'seg'.*data=brats.*data=synthetic"):
        require_label(rsna, "seg", "rsna")
    with pytest.raises(LabelError, match="data=brats_hgg_lgg"):
        require_label(rsna, "grade", "rsna")
    with pytest.raises(LabelError, match="data=synthetic.*survival_info.csv"):
        require_label(rsna, "survival", "rsna")
    make_brats2021_case(tmp_path / "brats", "BraTS2021_00001")
    with pytest.raises(LabelError, match="data=rsna.*train_labels.csv"):
        require_label(brats2021_cohort(tmp_path / "brats"), "mgmt", "brats")
    with pytest.raises(LabelError, match="unknown target label 'idh'"):
        require_label(rsna, "idh", "rsna")


def test_require_label_keeps_labelled_cases_and_warns(tmp_path: Path, caplog) -> None:
    for pid in ("00001", "00002", "00003"):
        make_brats2021_case(tmp_path, f"BraTS2021_{pid}")
    write_csv(tmp_path / "train_labels.csv", "BraTS21ID,MGMT_value\n1,1\n3,0")
    with caplog.at_level(logging.WARNING):
        kept = require_label(brats2021_cohort(tmp_path), "mgmt", "brats")
    assert [case["id"] for case in kept] == ["00001", "00003"]
    assert "00002" in caplog.text
