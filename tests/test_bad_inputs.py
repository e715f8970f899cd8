"""Bad input, end to end: the datamodule, train.py and the converter name the patient and file.

Each test breaks one patient of a copy of the tiny cohort (the other patients are links to
the original, so their preprocessing is cached once for the whole module) and checks that
preparation stops with our own error naming the patient, the file and the reason, or, when
the user asked for it, goes on and reports the patient as skipped.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.networks.nets import UNet
from omegaconf import OmegaConf

from radiogenomics.data.convert import ERRORS_FILE
from radiogenomics.data.convert import main as convert_main
from radiogenomics.data.datamodule import MRIDataModule
from radiogenomics.data.transforms import PreprocessConfig, preprocessing
from radiogenomics.errors import CheckpointError, CohortError, LabelError
from radiogenomics.train import train

SEQUENCES = ("T1wCE", "FLAIR")
"""The synthetic data config's sequences: the cache is shared with the training tests."""
BROKEN = "00003"
"""The patient broken in each test (a train patient of the tiny cohort)."""


@pytest.fixture(scope="module")
def cache_dir(tiny_cohort: Path) -> Path:
    """A preprocessing cache shared by every test of the reliability suite."""
    return tiny_cohort.parent / "reliability-cache"


def cohort_view(source: Path, root: Path, copies: Iterable[str] = ()) -> Path:
    """The synthetic cohort `source` at `root`: tables copied, patient folders linked except
    those of `copies`, which are real copies free to break."""
    copies = set(copies)
    for path in [source / "cohort.json", *source.rglob("*.csv")]:
        target = root / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    folders = [*(source / "rsna").glob("t*/*"), *(source / "brats").glob("BraTS2021_*")]
    for folder in folders:
        target = root / folder.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if folder.name.removeprefix("BraTS2021_") in copies:
            shutil.copytree(folder, target)
        else:
            target.symlink_to(folder)
    return root


def datamodule(root: Path, cache_dir: Path, **options) -> MRIDataModule:
    settings = dict(layout="synthetic", target="mgmt", sequences=SEQUENCES,
                    spatial_size=(16, 16, 16), n_folds=2, batch_size=2, num_workers=0,
                    prepare_workers=0, test_split="test", cohort_options={})
    settings.update(options)
    return MRIDataModule(root=str(root), cache_dir=str(cache_dir), **settings)


def series(root: Path, patient: str = BROKEN, sequence: str = "T1wCE") -> Path:
    return root / "rsna" / "train" / patient / sequence


def slices(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"), key=lambda p: int(p.stem.split("-")[-1]))


def rewrite(path: Path, change: Callable[[pydicom.Dataset], None]) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def truncate(folder: Path) -> str:
    path = slices(folder)[2]
    path.write_bytes(path.read_bytes()[:700])
    return path.name


def html_page_in_place_of_a_slice(folder: Path) -> str:
    path = slices(folder)[1]  # a page beside the slices is left out; in place of one, a gap
    path.write_text("<html><body>403 Forbidden</body></html>")
    return path.name


def blank(folder: Path) -> str:
    def zero(ds: pydicom.Dataset) -> None:
        ds.PixelData = np.zeros((ds.Rows, ds.Columns), np.int16).tobytes()

    for path in slices(folder):
        rewrite(path, zero)
    return folder.name


def shrink_one_slice(folder: Path) -> str:
    def shrink(ds: pydicom.Dataset) -> None:
        ds.Rows, ds.Columns = 8, 8
        ds.PixelData = np.ones((8, 8), np.int16).tobytes()

    path = slices(folder)[1]
    rewrite(path, shrink)
    return path.name


def turn_one_slice(folder: Path) -> str:
    def turn(ds: pydicom.Dataset) -> None:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]

    path = slices(folder)[1]
    rewrite(path, turn)
    return path.name


def duplicate_one_slice(folder: Path) -> str:
    shutil.copy(slices(folder)[1], folder / "Image-9999.dcm")
    return "Image-9999.dcm"


