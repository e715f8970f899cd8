"""Careless use loses nothing and never gives a silently wrong result (data side).

Training never writes under data.root (read-only cohorts train) and never regenerates a
cohort; splits go beside the cache; config mistakes about data fail before any work;
predict.py never mixes an earlier prediction with a new one and never writes a non-finite
value with exit code 0.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from radiogenomics.data.cohorts import load_cohort, prediction_cohort
from radiogenomics.data.datamodule import MRIDataModule, cohort_key
from radiogenomics.errors import CohortError, ConfigError, RadiogenomicsError
from radiogenomics.inference import outputs
from radiogenomics.inference.runner import CohortPrediction, PatientPrediction
from tests.conftest import compose_train

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"sequences": ("T1wCE",), "spatial_size": (16, 16, 16), "spacing": (6.0, 6.0, 6.0),
         "n_folds": 2, "num_workers": 0, "prepare_workers": 0, "test_split": "test"}


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` with its size and mtime."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def read_only_cohort(tiny_cohort: Path, tmp_path: Path):
    """A copy of the tiny cohort with every write permission removed (Kaggle's input)."""
    cohort = tmp_path / "input" / "cohort"
    shutil.copytree(tiny_cohort, cohort, ignore=shutil.ignore_patterns("splits_*", ".cache"))
    for path in [cohort, *cohort.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield cohort
    for path in [cohort, *cohort.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


# --- nothing is written under data.root -----------------------------------------------------

def test_training_on_a_read_only_cohort_writes_nothing_under_it(read_only_cohort: Path,
                                                                train_cfg, tmp_path) -> None:
    """Tests run as root, where chmod stops no write: the listing must not change either."""
    from radiogenomics.train import train

    before = listing(read_only_cohort)
    cfg = train_cfg(f"data.root={read_only_cohort}")
    metrics, _ = train(cfg)
    assert "test/auc" in metrics
    assert listing(read_only_cohort) == before
    splits = (Path(cfg.data.splits_dir) / cohort_key(read_only_cohort)
              / "splits_mgmt_2fold_seed42.json")
    assert splits.is_file() and Path(cfg.data.splits_dir) == tmp_path / "data" / "splits"
    assert json.loads(splits.read_text()) == json.loads((tmp_path / "run" / "splits.json")
                                                        .read_text())


def test_splits_beside_the_data_from_older_versions_are_still_read(tiny_cohort: Path,
                                                                   tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort, ignore=shutil.ignore_patterns("splits_*", ".cache"))
    first = MRIDataModule("synthetic", str(cohort), cache_dir=str(tmp_path / "cache"), **SMALL)
    first.prepare_data()
    first.setup()
    made = first.splits_path()
    assert tmp_path / "cache" in made.parents and not list(cohort.glob("splits_*"))
    # an older version wrote the splits beside the data, and the user edited them
    edited = json.loads(made.read_text())
    folds = edited["folds"]
    folds[0], folds[1] = folds[1], folds[0]
    (cohort / made.name).write_text(json.dumps(edited))
    again = MRIDataModule("synthetic", str(cohort), cache_dir=str(tmp_path / "cache"), **SMALL)
    again.prepare_data()
    again.setup()
    assert again.splits_path() == cohort / made.name
    assert sorted(c["id"] for c in again.val_cases) == edited["folds"][0]["val"]


def test_two_cohorts_of_one_name_never_share_their_splits(tmp_path: Path) -> None:
    assert cohort_key(tmp_path / "a" / "cohort") != cohort_key(tmp_path / "b" / "cohort")
    assert cohort_key(tmp_path / "a" / "cohort").startswith("cohort-")


# --- the synthetic cohort is generated once, never regenerated --------------------------------

def test_default_synthetic_folder_names_its_settings() -> None:
    def root(*overrides: str) -> str:
        cfg = compose_train(["paths.root_dir=/home", *overrides])
        return OmegaConf.to_container(cfg.data, resolve=True)["root"]

    default = root()
    assert default == "/home/data/synthetic/default-n150-test30-seed0-size64"
    assert root("data.synthetic.preset=realistic") == (
        "/home/data/synthetic/realistic-n150-test30-seed0-size64")
    assert root("data.synthetic.patients=40", "data.synthetic.test_patients=8") != default
    assert root("model=vgg16") == root("model=series_resnet") == default
    assert root("data.root=/mine") == "/mine"


def test_a_run_reuses_its_cohort_and_refuses_one_of_other_settings(tmp_path: Path) -> None:
    settings = {"patients": 6, "test_patients": 2, "seed": 0, "preset": "default", "size": 24}
    root = tmp_path / "synthetic" / "mine"

    def datamodule(**synthetic) -> MRIDataModule:
        return MRIDataModule("synthetic", str(root), cache_dir=str(tmp_path / "cache"),
                             synthetic={**settings, **synthetic}, **SMALL)

    datamodule().ensure_synthetic()
    before = listing(root)
    datamodule().ensure_synthetic()  # the second run: read as it is
    assert listing(root) == before
    (root / "notes.txt").write_text("my notes")
    before = listing(root)
    with pytest.raises(CohortError, match=r"patients 6, asked 8.*data\.synthetic=null"):
        datamodule(patients=8).ensure_synthetic()
    assert listing(root) == before
    assert sorted(p.name for p in root.parent.iterdir()) == ["mine"]  # no temporary left


# --- config mistakes about data fail before any work -----------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"fold": 1.5}, "data.fold: must be a whole number, not 1.5"),
    ({"fold": "a"}, "data.fold: must be a whole number, not 'a'"),
    ({"fold": 2}, "data.fold: 2 is outside 0..1"),
    ({"fold": -1}, "data.fold: must be at least 0"),
    ({"n_folds": 1}, "data.n_folds: must be at least 2"),
    ({"spatial_size": (0, 16, 16)}, "data.spatial_size: must be a list of 3 positive"),
    ({"spatial_size": (16, -16, 16)}, "data.spatial_size: must be a list of 3 positive"),
    ({"spatial_size": (16, 16)}, "data.spatial_size: must be a list of 3 positive"),
    ({"spacing": (0.0, 1.0, 1.0)}, "data.spacing: voxel sizes must be positive"),
    ({"sequences": ["t1wce", "flare"]}, "unknown MRI sequence 'flare'.*FLAIR, T1w, T1wCE, T2w"),
    ({"sequences": ["FLAIR", "flair"]}, "names FLAIR more than once"),
    ({"batch_size": 0}, "data.batch_size: must be at least 1"),
])
def test_data_config_mistakes_are_errors_before_any_work(tmp_path: Path, overrides,
                                                         message) -> None:
    missing = tmp_path / "not-generated"
    with pytest.raises(ConfigError, match=message):
        MRIDataModule("synthetic", str(missing), cache_dir=str(tmp_path / "cache"),
                      **{**SMALL, **overrides})
    assert not missing.exists() and not (tmp_path / "cache").exists()


def test_sequence_names_are_accepted_in_any_case(tmp_path: Path) -> None:
    datamodule = MRIDataModule("synthetic", str(tmp_path), cache_dir=str(tmp_path / "c"),
                               **{**SMALL, "sequences": ["t1wce", "flair"]})
    assert datamodule.sequences == ("T1wCE", "FLAIR")
    assert datamodule.preprocess.sequences == ("T1wCE", "FLAIR")
    aliases = MRIDataModule("synthetic", str(tmp_path), cache_dir=str(tmp_path / "c"),
                            **{**SMALL, "sequences": ["T1C", "t2f"]})
    assert aliases.sequences == ("T1wCE", "FLAIR")


def test_a_bad_fold_on_the_command_line_names_the_key(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "train.py", "data.fold=1.5", "logger=none",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "RADIOGENOMICS_HOME": str(tmp_path)})
    assert run.returncode != 0
    assert "data.fold: must be a whole number, not 1.5" in run.stdout + run.stderr
    assert not (tmp_path / "data").exists()  # nothing generated


