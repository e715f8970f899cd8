"""The preprocessing cache: computed once, never stale, same result with any worker count."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.datamodule import MRIDataModule
from radiogenomics.data.errors import CohortError
from radiogenomics.data.transforms import PreprocessConfig

CONFIG = PreprocessConfig(sequences=("T1wCE", "FLAIR"), spacing=(6.0, 6.0, 6.0),
                          spatial_size=(16, 16, 16))


@pytest.fixture
def cases(tiny_cohort: Path) -> list[dict]:
    return load_cohort("synthetic", tiny_cohort, split="train").cases[:3]


def test_prepared_case_is_read_back_from_the_cache(tmp_path: Path, cases) -> None:
    cache = PreprocessCache(tmp_path, CONFIG)
    report = cache.prepare(cases, progress=False)
    assert sorted(report.prepared) == sorted(c["id"] for c in cases) and not report.failed
    again = cache.prepare(cases, progress=False)
    assert sorted(again.cached) == sorted(c["id"] for c in cases) and not again.prepared
    arrays = cache.load(cases[0])
    assert arrays["image"].shape == (2, 16, 16, 16)
    assert arrays["image"].dtype == np.float16
    assert np.isfinite(arrays["image"]).all() and arrays["image"].std() > 0.1


def test_training_draws_do_not_fingerprint_the_sources_again(
    tmp_path: Path, cases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An epoch re-reads each case many times: the source files are stat'ed only once."""
    from radiogenomics.data import cache as cache_module

    cache = PreprocessCache(tmp_path, CONFIG)
    cache.prepare(cases, progress=False)
    first = cache.load(cases[0])["image"]
    calls = []
    real = cache_module.fingerprint
    monkeypatch.setattr(cache_module, "fingerprint", lambda path: calls.append(path) or real(path))
    for _ in range(3):
        assert np.array_equal(cache.load(cases[0])["image"], first)
    assert calls == []
    cache.prepare(cases, progress=False)  # a new preparation looks the sources up again
    cache.load(cases[0])
    assert calls


def test_changed_transform_config_misses_the_cache(tmp_path: Path, cases) -> None:
    PreprocessCache(tmp_path, CONFIG).prepare(cases, progress=False)
    other = PreprocessConfig(sequences=("T1wCE", "FLAIR"), spacing=(6.0, 6.0, 6.0),
                             spatial_size=(20, 20, 20))
    cache = PreprocessCache(tmp_path, other)
    assert not any(cache.has(c) for c in cases)
    assert cache.get(cases[0])["image"].shape == (2, 20, 20, 20)


def test_changed_source_file_misses_the_cache(tmp_path: Path, tiny_cohort: Path) -> None:
    cohort = tmp_path / "cohort"
    shutil.copytree(tiny_cohort, cohort)
    case = load_cohort("synthetic", cohort, split="train").cases[0]
    cache = PreprocessCache(tmp_path / "cache", CONFIG)
    cache.prepare([case], progress=False)
    assert cache.has(case)
    first_file = next(Path(case["images"]["T1wCE"]).iterdir())
    stat = first_file.stat()
    os.utime(first_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not cache.has(case)


def test_worker_count_does_not_change_the_result(tmp_path: Path, cases) -> None:
    serial = PreprocessCache(tmp_path / "serial", CONFIG)
    serial.prepare(cases, workers=0, progress=False)
    parallel = PreprocessCache(tmp_path / "parallel", CONFIG)
    report = parallel.prepare(cases, workers=2, progress=False)
    assert not report.failed
    for case in cases:
        np.testing.assert_array_equal(serial.load(case)["image"], parallel.load(case)["image"])


def test_parallel_preparation_reports_every_case_and_starts_no_pool_when_all_are_cached(
    tmp_path: Path, cases, monkeypatch: pytest.MonkeyPatch
) -> None:
    from radiogenomics.data import cache as cache_module

    cache = PreprocessCache(tmp_path, CONFIG)
    cache.prepare(cases[:1], progress=False)
    missing_sequence = {**cases[2], "images": {"T1wCE": cases[2]["images"]["T1wCE"]}}
    report = cache.prepare([cases[0], cases[1], missing_sequence], workers=2, progress=False)
    assert report.cached == [cases[0]["id"]] and report.prepared == [cases[1]["id"]]
    assert list(report.failed) == [cases[2]["id"]] and "FLAIR" in report.failed[cases[2]["id"]]

    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started with every case cached")

    monkeypatch.setattr(cache_module, "ProcessPoolExecutor", no_pool)
    again = cache.prepare(cases[:2], workers=2, progress=False)
    assert sorted(again.cached) == sorted(c["id"] for c in cases[:2]) and not again.prepared


def test_a_broken_patient_is_reported_not_dropped(tmp_path: Path, tiny_cohort: Path) -> None:
    cohort = tmp_path / "cohort"
    # without the splits files other tests may have written beside the shared cohort
    shutil.copytree(tiny_cohort, cohort, ignore=shutil.ignore_patterns("splits_*.json"))
    cases = load_cohort("synthetic", cohort, split="train").cases
    broken = cases[1]
    for dicom in Path(broken["images"]["T1wCE"]).iterdir():
        dicom.write_bytes(dicom.read_bytes()[:200])
    report = PreprocessCache(tmp_path / "cache", CONFIG).prepare(cases, progress=False)
    assert list(report.failed) == [broken["id"]]
    assert broken["id"] in report.failed[broken["id"]]
    assert len(report.prepared) == len(cases) - 1

    def datamodule(on_error: str) -> MRIDataModule:
        return MRIDataModule(layout="synthetic", root=str(cohort), sequences=("T1wCE", "FLAIR"),
                             spatial_size=(16, 16, 16), spacing=(6.0, 6.0, 6.0), n_folds=2,
                             cache_dir=str(tmp_path / "cache"), test_split="test",
                             num_workers=0, prepare_workers=0, on_error=on_error)

    with pytest.raises(CohortError, match=broken["id"]):
        datamodule("raise").prepare_data()
    skipping = datamodule("skip")
    skipping.prepare_data()
    skipping.setup()
    assert broken["id"] in skipping.skipped
    used = {c["id"] for c in skipping.train_cases + skipping.val_cases}
    assert broken["id"] not in used


def test_datamodule_parts_never_share_a_patient(tmp_path: Path, tiny_cohort: Path) -> None:
    for fold in (0, 1):
        dm = MRIDataModule(layout="synthetic", root=str(tiny_cohort), sequences=("T1wCE",),
                           spatial_size=(16, 16, 16), spacing=(6.0, 6.0, 6.0), n_folds=2,
                           fold=fold, splits_file=str(tmp_path / "splits.json"),
                           cache_dir=str(tmp_path / "cache"), test_split="test",
                           num_workers=0, prepare_workers=0)
        dm.prepare_data()
        dm.setup()
        train = {c["id"] for c in dm.train_cases}
        val = {c["id"] for c in dm.val_cases}
        test = {c["id"] for c in dm.test_cases}
        assert train and val and test
        assert not (train & val) and not (train & test) and not (val & test)
        batch = next(iter(dm.train_dataloader()))
        assert set(batch["id"]) <= train