DICOM_DEFECTS = {
    "truncated file": (truncate, "truncated"),
    "non-DICOM file": (html_page_in_place_of_a_slice, "not a DICOM file"),
    "blank series": (blank, "blank series"),
    "mixed slice sizes": (shrink_one_slice, "mixed slice sizes"),
    "mixed orientations": (turn_one_slice, "mixed slice orientations"),
    "duplicate positions": (duplicate_one_slice, "duplicate slice position"),
}


@pytest.mark.parametrize("defect", list(DICOM_DEFECTS))
def test_broken_series_stops_preparation_naming_patient_and_file(
    defect, tiny_cohort, cache_dir, tmp_path
) -> None:
    root = cohort_view(tiny_cohort, tmp_path / "cohort", copies=[BROKEN])
    break_series, reason = DICOM_DEFECTS[defect]
    culprit = break_series(series(root))
    with pytest.raises(CohortError) as caught:
        datamodule(root, cache_dir).prepare_data()
    message = str(caught.value)
    assert "1 patient(s) could not be preprocessed" in message
    assert f"patient {BROKEN}" in message and culprit in message and reason in message


def test_skipped_patient_is_reported_in_run_info_and_left_out_of_the_splits(
    train_cfg, tiny_cohort, cache_dir, tmp_path
) -> None:
    root = cohort_view(tiny_cohort, tmp_path / "cohort", copies=[BROKEN])
    culprit = truncate(series(root))
    cfg = train_cfg(f"data.root={root}", f"data.cache_dir={cache_dir}", "data.on_error=skip",
                    "test=false", "model.net.widen_factor=0.25")
    metrics, _ = train(cfg)
    run = Path(cfg.paths.output_dir)
    skipped = json.loads((run / "run_info.json").read_text())["skipped_patients"]
    assert list(skipped) == [BROKEN] and culprit in skipped[BROKEN]
    splits = json.loads((run / "splits.json").read_text())
    assert all(BROKEN not in fold["train"] + fold["val"] for fold in splits["folds"])
    assert np.isfinite(metrics["train/loss"])


def test_missing_sequence_folder_raises_or_is_skipped_when_asked(
    tiny_cohort, cache_dir, tmp_path
) -> None:
    root = cohort_view(tiny_cohort, tmp_path / "cohort", copies=[BROKEN])
    shutil.rmtree(series(root, sequence="FLAIR"))
    with pytest.raises(CohortError, match=f"{BROKEN}: missing sequence folder .*FLAIR"):
        datamodule(root, cache_dir).prepare_data()
    dm = datamodule(root, cache_dir, on_error="skip")
    dm.prepare_data()
    dm.setup()
    assert "missing sequence folder" in {f.patient: f.reason for f in dm.skipped}[BROKEN]
    assert BROKEN not in {case["id"] for case in dm.train_cases + dm.val_cases}


def test_a_series_the_model_does_not_read_may_be_missing(
    tiny_cohort, cache_dir, tmp_path
) -> None:
    """RSNA layout: a patient without T2w still trains a T1wCE + FLAIR model."""
    root = cohort_view(tiny_cohort, tmp_path / "cohort", copies=[BROKEN])
    shutil.rmtree(series(root, sequence="T2w"))
    dm = datamodule(root / "rsna", cache_dir, layout="rsna", test_split="val")
    dm.prepare_data()
    dm.setup()
    assert not dm.skipped
    assert BROKEN in {case["id"] for case in dm.train_cases + dm.val_cases}


def brats_view(source: Path, root: Path, patients: Iterable[str]) -> Path:
    """A BraTS 2021 cohort of a few synthetic patients; the first one is a real copy."""
    root.mkdir(parents=True)
    shutil.copy(source / "brats" / "clinical.csv", root)
    for index, patient in enumerate(patients):
        folder = source / "brats" / f"BraTS2021_{patient}"
        if index == 0:
            shutil.copytree(folder, root / folder.name)
        else:
            (root / folder.name).symlink_to(folder)
    return root / f"BraTS2021_{next(iter(patients))}"