# --- two folders of one sequence are an error naming both ------------------------------------

@pytest.mark.parametrize("extra", ["T1C", "t1wce"])
def test_two_folders_of_one_sequence_are_an_error_naming_both(tiny_cohort: Path,
                                                              tmp_path: Path, extra) -> None:
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort / "rsna", cohort / "rsna")
    shutil.copy(tiny_cohort / "cohort.json", cohort / "cohort.json")
    patient = sorted((cohort / "rsna" / "train").iterdir())[0]
    shutil.copytree(patient / "T1wCE", patient / extra)
    with pytest.raises(CohortError) as info:
        load_cohort("rsna", cohort / "rsna", sequences=["T1wCE"], exclude=())
    text = str(info.value)
    assert patient.name in text and str(patient / "T1wCE") in text and str(patient / extra) in text
    # a model that does not read that sequence is not concerned
    assert load_cohort("rsna", cohort / "rsna", sequences=["FLAIR"], exclude=()).cases
    # predict.py: one patient's folder given directly
    single = prediction_cohort(patient, ["T1wCE"])
    assert not single.cases and extra in single.skipped[0].reason


def test_a_nifti_image_present_twice_is_an_error_naming_both(tiny_cohort: Path,
                                                             tmp_path: Path) -> None:
    cohort = tmp_path / "brats"
    shutil.copytree(tiny_cohort / "brats", cohort)
    case = sorted(p for p in cohort.iterdir() if p.is_dir())[0]
    gz = case / f"{case.name}_flair.nii.gz"
    import nibabel as nib

    nib.save(nib.load(gz), case / f"{case.name}_flair.nii")
    both = rf"{case.name}_flair\.nii\.gz and {case.name}_flair\.nii"
    with pytest.raises(CohortError, match=both):
        load_cohort("brats2021", cohort, sequences=["FLAIR"])


