"""The leakage audit (`radiogenomics audit`): each check fails on a cohort or run built to leak
and passes on a clean one; verdicts are lines, exit 0 / 4, and a bad argument is one message."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from omegaconf import open_dict

from radiogenomics.audit import EXIT_LEAK
from radiogenomics.audit.checks import Partition, check_ids, check_slices, check_unseen
from radiogenomics.audit.command import main
from radiogenomics.audit.duplicates import DUPLICATE_CORRELATION, coarse, fingerprints, similarities
from radiogenomics.audit.permutation import chance_p_value, independent_labels
from radiogenomics.config import EXIT_USER_ERROR
from radiogenomics.train import train

ROOT = Path(__file__).resolve().parents[1]
SLICES = ["model=multiscale", "data=slices", "data.spatial_size=[16,16,8]",
          "data.spacing=[4,4,4]", "data.slices_per_case=4", "data.batch_size=4",
          "data.test_split=val"]
DUPLICATE, COPY = "00003", "00999"


def _audit(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, str]]:
    """Run the audit in this process: its exit status and its verdict line of each check."""
    status = main(list(args))
    lines = capsys.readouterr().out.splitlines()
    verdicts = {line.split()[1].rstrip(":"): line for line in lines
                if line.split(" ", 1)[0] in ("PASS", "FAIL", "SKIP")}
    return status, verdicts


def _command(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m radiogenomics audit ...` as a user types it."""
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR",
                                                            "_RG_FULL_ERROR_SET")}
    return subprocess.run([sys.executable, "-m", "radiogenomics", "audit", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def _rescanned(folder: Path, seed: int = 0) -> None:
    """The series of `folder` as another export of the same scan: noise of 2% of the spread
    on every pixel of the head (the background stays 0, as the generator writes it)."""
    rng = np.random.default_rng(seed)
    for path in folder.rglob("*.dcm"):
        image = pydicom.dcmread(path)
        pixels = image.pixel_array.astype(np.float64)
        noise = rng.normal(0, 0.02 * max(pixels.std(), 1.0), pixels.shape)
        noisy = np.where(pixels != 0, pixels + noise, 0)
        info = np.iinfo(image.pixel_array.dtype)
        image.PixelData = np.clip(noisy, info.min, info.max).astype(
            image.pixel_array.dtype).tobytes()
        image.save_as(path)


def _rsna_cohort(tiny_cohort: Path, out: Path, duplicate: bool) -> Path:
    """The tiny cohort's RSNA part; with `duplicate`, patient 00003 again as 00999, re-exported."""
    root = out / "rsna"
    (root / "train").mkdir(parents=True)
    for patient in sorted((tiny_cohort / "rsna" / "train").iterdir()):
        (root / "train" / patient.name).symlink_to(patient)
    labels = pd.read_csv(tiny_cohort / "rsna" / "train_labels.csv")
    if duplicate:
        shutil.copytree(tiny_cohort / "rsna" / "train" / DUPLICATE, root / "train" / COPY)
        _rescanned(root / "train" / COPY)
        row = labels[labels.BraTS21ID == int(DUPLICATE)].assign(BraTS21ID=int(COPY))
        labels = pd.concat([labels, row])
    labels.to_csv(root / "train_labels.csv", index=False)
    return root


def _data_overrides(root: Path, tmp_path: Path) -> list[str]:
    return ["--data", "data=rsna", f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}",
            f"data.splits_dir={tmp_path / 'splits'}", "data.spatial_size=[16,16,16]",
            "data.n_folds=2", "data.prepare_workers=0", "data.num_workers=0"]


def _splits_apart(root: Path, path: Path) -> Path:
    """A 2-fold splits file that validates the patient and its copy in different folds."""
    ids = sorted(p.name for p in (root / "train").iterdir())
    first = [DUPLICATE] + [i for i in ids if i not in (DUPLICATE, COPY)][:3]
    second = [i for i in ids if i not in first]
    folds = [{"train": sorted(second), "val": sorted(first)},
             {"train": sorted(first), "val": sorted(second)}]
    path.write_text(json.dumps({"n_folds": 2, "seed": 42, "stratify": "mgmt",
                                "stratified": False, "folds": folds, "test": []}))
    return path


# ---------------------------------------------------------------------------- near-duplicates
def test_a_patient_duplicated_under_a_new_id_fails_the_data_audit(tiny_cohort, tmp_path,
                                                                   capsys) -> None:
    root = _rsna_cohort(tiny_cohort, tmp_path, duplicate=True)
    splits = _splits_apart(root, tmp_path / "splits.json")
    status, verdicts = _audit(capsys, *_data_overrides(root, tmp_path),
                              f"data.splits_file={splits}")
    assert status == EXIT_LEAK
    assert verdicts["near-duplicates"].startswith("FAIL near-duplicates: 1 pair")
    assert DUPLICATE in verdicts["near-duplicates"] and COPY in verdicts["near-duplicates"]
    assert verdicts["id-overlap"].startswith("PASS")  # the ids alone show nothing
    assert not list(root.rglob("splits_*.json")), "the audit wrote under data.root"


def test_a_clean_cohort_passes_the_data_audit(tiny_cohort, tmp_path, capsys) -> None:
    root = _rsna_cohort(tiny_cohort, tmp_path, duplicate=False)
    status, verdicts = _audit(capsys, *_data_overrides(root, tmp_path))
    assert status == 0, verdicts
    assert verdicts["id-overlap"].startswith("PASS id-overlap: no patient in two parts (2 folds")
    assert verdicts["near-duplicates"].startswith("PASS")
    assert verdicts["slice-overlap"].startswith("SKIP")
    assert verdicts["label-permutation"].startswith("SKIP label-permutation: needs a trained run")


def test_fingerprints_match_a_noisy_rescaled_copy_and_tell_patients_apart(tiny_cohort) -> None:
    import nibabel as nib

    volumes = {folder.name: nib.load(next(folder.glob("*_flair.nii.gz"))).get_fdata()[None]
               for folder in sorted((tiny_cohort / "brats").iterdir()) if folder.is_dir()}
    first = next(iter(volumes.values()))
    rng = np.random.default_rng(0)
    volumes["copy"] = 1.1 * first + rng.normal(0, 0.02 * first.std(), first.shape)
    similarity = similarities(fingerprints(volumes))
    assert coarse(first).shape == (512,)
    assert similarity[0, -1] > 0.99 > DUPLICATE_CORRELATION
    patients = similarity[:-1, :-1][np.triu_indices(len(volumes) - 1, k=1)]
    assert patients.max() < DUPLICATE_CORRELATION - 0.2


# ---------------------------------------------------------------------------- runs
def test_a_clean_patient_level_run_passes(train_cfg, capsys) -> None:
    cfg = train_cfg("debug=fdr", *SLICES)
    train(cfg)
    status, verdicts = _audit(capsys, cfg.paths.output_dir, "--permutations", "0")
    assert status == 0, verdicts
    for check in ("id-overlap", "slice-overlap", "near-duplicates"):
        assert verdicts[check].startswith(f"PASS {check}:"), verdicts[check]
    assert verdicts["label-permutation"] == "SKIP label-permutation: --permutations 0"


def test_a_slice_level_run_fails_the_slice_check_from_the_command_line(train_cfg, caplog
                                                                        ) -> None:
    cfg = train_cfg("debug=fdr", *SLICES, "data.split_unit=slice")
    train(cfg)
    assert "SLICE-LEVEL SPLIT" in caplog.text  # the loud warning at training time
    result = _command(cfg.paths.output_dir, "--permutations", "0", cwd=ROOT)
    assert result.returncode == EXIT_LEAK, result.stderr[-2000:]
    assert "FAIL slice-overlap: " in result.stdout
    assert "slices in two parts" in result.stdout and "Traceback" not in result.stderr


def test_a_cv_multirun_is_audited_fold_by_fold(train_cfg, tmp_path, capsys) -> None:
    """Each job of the multirun is a fold; a fold whose splits.json validates patients that
    another fold validated too (runs of one CV with other splits) fails."""
    sweep = tmp_path / "multirun"
    for fold in (0, 1):
        cfg = train_cfg("debug=fdr", f"data.fold={fold}")
        with open_dict(cfg):
            cfg.paths.output_dir = str(sweep / str(fold))
        train(cfg)
    status, verdicts = _audit(capsys, str(sweep), "--permutations", "0")
    assert status == 0, verdicts
    assert verdicts["id-overlap"].startswith("PASS id-overlap: no patient in two parts (2 folds")
    record = sweep / "1" / "splits.json"
    splits = json.loads(record.read_text())
    first = splits["folds"][0]
    splits["folds"] = [{"train": first["val"], "val": first["train"]}, first]
    record.write_text(json.dumps(splits))
    status, verdicts = _audit(capsys, str(sweep), "--permutations", "0")
    assert status == EXIT_LEAK
    assert "validated in more than one fold" in verdicts["id-overlap"]


def test_label_permutation_passes_a_tiny_clean_run(train_cfg, capsys) -> None:
    cfg = train_cfg("debug=fdr", *SLICES)
    train(cfg)
    status, verdicts = _audit(capsys, cfg.paths.output_dir, "--permutations", "2")
    assert verdicts["label-permutation"].startswith("PASS label-permutation: validation AUC")
    assert "mean of 2" in verdicts["label-permutation"]
    assert status == 0


LEARNABLE_SLICES = [*SLICES, "data.spatial_size=[16,16,48]", "data.slices_per_case=16",
                    "data.selection=central", "data.batch_size=16", "data.augment=null",
                    "model.net.dropout=0", "model.optimizer.lr=3e-3", "trainer.max_epochs=12",
                    "test=false"]
"""Thin neighbouring slices and a net that can memorise them: a slice-level leak is learnt."""


@pytest.mark.parametrize("unit", ["slice", "patient"])
def test_label_permutation_fails_a_slice_level_run_and_passes_its_patient_level_twin(
        unit: str, train_cfg, capsys) -> None:
    """Retrained on permuted labels, the slice-level run still ranks its validation patients
    perfectly (it recognises them from their other slices); the same run split by patient
    falls to chance (5 s each on an idle 2-core CPU)."""
    cfg = train_cfg(*LEARNABLE_SLICES, f"data.split_unit={unit}")
    train(cfg)
    status, verdicts = _audit(capsys, cfg.paths.output_dir, "--permutations", "2")
    expected = "FAIL" if unit == "slice" else "PASS"
    assert verdicts["label-permutation"].startswith(f"{expected} label-permutation"), verdicts
    assert status == (EXIT_LEAK if unit == "slice" else 0)


def test_label_permutation_fails_a_run_whose_retrained_models_beat_chance(train_cfg, capsys,
                                                                         monkeypatch) -> None:
    """The verdict of retrainings that still rank validation patients perfectly (what a model
    that recognises them does): FAIL and exit 4 whatever the retrained run (retraining
    replaced; the test above retrains a real slice-level run)."""
    from radiogenomics.audit.permutation import PermutedRetraining, PermutedScore

    cfg = train_cfg("debug=fdr", *SLICES)
    train(cfg)
    seen = []

    def perfect(self: PermutedRetraining, seed: int) -> PermutedScore:
        seen.append(seed)
        return PermutedScore(1.0, np.array([0, 1] * 4))

    monkeypatch.setattr(PermutedRetraining, "score", perfect)
    status, verdicts = _audit(capsys, cfg.paths.output_dir, "--permutations", "3")
    assert seen == [0, 1, 2]
    assert verdicts["label-permutation"].startswith("FAIL label-permutation: validation AUC "
                                                    "1.000")
    assert status == EXIT_LEAK


def test_an_unknown_split_unit_is_a_config_error(tmp_path) -> None:
    from radiogenomics.data.slices import SliceDataModule
    from radiogenomics.errors import ConfigError

    with pytest.raises(ConfigError, match="data.split_unit: must be one of"):
        SliceDataModule("synthetic", str(tmp_path), split_unit="slices",
                        cache_dir=str(tmp_path / "cache"))


# ---------------------------------------------------------------------------- the checks
def test_a_cv_that_validates_a_patient_twice_fails_and_a_proper_one_passes() -> None:
    proper = [Partition(f"job {k}", {"train": {"a", "b", "c", "d"} - val, "val": val}, k)
              for k, val in enumerate([{"a", "b"}, {"c", "d"}])]
    assert check_ids(proper).status == "PASS"
    twice = proper + [Partition("job 2", {"train": {"b", "c", "d"}, "val": {"a"}}, 2)]
    verdict = check_ids(twice)
    assert verdict.failed and "validated in more than one fold (a)" in verdict.message
    tested = [Partition("job 0", {"train": {"a"}, "val": {"b"}, "test": {"c"}}, 0),
              Partition("job 1", {"train": {"b", "c"}, "val": {"a"}, "test": set()}, 1)]
    assert "test patient(s) in another fold's train or val (c)" in check_ids(tested).message


def test_slices_of_one_patient_in_two_parts_fail() -> None:
    served = {"train": [("a", 1), ("a", 2), ("b", 1)], "val": [("c", 1), ("c", 2)]}
    clean = Partition("run", {"train": {"a", "b"}, "val": {"c"}}, items=served)
    assert check_slices([clean]).status == "PASS"
    mixed = Partition("run", {"train": {"a", "b"}, "val": {"c"}},
                      items={**served, "val": [("a", 3), ("c", 1)]})
    assert "1 of 3 patient(s) have slices in two parts (e.g. a: 2 train, 1 val" in check_slices(
        [mixed]).message
    volumes = Partition("run", {"train": {"a"}, "val": {"b"}})
    assert check_slices([volumes]).status == "SKIP"


def test_predicting_training_patients_is_flagged() -> None:
    run = [Partition("run", {"train": {"00001", "00002"}, "val": {"00003"}})]
    assert check_unseen(["00004", "00005"], run).status == "PASS"
    verdict = check_unseen(["00003", "00004"], run)
    assert verdict.failed and "1 predicted patient(s)" in verdict.message


def test_permuted_labels_are_balanced_within_each_part_and_true_class() -> None:
    labels = {f"{i:02d}": i % 2 for i in range(40)}
    homes = {pid: "train" if int(pid) < 30 else "val" for pid in labels}
    new = independent_labels(labels, homes, seed=1)
    assert new != independent_labels(labels, homes, seed=2)
    for part in ("train", "val"):
        for true in (0, 1):
            group = [new[p] for p in labels if homes[p] == part and labels[p] == true]
            assert abs(sum(group) - len(group) / 2) <= 0.5


def test_chance_p_value_tells_a_perfect_score_from_chance() -> None:
    labels = [np.array([0, 1] * 6)] * 2
    assert chance_p_value([1.0, 1.0], labels) < 0.001
    assert chance_p_value([0.5, 0.5], labels) > 0.3


# ---------------------------------------------------------------------------- the command
def test_a_bad_argument_is_one_message_and_exit_2(tmp_path) -> None:
    result = _command(str(tmp_path / "no-such-run"), "--permutations", "0", cwd=tmp_path)
    assert result.returncode == EXIT_USER_ERROR
    assert "no such folder" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_bad_options_are_refused_before_any_work(capsys, tmp_path) -> None:
    for args in (["--permutations", "-1", str(tmp_path)], [], ["data.root=/x"]):
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == EXIT_USER_ERROR
    assert "--data data.root=/x" in capsys.readouterr().err


# ---------------------------------------------------------------------------- cv and predict
def _fold_run(sweep: Path, fold: int, folds: list[dict[str, list[str]]]) -> None:
    run = sweep / str(fold)
    (run / "csv").mkdir(parents=True)
    (run / "splits.json").write_text(json.dumps({"n_folds": len(folds), "folds": folds,
                                                 "test": []}))
    (run / "run_info.json").write_text(json.dumps({"fold": fold}))
    (run / "config.yaml").write_text(f"data:\n  fold: {fold}\n  n_folds: {len(folds)}\n")
    (run / "csv" / "metrics.csv").write_text(f"epoch,step,test/auc\n0,1,0.{6 + fold}\n")


def test_the_cv_summary_reports_the_id_check_of_its_folds(tmp_path) -> None:
    from radiogenomics.cv import format_summary, summarize_cv

    ids = [f"{i:05d}" for i in range(6)]
    proper = [{"train": ids[3:], "val": ids[:3]}, {"train": ids[:3], "val": ids[3:]}]
    for fold in (0, 1):
        _fold_run(tmp_path / "proper", fold, proper)
    text = format_summary(summarize_cv(tmp_path / "proper", n_bootstrap=10))
    assert "PASS id-overlap: no patient in two parts (2 folds: 3 train, 3 val)" in text
    leaky = [{"train": ids[3:], "val": ids[:3]}, {"train": ids[1:3], "val": ids[:1] + ids[3:]}]
    for fold in (0, 1):
        _fold_run(tmp_path / "leaky", fold, leaky)
    text = format_summary(summarize_cv(tmp_path / "leaky", n_bootstrap=10))
    assert "FAIL id-overlap: 1 patient(s) validated in more than one fold (00000)" in text


def test_predict_reports_patients_the_run_trained_on(train_cfg, tiny_cohort, tmp_path) -> None:
    from tests.test_predict import _predict

    cfg = train_cfg("callbacks=model_checkpoint", "+trainer.limit_train_batches=1",
                    "test=false", "model.net.widen_factor=0.25")
    train(cfg)
    run = cfg.paths.output_dir
    _predict(tmp_path / "train", f"ckpt_path={run}", f"data.root={tiny_cohort}",
             "data.split=train")
    report = (tmp_path / "train" / "report.md").read_text()
    assert "FAIL unseen-patients: 8 predicted patient(s)" in report
    _predict(tmp_path / "test", f"ckpt_path={run}", f"data.root={tiny_cohort}",
             "data.split=test")
    assert "PASS unseen-patients" in (tmp_path / "test" / "report.md").read_text()
