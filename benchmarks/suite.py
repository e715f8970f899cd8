"""The benchmark suite behind ``python -m benchmarks``: sections, one table, one JSON record.

Each section measures our code and its baselines in the same run on the same data, and
returns its raw results (kept in the JSON file) and the rows it adds to the table. The
sections share one workspace, so the synthetic DICOM cohort is written once.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

READING_TARGET_X_MONAI = 4.0
PREPARE_TARGET_SPEEDUP = 1.7
DATA_WAIT_TARGET = 0.05
PREDICT_TARGET_S = 2.0


@dataclass(frozen=True)
class Sizes:
    """How much each section measures (the defaults: the figures the README carries)."""

    read_slices: int = 150
    """slices of the DICOM series the readers race on"""
    read_size: int = 256
    """its matrix (read_size x read_size pixels)"""
    read_repeats: int = 5
    """reads of that series per reader; the fastest counts"""
    prepare_repeats: int = 3
    """interleaved timings of each preparation mode; the fastest of each counts"""
    cohort_patients: int = 24
    """patients of the DICOM cohort (4 series each) that prepare, loading and predict use"""
    cohort_size: int = 96
    """grid of the synthetic cohort (96: DICOM series of ~40-50 slices of 112x112)"""
    load_seconds: float = 2.0
    """least time each loader is drawn from before its rate is taken"""
    raw_cases: int = 4
    """cases the no-cache loader reads (it is slow: a few give its rate)"""
    wait_patients: int = 40
    """patients of the training run whose data wait is measured"""
    wait_epochs: int = 3
    """epochs of that run"""
    model_steps: int = 3
    """training steps per model in the model-zoo section"""
    model_overrides: tuple[str, ...] = ()
    """overrides of every model-zoo run"""
    generate_workers: int | None = None
    """processes that generate the cohort (None: one per core)"""


FULL = Sizes()
QUICK = Sizes(read_slices=40, read_size=128, read_repeats=2, prepare_repeats=1,
              cohort_patients=6, cohort_size=32, load_seconds=0.3, raw_cases=2,
              wait_patients=6, wait_epochs=2, model_steps=1,
              model_overrides=("data.batch_size=2",), generate_workers=1)
"""Small data, few repeats, batch 2 for the models: checks the suite, not the figures."""

WAIT_COHORT_SIZE = 32
"""The data-wait run trains on the cache, whose volumes do not depend on the DICOM matrix."""


@dataclass
class Row:
    """One line of the table: our figure, its baselines from the same run, the target."""

    section: str
    measure: str
    ours: str
    baselines: str = "-"
    target: str = "-"
    passed: bool | None = None


class Workspace:
    """Folder shared by the sections: synthetic cohorts (written once) and caches."""

    def __init__(self, root: Path, sizes: Sizes) -> None:
        self.root = root
        self.sizes = sizes
        self.prepared_cache: Path | None = None
        self._cohorts: dict[tuple[int, int], Path] = {}

    def cohort(self, patients: int | None = None, size: int | None = None) -> Path:
        """A synthetic RSNA-layout DICOM cohort (four series per patient, no test part)."""
        from radiogenomics.data.synthetic import generate_cohort

        key = (patients or self.sizes.cohort_patients, size or self.sizes.cohort_size)
        if key not in self._cohorts:
            self._cohorts[key] = generate_cohort(
                self.root / f"cohort-{key[0]}p-{key[1]}", patients=key[0], test_patients=0,
                format="dicom", size=key[1], workers=self.sizes.generate_workers)
        return self._cohorts[key]

    def cases(self) -> list[dict]:
        from radiogenomics.data.cohorts import load_cohort

        return load_cohort("synthetic", self.cohort(), split="train").cases


Section = Callable[[Workspace], tuple[dict[str, Any], list[Row]]]


def reading(ws: Workspace) -> tuple[dict[str, Any], list[Row]]:
    """DICOM series reading: ours vs naive pydicom vs MONAI (vs SimpleITK when installed)."""
    from benchmarks import dicom_read

    sizes = ws.sizes
    folder = dicom_read.make_series(ws.root / "series", sizes.read_slices, sizes.read_size)
    readers = dicom_read.run(folder, sizes.read_repeats)
    speed = {r["reader"]: r["slices_per_s"] for r in readers}
    ours, naive, monai = speed["ours"], speed["naive pydicom"], speed["MONAI PydicomReader"]

    def versus(name: str, value: float) -> str:
        reader = next(r for r in readers if r["reader"] == name)
        if not reader["slices_per_s"]:  # cannot run here: the reason
            reason = reader["geometry_matches"]
            return f"{name} not installed" if "not installed" in reason else f"{name}: {reason}"
        return f"{name} {reader['slices_per_s']:.0f} ({value / reader['slices_per_s']:.1f}x)"

    mismatched = [r["reader"] for r in readers if r["geometry_matches"] == "NO"]
    data = f"{sizes.read_slices} slices {sizes.read_size}x{sizes.read_size} int16"
    rows = [
        Row("reading", f"DICOM series reading, {data}", f"{ours:.0f} slices/s",
            "; ".join(versus(n, ours) for n in ("naive pydicom", "MONAI PydicomReader",
                                                "SimpleITK")),
            f">= {READING_TARGET_X_MONAI:.0f}x MONAI, >= 1x naive",
            bool(ours >= READING_TARGET_X_MONAI * monai and ours >= naive)),
        Row("reading", "DICOM series reading, 4 threads",
            f"{speed['ours (4 threads)']:.0f} slices/s",
            versus("MONAI PydicomReader", speed["ours (4 threads)"])),
    ]
    if mismatched:
        rows[0].ours += f" (geometry differs from {', '.join(mismatched)})"
    return {"series": data, "n_slices": sizes.read_slices, "readers": readers}, rows


def _series_description(case: dict) -> str:
    import pydicom

    counts = [len([f for f in Path(p).iterdir() if f.is_file()])
              for p in case["images"].values()]
    first = next(Path(next(iter(case["images"].values()))).iterdir())
    header = pydicom.dcmread(first, stop_before_pixels=True)
    return (f"{len(counts)} series of {min(counts)}-{max(counts)} slices "
            f"{header.Rows}x{header.Columns}")


def prepare(ws: Workspace) -> tuple[dict[str, Any], list[Row]]:
    """Cohort preparation (DICOM to cache) with 1 and with all workers; projected RSNA time."""
    from benchmarks import prepare as bench

    cases = ws.cases()
    result = bench.preparation(cases, ws.root / "prepare", repeats=ws.sizes.prepare_repeats)
    ws.prepared_cache = Path(result.pop("cache_dir"))
    workers, rates = result["workers"], result["prepare_patients_per_s"]
    many, one = rates[str(workers)], rates["1"]
    result["cohort"] = _series_description(cases[0])
    rows = [
        Row("prepare", f"cohort preparation, DICOM to cache, {len(cases)} patients x "
            f"{result['cohort']}", f"{many:.2f} patients/s, {workers} workers",
            f"best of {result['repeats']}: 1 worker (1 thread) {one:.2f} ({many / one:.2f}x); "
            f"in one process with "
            f"{result['torch_threads_in_process']} torch threads {rates['in_process']:.2f} "
            f"({many / rates['in_process']:.2f}x); this machine's ceiling on a perfectly "
            f"parallel CPU job {result['parallel_ceiling']:.2f}x",
            f">= {PREPARE_TARGET_SPEEDUP}x 1 worker",
            bool(many >= PREPARE_TARGET_SPEEDUP * one) if workers >= 2 else None),
        Row("prepare", "projected: RSNA 585 patients x 4 x 110 slices 512x512 (by pixels read)",
            f"{result['projected_rsna_minutes']:.0f} min, {workers} workers",
            f"1 worker {result['projected_rsna_minutes_1_worker']:.0f} min"),
    ]
    return result, rows


def loading(ws: Workspace) -> tuple[dict[str, Any], list[Row]]:
    """Volumes/s of prepared cases: our cache vs MONAI PersistentDataset vs raw DICOM files."""
    from benchmarks import prepare as bench

    cases = ws.cases()
    cache = ws.prepared_cache or ws.root / "loading-cache"
    result = bench.loading(cases, cache, ws.root / "loading", raw_cases=ws.sizes.raw_cases,
                           min_seconds=ws.sizes.load_seconds)
    ours = result["cache_volumes_per_s"]
    monai, raw = result["persistent_dataset_volumes_per_s"], result["raw_volumes_per_s"]
    shape = "x".join(map(str, result["volume_shape"]))
    rows = [Row("loading", f"loading a prepared case ({shape}) as training reads it",
                f"{ours:.1f} volumes/s from our cache",
                f"MONAI PersistentDataset {monai:.1f} ({ours / monai:.1f}x); "
                f"preprocessing from DICOM files {raw:.2f} ({ours / raw:.0f}x)")]
    return result, rows


def data_wait(ws: Workspace) -> tuple[dict[str, Any], list[Row]]:
    """Share of cnn3d's training-step time spent waiting for batches from the cache."""
    from benchmarks import train_step

    patients = ws.sizes.wait_patients
    cohort = ws.cohort(patients, WAIT_COHORT_SIZE)
    overrides = [] if patients >= 20 else ["data.n_folds=2"]  # folds of a tiny cohort
    result = train_step.data_wait_share(cohort, ws.root / "wait-cache",
                                        epochs=ws.sizes.wait_epochs, overrides=overrides)
    share = result["data_wait_share"]
    steps = max(result["steps"], 1)
    shape = "x".join(map(str, result["input"]))
    workers = result["num_workers"]
    rows = [Row("datawait", f"data wait, cnn3d from the cache (batch {result['batch_size']} x "
                f"{shape}, {workers} DataLoader worker{'' if workers == 1 else 's'}, "
                f"{steps} steps)",
                f"{100 * share:.1f}% of step time",
                f"waiting {result['wait_s'] / steps:.3f} s, computing "
                f"{result['compute_s'] / steps:.3f} s per step",
                f"< {100 * DATA_WAIT_TARGET:.0f}%", bool(share < DATA_WAIT_TARGET))]
    return result, rows