def brats_datamodule(folder: Path, cache_dir: Path, target: str) -> MRIDataModule:
    return datamodule(folder.parent, cache_dir, layout="brats2021", target=target,
                      test_split="val")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_nifti_voxels_name_the_file(value, tiny_cohort, cache_dir, tmp_path) -> None:
    folder = brats_view(tiny_cohort, tmp_path / "brats", [BROKEN, "00000", "00001"])
    path = folder / f"{folder.name}_t1ce.nii.gz"
    image = nib.load(path)
    array = image.get_fdata()
    array[3, 4, 5] = value
    nib.save(nib.Nifti1Image(array, image.affine), path)
    with pytest.raises(CohortError) as caught:
        brats_datamodule(folder, cache_dir, "mgmt").prepare_data()
    assert f"patient {BROKEN}" in str(caught.value) and path.name in str(caught.value)
    assert "NaN or infinite" in str(caught.value)


def test_mask_on_another_grid_than_its_images_is_an_error(tiny_cohort, cache_dir,
                                                          tmp_path) -> None:
    folder = brats_view(tiny_cohort, tmp_path / "brats", [BROKEN, "00000", "00001"])
    path = folder / f"{folder.name}_seg.nii.gz"
    mask = nib.load(path)
    cropped = np.asarray(mask.dataobj)[2:-2]  # resampling would silently stretch this mask
    nib.save(nib.Nifti1Image(cropped, mask.affine, mask.header), path)
    with pytest.raises(CohortError) as caught:
        brats_datamodule(folder, cache_dir, "seg").prepare_data()
    message = str(caught.value)
    assert f"patient {BROKEN}" in message and path.name in message
    assert "not on the voxel grid" in message


def test_mask_of_dicom_series_is_resampled_by_world_position(tiny_cohort) -> None:
    """A DICOM series has its own grid: the NIfTI mask is mapped onto it, not refused."""
    pipeline = preprocessing(PreprocessConfig(sequences=("T1wCE",), spatial_size=(16, 16, 16),
                                              with_seg=True))
    case = {"id": BROKEN, "label_scheme": "brats2021", "T1wCE": str(series(tiny_cohort)),
            "seg": str(tiny_cohort / "brats" / f"BraTS2021_{BROKEN}"
                       / f"BraTS2021_{BROKEN}_seg.nii.gz")}
    result = pipeline(case)
    assert tuple(result["seg"].shape) == (1, 16, 16, 16) and result["seg"].max() > 0