# --- predict.py ---------------------------------------------------------------------------

def _result(*probabilities: float) -> CohortPrediction:
    patients = [PatientPrediction(f"{k:05d}", np.array([p]), np.array([[p]]))
                for k, p in enumerate(probabilities)]
    return CohortPrediction("mgmt", ["m"], patients)


def test_a_non_finite_output_is_a_failure_with_the_fallback_value(tmp_path: Path) -> None:
    result = _result(0.7, float("nan"), float("inf"))
    assert outputs.reject_non_finite(result, 0.5) == ["00001", "00002"]
    outputs.write_submission(result, tmp_path / "submission.csv")
    outputs.write_errors(result, tmp_path / "errors.csv")
    submission = pd.read_csv(tmp_path / "submission.csv")
    assert submission.MGMT_value.tolist() == [0.7, 0.5, 0.5]
    errors = pd.read_csv(tmp_path / "errors.csv", dtype=str)
    assert errors.patient.tolist() == ["00001", "00002"]
    assert errors.error.str.contains("not finite").all()


def test_an_earlier_prediction_is_refused_or_replaced_never_mixed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "maps").mkdir(parents=True)
    (out / "masks").mkdir()
    ours = [out / "submission.csv", out / "roc.png", out / "report.md",
            out / "maps" / "00003_gradcam.png", out / "maps" / "00003_gradcam.nii.gz",
            out / "masks" / "00003_seg.nii.gz", out / "masks" / "00003_entropy.nii.gz"]
    theirs = [out / "notes.txt", out / "my_figure.png", out / "maps" / "annotated.png"]
    for path in ours + theirs:
        path.write_text("x")
    with pytest.raises(RadiogenomicsError, match="earlier prediction.*overwrite=true"):
        outputs.clear_earlier_outputs(out, overwrite=False)
    assert all(p.exists() for p in ours + theirs)
    assert sorted(outputs.clear_earlier_outputs(out, overwrite=True)) == sorted(ours)
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted(theirs)
    assert not (out / "masks").exists()  # emptied, so removed
    assert outputs.clear_earlier_outputs(out, overwrite=False) == []


@pytest.fixture(scope="module")
def nan_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained run whose weights were made NaN (a diverged checkpoint)."""
    from tests.test_predict import _train

    work = tmp_path_factory.mktemp("nan")
    run = _train(tiny_cohort, work, work / "run", "model.net.widen_factor=0.25")
    for path in (run / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        for name, value in checkpoint["state_dict"].items():
            if value.is_floating_point():
                checkpoint["state_dict"][name] = torch.full_like(value, float("nan"))
        torch.save(checkpoint, path)
    return run


def test_predict_with_a_nan_model_exits_3_and_writes_no_nan(nan_run: Path, tiny_cohort: Path,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "out"

    def predict(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "predict.py", f"ckpt_path={nan_run}", f"data.root={tiny_cohort}",
             f"output_dir={out}", "device=cpu", "data.split=test", *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=300)

    run = predict()
    assert run.returncode == 3, run.stderr[-3000:]
    submission = pd.read_csv(out / "submission.csv", dtype={"BraTS21ID": str})
    assert len(submission) == 2 and (submission.MGMT_value == 0.5).all()
    errors = pd.read_csv(out / "errors.csv", dtype=str)
    assert sorted(errors.patient) == sorted(submission.BraTS21ID)
    assert errors.error.str.contains("not finite").all()
    # the same output folder again: refused, the earlier files untouched
    stamp = (out / "submission.csv").stat().st_mtime_ns
    again = predict()
    assert again.returncode not in (0, 3)
    assert "overwrite=true" in again.stdout + again.stderr
    assert (out / "submission.csv").stat().st_mtime_ns == stamp


def test_a_segmenter_with_non_finite_output_writes_no_mask(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from radiogenomics.data.cohorts import Cohort
    from radiogenomics.inference import segmentation

    segmenter = object.__new__(segmentation.CohortSegmenter)
    segmenter.models = [SimpleNamespace(name="m", module=None)]
    segmenter.modules = [None]
    segmenter.out_dir = tmp_path
    segmenter.uncertainty = None
    segmenter.preprocessor = lambda case: SimpleNamespace(image=torch.zeros(1, 4, 4, 4))
    monkeypatch.setattr(segmentation, "probability_map",
                        lambda module, image: np.full((3, 4, 4, 4), np.nan))
    case = {"id": "00007", "images": {"T1wCE": str(tmp_path)}, "labels": {}, "seg": None}
    result = segmenter.segment(Cohort("x", tmp_path, [case]))
    assert [f.patient for f in result.failures] == ["00007"]
    assert "not finite" in result.failures[0].reason
    assert result.patients[0].failed and not (tmp_path / "masks").exists()
