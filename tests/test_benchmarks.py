"""The benchmark suite: `python -m benchmarks` prints one table and writes its JSON record.

Tiny data only; nothing here depends on how fast this machine is (no figure is compared
with a target, only its presence and its sign).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from benchmarks.models import MODELS, input_shape, measure_model
from benchmarks.suite import Sizes, run_suite, table
from benchmarks.zoo import summarise

ROOT = Path(__file__).resolve().parents[1]

TINY = Sizes(read_slices=6, read_size=32, read_repeats=1, prepare_repeats=1, cohort_patients=2,
             cohort_size=32,
             load_seconds=0.0, raw_cases=1, model_steps=1, generate_workers=1)

RECORD_KEYS = {"started", "machine", "sizes", "sections", "rows", "errors", "elapsed_s"}
MACHINE_KEYS = {"cpu_count", "torch", "device", "git_commit", "load_average_at_start"}
ROW_KEYS = {"section", "measure", "ours", "baselines", "target", "passed"}


def test_command_prints_one_table_and_writes_the_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "reading", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    header = next(line for line in done.stdout.splitlines() if line.startswith("| measure"))
    assert "baselines, same run and data" in header and "target" in header
    assert "naive pydicom" in done.stdout and "MONAI PydicomReader" in done.stdout

    record = json.loads(out.read_text())
    assert RECORD_KEYS | {"quick"} <= set(record) and record["quick"] is True
    assert set(record["machine"]) >= MACHINE_KEYS
    assert list(record["sections"]) == ["reading"] and not record["errors"]
    readers = {r["reader"]: r for r in record["sections"]["reading"]["readers"]}
    assert {"ours", "naive pydicom", "MONAI PydicomReader", "SimpleITK"} <= set(readers)
    for name in ("ours", "naive pydicom", "MONAI PydicomReader"):
        assert readers[name]["slices_per_s"] > 0
    assert readers["MONAI PydicomReader"]["geometry_matches"] == "yes"
    first = record["rows"][0]
    assert set(first) == ROW_KEYS and first["section"] == "reading"
    assert "MONAI" in first["target"] and first["passed"] in (True, False)


def test_unknown_section_is_refused_with_the_choices() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "reading,speed"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "speed" in done.stderr and "prepare" in done.stderr


def test_preparation_and_loading_share_a_cohort_and_report_their_baselines(tmp_path: Path) -> None:
    record = run_suite(["prepare", "loading"], TINY, workdir=tmp_path,
                       log=lambda line: None)
    assert not record["errors"], record["errors"]
    assert set(record) >= RECORD_KEYS
    assert [p.name for p in tmp_path.glob("cohort-*")] == ["cohort-2p-32"]

    prepared = record["sections"]["prepare"]
    assert set(prepared["prepare_patients_per_s"]) == {"1", "in_process", str(prepared["workers"])}
    assert prepared["projected_rsna_minutes"] > 0 and prepared["patients"] == 2
    loaded = record["sections"]["loading"]
    for key in ("cache_volumes_per_s", "persistent_dataset_volumes_per_s", "raw_volumes_per_s"):
        assert loaded[key] > 0
    assert loaded["volume_shape"] == [4, 64, 64, 64]

    rows = record["rows"]
    assert [r["section"] for r in rows] == ["prepare", "prepare", "loading"]
    assert "1 worker" in rows[0]["baselines"] and rows[0]["target"].startswith(">= 1.7x")
    assert "PersistentDataset" in rows[2]["baselines"] and "DICOM files" in rows[2]["baselines"]

    text = table(record)
    assert len(text.splitlines()) == 4 + len(rows)  # machine line, blank, titles, rule, rows
    for row in rows:
        assert row["measure"] in text


def test_a_failing_section_is_recorded_and_the_others_still_run(tmp_path: Path,
                                                                 monkeypatch) -> None:
    from benchmarks import suite

    def broken(ws: suite.Workspace) -> None:
        raise RuntimeError("no such reader")

    monkeypatch.setitem(suite.SECTIONS, "reading", broken)
    record = run_suite(["reading", "models"], TINY, workdir=tmp_path, models_only=[],
                       log=lambda line: None)
    assert "no such reader" in record["errors"]["reading"]
    assert "FAILED" in record["rows"][0]["ours"] and "models" in record["sections"]


@pytest.mark.parametrize("model", MODELS)
def test_every_model_composes_to_its_default_input(model: str) -> None:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=[f"model={model}"])
    shape = input_shape(cfg.data)
    assert shape[0] == cfg.data.batch_size and len(shape) in (4, 5)
    assert shape[1] == (1 if model == "series_resnet" else len(cfg.data.sequences))


def test_a_training_step_is_measured_at_the_configured_input() -> None:
    result = measure_model("cnn3d", steps=1, overrides=["data.batch_size=1"], device="cpu")
    assert result["input"] == [1, 2, 32, 32, 32]
    assert result["samples_per_s"] > 0 and result["peak_rss_mb"] > 0
    assert result["parameters"] > 1_000_000


def test_zoo_summary_is_the_best_validation_epoch_and_the_test_of_its_checkpoint():
    rows = [{"epoch": 0, "val/acc": 0.5, "val/series_acc_plane": 0.6},
            {"epoch": 0, "train/loss": 1.0},
            {"epoch": 1, "val/acc": 0.9, "val/series_acc_plane": 1.0},
            {"epoch": 2, "val/acc": 0.8, "val/series_acc_plane": 0.7},
            {"epoch": 3, "test/acc": 0.85, "test/series_acc_plane": 0.95}]
    summary = summarise(rows, "val/acc")
    assert summary == {"epochs": 3, "best_val": 0.9, "best_epoch": 1, "test": 0.85,
                       "val/series_acc_plane": 1.0, "test/series_acc_plane": 0.95}


def test_the_scale_table_compares_each_step_with_its_floor_and_projects_the_cohort(
        capsys) -> None:
    """benchmarks/scale.py: x floor is the step's time over read + decode with as many
    processes; the projection scales the measured MB/s to the RSNA training cohort."""
    from benchmarks.scale import RSNA_BYTES, report

    runs = []
    for workers, factor in ((1, 1.0), (2, 0.6)):
        for name, seconds in (("read bytes (floor)", 1.0), ("pydicom decode (floor)", 3.0),
                              ("convert to NIfTI", 6.0), ("cache preparation", 10.0)):
            runs.append({"name": name, "workers": workers, "seconds": seconds * factor,
                         "peak_mb": 500.0, "cache_bytes": 4_000_000})
    results = {"patients": 2, "files": 1000, "bytes": 400e6, "cpus": 2, "runs": runs}
    report(results)
    out = capsys.readouterr().out
    prepare = next(r for r in runs if r["name"] == "cache preparation" and r["workers"] == 1)
    assert prepare["x_floor"] == pytest.approx(10.0 / 4.0)
    assert "2.50" in out and "cache size: 2.0 MB/patient" in out
    projection = results["projection_min"]["cache preparation"]
    assert projection["1"] == pytest.approx(RSNA_BYTES / 40e6 / 60)
    # two workers ran 1/0.6 times faster: efficiency 0.83, the 16-core figure uses it
    assert projection["16"] == pytest.approx(RSNA_BYTES / (40e6 * 16 * (1 / 0.6) / 2) / 60)


def test_the_loader_feeds_the_gpu_rate_that_train_step_measured(tmp_path: Path) -> None:
    from benchmarks.loader import feed_rate

    rows = [{"case": "winner input", "device": "cuda", "precision": "32-true",
             "channels_last_3d": False, "samples_per_s": 26.0},
            {"case": "winner input", "device": "cuda", "precision": "bf16-mixed",
             "channels_last_3d": True, "samples_per_s": 27.5}]
    measured = tmp_path / "train_step.json"
    measured.write_text(json.dumps({"steps": rows}))
    assert feed_rate(measured, 64.0) == (27.5, "train_step bf16-mixed channels_last_3d")
    measured.write_text(json.dumps({"steps": [{**rows[0], "device": "cpu"}]}))
    assert feed_rate(measured, 64.0) == (64.0, "target")
    assert feed_rate(None, 64.0) == (64.0, "target")


@pytest.mark.slow
def test_the_loader_benchmark_prints_both_augmentation_places(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "benchmarks/loader.py", "--patients", "4",
                          "--size", "32", "--batches", "2", "--workers", "1", "--repeats", "1",
                          "--json", str(tmp_path / "l.json")], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "l.json").read_text())
    assert result["input"] == [1, 256, 256, 64]
    assert set(result["samples_per_s"]) == {"workers", "device"}
    assert "augment on device" in out.stdout


@pytest.mark.slow
def test_the_scale_benchmark_runs_on_full_size_patients(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "benchmarks/scale.py", "--patients", "1",
                          "--workers", "1", "--workdir", str(tmp_path),
                          "--json", str(tmp_path / "s.json")], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "s.json").read_text())
    assert result["files"] > 100 and all(r["peak_mb"] > 50 for r in result["runs"])
    assert "projected for the RSNA training cohort" in out.stdout