def models(ws: Workspace, names: Sequence[str] | None = None) -> tuple[dict[str, Any], list[Row]]:
    """Training samples/s and peak memory of each model at its default input."""
    from benchmarks import models as bench

    results = bench.run_isolated(bench.MODELS if names is None else names, ws.sizes.model_steps,
                                 ws.sizes.model_overrides)
    rows = []
    for r in results:
        if "error" in r:
            rows.append(Row("models", f"training step, {r['model']}", f"FAILED: {r['error']}"))
            continue
        if "peak_cuda_mb" in r:
            memory = f"peak {r['peak_cuda_mb']:.0f} MB CUDA"
        else:
            memory = f"peak {r['peak_rss_mb']:.0f} MB RSS (model {r['model_rss_mb']:.0f})"
        rows.append(Row("models", f"training step, {r['model']} "
                        f"({' x '.join(map(str, r['input']))}, {r['device']})",
                        f"{r['samples_per_s']:.1f} samples/s, {memory}"))
    return {"steps": ws.sizes.model_steps, "overrides": list(ws.sizes.model_overrides),
            "models": results}, rows


def predict(ws: Workspace) -> tuple[dict[str, Any], list[Row]]:
    """Seconds per patient for cnn3d, from DICOM files to probability."""
    from benchmarks import predict as bench

    result = bench.run(ws.cohort(), ws.root / "predict")
    patients = result["patients"]
    total = statistics.median(p["total_s"] for p in patients)
    cpu = statistics.median(p["cpu_s"] for p in patients)
    read = statistics.median(p["read_preprocess_s"] for p in patients)
    network = statistics.median(p["network_s"] for p in patients)
    result["median_s_per_patient"] = total
    rows = [Row("predict", f"prediction, cnn3d, from DICOM files ({len(patients)} patients x "
                f"{_series_description_from_slices(patients)})",
                f"{total:.2f} s/patient",
                f"read+preprocess {read:.2f} s, network {network:.2f} s; CPU {cpu:.2f} s; "
                f"whole cohort {result['end_to_end_s_per_patient']:.2f} s/patient",
                f"<= {PREDICT_TARGET_S:.0f} s", bool(total <= PREDICT_TARGET_S))]
    return result, rows