def write_labels(root: Path, rows: list[tuple[str, str]]) -> None:
    with open(root / "rsna" / "train_labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("BraTS21ID", "MGMT_value"), *rows])


def label_rows(tiny_cohort: Path) -> list[tuple[str, str]]:
    with open(tiny_cohort / "rsna" / "train_labels.csv") as handle:
        return [(row["BraTS21ID"], row["MGMT_value"]) for row in csv.DictReader(handle)]


@pytest.mark.parametrize(("problem", "edit", "error", "expected"), [
    ("missing row", lambda rows: [r for r in rows if r[0] != "3"], CohortError,
     "00003: has no MGMT_value row"),
    ("extra row", lambda rows: [*rows, ("777", "1")], CohortError,
     "00777: labelled in .* but has no folder"),
    ("duplicated row", lambda rows: [*rows, ("3", "1")], LabelError,
     "patient 00003: more than one row"),
    ("non-binary value", lambda rows: [("3", "2") if r[0] == "3" else r for r in rows],
     LabelError, "patient 00003: MGMT_value is '2', expected 0 or 1"),
    ("text value", lambda rows: [("3", "yes") if r[0] == "3" else r for r in rows],
     LabelError, "patient 00003: MGMT_value is 'yes'"),
])
def test_bad_label_table_names_the_patient(problem, edit, error, expected, tiny_cohort,
                                           cache_dir, tmp_path) -> None:
    root = cohort_view(tiny_cohort, tmp_path / "cohort")
    write_labels(root, edit(label_rows(tiny_cohort)))
    dm = datamodule(root / "rsna", cache_dir, layout="rsna", test_split="val")
    with pytest.raises(error, match=expected) as caught:
        dm.prepare_data()
    assert "train_labels.csv" in str(caught.value)


def test_patient_without_label_row_is_skipped_when_asked(tiny_cohort, cache_dir,
                                                         tmp_path) -> None:
    root = cohort_view(tiny_cohort, tmp_path / "cohort")
    write_labels(root, [r for r in label_rows(tiny_cohort) if r[0] != "3"])
    dm = datamodule(root / "rsna", cache_dir, layout="rsna", test_split="val",
                    sequences=("T1wCE",), on_error="skip")
    dm.prepare_data()
    dm.setup()
    assert "no MGMT_value row" in {f.patient: f.reason for f in dm.skipped}["00003"]
    assert "00003" not in {case["id"] for case in dm.train_cases + dm.val_cases}


def test_empty_cohort_names_the_folder(tmp_path, cache_dir) -> None:
    (tmp_path / "rsna" / "train").mkdir(parents=True)
    (tmp_path / "rsna" / "train_labels.csv").write_text("BraTS21ID,MGMT_value\n")
    dm = datamodule(tmp_path / "rsna", cache_dir, layout="rsna", test_split="val")
    with pytest.raises(CohortError, match="no patient folder found") as caught:
        dm.prepare_data()
    assert caught.value.path == str(tmp_path / "rsna" / "train")


def test_converter_reports_every_broken_series_and_converts_the_rest(
    tiny_cohort, tmp_path, capsys
) -> None:
    broken = dict(zip(["00000", "00001", "00003", "00004", "00005", "00007"], DICOM_DEFECTS))
    root = cohort_view(tiny_cohort, tmp_path / "cohort", copies=[*broken, "00008"])
    culprits = {pid: DICOM_DEFECTS[defect][0](series(root, pid)) for pid, defect in broken.items()}
    shutil.rmtree(series(root, "00008", "T2w"))
    out = tmp_path / "nifti"
    assert convert_main([str(root / "rsna" / "train"), str(out), "--workers", "1"]) == 1
    with open(out / ERRORS_FILE) as handle:
        failures = {(row["patient"], row["series"]): row["error"] for row in csv.DictReader(handle)}
    assert set(failures) == {(pid, "T1wCE") for pid in broken} | {("00008", "T2w")}
    for pid, defect in broken.items():
        message = failures[pid, "T1wCE"]
        assert f"patient {pid}" in message and culprits[pid] in message
        assert DICOM_DEFECTS[defect][1] in message and "unexpected" not in message
    assert "series folder missing" in failures["00008", "T2w"]
    assert (out / "BraTS2021_00010" / "BraTS2021_00010_t1ce.nii.gz").is_file()
    assert (out / "BraTS2021_00000" / "BraTS2021_00000_flair.nii.gz").is_file()
    assert "7 series failed in 7 patient(s)" in capsys.readouterr().out


@pytest.fixture
def segmentation_run(tmp_path) -> Path:
    """A run directory as train.py leaves it, of a segmentation model (a U-Net)."""
    run = tmp_path / "seg-run"
    (run / "checkpoints").mkdir(parents=True)
    net = UNet(spatial_dims=3, in_channels=4, out_channels=3, channels=(4, 8), strides=(2,))
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                "hyper_parameters": {"target": "seg", "output": "regions"}},
               run / "checkpoints" / "last.ckpt")
    OmegaConf.save({"model": {"_target_": "radiogenomics.models.segmenter.SegmentationModule",
                              "net": {"_target_": "monai.networks.nets.UNet"}}},
                   run / "config.yaml")
    return run


@pytest.mark.parametrize("with_config", [True, False])
def test_checkpoint_of_another_model_is_refused_naming_its_model(
    with_config, segmentation_run, train_cfg
) -> None:
    if not with_config:
        (segmentation_run / "config.yaml").unlink()
    cfg = train_cfg(f"ckpt_path={segmentation_run}")
    with pytest.raises(CheckpointError) as caught:
        train(cfg)
    message = str(caught.value)
    assert "ResNet3D" in message and "missing" in message
    expected = "SegmentationModule (net monai.networks.nets.UNet)" if with_config else "'seg'"
    assert expected in message


def test_truncated_checkpoint_is_a_clear_error(segmentation_run, train_cfg) -> None:
    checkpoint = segmentation_run / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*truncated or corrupt"):
        train(train_cfg(f"ckpt_path={checkpoint}"))

