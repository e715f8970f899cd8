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
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.errors import CohortError

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
    assert [f.patient for f in report.failed] == [cases[2]["id"]]
    assert "FLAIR" in report.failed[0].reason

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
    assert [f.patient for f in report.failed] == [broken["id"]]
    assert broken["id"] in report.failed[0].reason
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
    assert broken["id"] in {f.patient for f in skipping.skipped}
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


def damage_truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def damage_delete(path: Path) -> None:
    path.unlink()


def damage_alter(path: Path) -> None:
    """Same size, one byte of the data changed (no size check can see it)."""
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [damage_truncate, damage_delete, damage_alter])
def test_a_damaged_entry_is_rebuilt_with_a_warning_never_used(
    tmp_path: Path, cases, damage, caplog: pytest.LogCaptureFixture
) -> None:
    case = cases[0]
    PreprocessCache(tmp_path, CONFIG).prepare([case], progress=False)
    good = np.array(PreprocessCache(tmp_path, CONFIG).load(case)["image"])
    cache = PreprocessCache(tmp_path, CONFIG)  # a new process: nothing verified yet
    damage(cache.entry(case) / "image.npy")
    with caplog.at_level("WARNING"):
        rebuilt = cache.load(case)["image"]
    np.testing.assert_array_equal(rebuilt, good)
    assert f"patient {case['id']}" in caplog.text and "rebuilding" in caplog.text
    # the entry on disk is whole again, for this process and the next
    assert PreprocessCache(tmp_path, CONFIG).problem(cache.entry(case)) is None
    np.testing.assert_array_equal(PreprocessCache(tmp_path, CONFIG).load(case)["image"], good)


def test_a_truncated_entry_is_rebuilt_by_the_next_preparation(tmp_path: Path, cases) -> None:
    cache = PreprocessCache(tmp_path, CONFIG)
    cache.prepare(cases[:1], progress=False)
    damage_truncate(cache.entry(cases[0]) / "image.npy")
    report = PreprocessCache(tmp_path, CONFIG).prepare(cases[:1], progress=False)
    assert report.prepared == [cases[0]["id"]] and not report.cached
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left aside


def test_an_entry_altered_after_it_was_verified_is_noticed(tmp_path: Path, cases) -> None:
    """Checksums are verified once per process, but a changed file (size or mtime) again."""
    cache = PreprocessCache(tmp_path, CONFIG)
    cache.prepare(cases[:1], progress=False)
    cache.load(cases[0])
    path = cache.entry(cases[0]) / "image.npy"
    damage_alter(path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.problem(cache.entry(cases[0])).startswith("image.npy was altered")


CONCURRENT = """
import sys, time
from pathlib import Path
import numpy as np
from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.transforms import PreprocessConfig

config = PreprocessConfig(sequences=("T1wCE", "FLAIR"), spacing=(6.0, 6.0, 6.0),
                          spatial_size=(16, 16, 16))
cases = load_cohort("synthetic", sys.argv[1], split="train").cases[:4]
root = Path(sys.argv[2])
expected = {c["id"]: PreprocessCache(root, config).compute(c)["image"] for c in cases}
while not (root.parent / "go").exists():  # start together
    time.sleep(0.01)
report = PreprocessCache(root, config).prepare(cases, progress=False)
assert not report.failed, report.failed
end = time.monotonic() + float(sys.argv[3])
rounds = 0
while time.monotonic() < end:
    for case in cases:
        cache = PreprocessCache(root, config)  # as a new process would: verifies every entry
        cache.write(case, {"image": expected[case["id"]]})
        other = cases[(cases.index(case) + 1) % len(cases)]
        np.testing.assert_array_equal(PreprocessCache(root, config).load(other)["image"],
                                      expected[other["id"]])
    rounds += 1
print("rounds", rounds)
"""


def test_two_processes_filling_one_cache_neither_fail_nor_read_half_entries(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    """A parallel sweep: two real processes prepare, rewrite and read the same entries."""
    import subprocess
    import sys

    root = tmp_path / "cache"
    script = tmp_path / "fill.py"
    script.write_text(CONCURRENT)
    procs = [subprocess.Popen([sys.executable, str(script), str(tiny_cohort), str(root), "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    import time

    time.sleep(0.5)
    (tmp_path / "go").touch()
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        assert "rounds" in out
    cache = PreprocessCache(root, CONFIG)
    entries = [p for p in root.iterdir()]
    assert len(entries) == 4 and not [p for p in entries if p.name.startswith(".")]
    assert all(cache.problem(p) is None for p in entries)