def _series_description_from_slices(patients: list[dict]) -> str:
    counts = [n for p in patients for n in p["slices"]]
    return f"4 series of {min(counts)}-{max(counts)} slices"


SECTIONS: dict[str, Section] = {
    "reading": reading, "prepare": prepare, "loading": loading, "datawait": data_wait,
    "models": models, "predict": predict,
}


def _command(*args: str) -> str | None:
    try:
        out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=10,
                             env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _proc_field(path: str, field: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """What the figures depend on: cores, memory, library versions, device, commit, load."""
    import monai
    import numpy
    import pydicom
    import torch

    memory = _proc_field("/proc/meminfo", "MemTotal")
    commit = _command("git", "rev-parse", "HEAD")
    changes = _command("git", "status", "--porcelain", "--untracked-files=no")
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "memory_gb": round(int(memory.split()[0]) / 2**20, 1) if memory else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__, "monai": monai.__version__, "numpy": numpy.__version__,
        "pydicom": pydicom.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": (f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available()
                   else "cpu"),
        "git_commit": commit,
        "git_uncommitted_changes": bool(changes) if commit and changes is not None else None,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def run_suite(sections: Sequence[str], sizes: Sizes, workdir: Path | None = None,
              models_only: Sequence[str] | None = None,
              log: Callable[[str], None] = lambda line: print(line, file=sys.stderr,
                                                               flush=True)) -> dict[str, Any]:
    """Run `sections` in order; the record to print and to write as JSON. A section that
    fails is recorded with its error and the others still run."""
    record: dict[str, Any] = {
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(), "sizes": dataclasses.asdict(sizes), "sections": {},
        "rows": [], "errors": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="radiogenomics-bench-") as temp:
        ws = Workspace(workdir or Path(temp), sizes)
        ws.root.mkdir(parents=True, exist_ok=True)
        for name in sections:
            log(f"[{name}] running ...")
            section_start = time.perf_counter()
            try:
                if name == "models":
                    result, rows = models(ws, models_only)
                else:
                    result, rows = SECTIONS[name](ws)
            except Exception as error:  # report it and go on with the other sections
                record["errors"][name] = traceback.format_exc()
                rows = [Row(name, name, f"FAILED: {type(error).__name__}: {error}")]
                result = {}
            result["elapsed_s"] = time.perf_counter() - section_start
            record["sections"][name] = result
            record["rows"] += [dataclasses.asdict(row) for row in rows]
            log(f"[{name}] done in {result['elapsed_s']:.0f} s")
    record["elapsed_s"] = time.perf_counter() - start
    return record


def _pass(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def table(record: dict[str, Any]) -> str:
    """The rows as an aligned Markdown table, under a line saying where they were measured."""
    m = record["machine"]
    commit = (m["git_commit"] or "unknown")[:10]
    if m.get("git_uncommitted_changes"):
        commit += " + uncommitted changes"
    load = m.get("load_average_at_start")
    header = (f"{record['started']}, commit {commit}; {m['cpu_count']} CPU cores "
              f"({m['cpu_model']}), {m['device']}, torch {m['torch']}, MONAI {m['monai']}"
              + (f"; load average {load[0]:.1f} at start" if load else ""))
    titles = ["measure", "ours", "baselines, same run and data (ours / baseline)", "target",
              "pass"]
    cells = [[r["measure"], r["ours"], r["baselines"], r["target"], _pass(r["passed"])]
             for r in record["rows"]]
    widths = [max(len(row[i]) for row in [titles, *cells]) for i in range(len(titles))]

    def line(values: list[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"

    lines = [header, "", line(titles), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += [line(row) for row in cells]
    return "\n".join(lines)
