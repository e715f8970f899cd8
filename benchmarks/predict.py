"""Seconds per patient for cnn3d, from DICOM files to probability, and peak memory.

    python benchmarks/predict.py [--cohort DIR] [--patients 4] [--size 96] [--threads N]
                                 [--backends eager,torchscript,onnx] [--json PATH]

Without --cohort, writes a synthetic DICOM cohort (four series per patient) to a temporary
folder. The model is cnn3d as conf/ defines it (ResNet-10, 48^3 voxels at 2 mm) on all four
sequences, saved as a run directory (config.yaml + checkpoint) and loaded the way
predict.py loads it; its weights are random, which does not change the cost. Times each
patient after one warm-up patient: reading and preprocessing the series, then the network.
CPU s (process time, all threads) is little changed by other jobs on the machine, unlike
the wall times; idle threads that spin count in it.

Backends: the same run exported (`radiogenomics.inference.export`) to TorchScript and ONNX
(ONNX Runtime, as many threads as torch) predicts the same preprocessed patients in the same
process, each patient through every backend in turn, so that all three meet the same
machine; the table gives the network's seconds per patient, the whole patient's (reading
and preprocessing included) and the largest probability difference from eager PyTorch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from radiogenomics import config as rc
from radiogenomics.data.case import SEQUENCES
from radiogenomics.data.cohorts import prediction_cohort
from radiogenomics.data.synthetic import generate_cohort
from radiogenomics.inference.runner import CohortPredictor
from radiogenomics.inference.trained_models import load_models

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_run(folder: Path, sequences: list[str]) -> Path:
    """A cnn3d run directory as train.py writes it, with untrained weights."""
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="train", overrides=[
            "model=cnn3d", f"data.sequences=[{','.join(sequences)}]",
            f"paths.root_dir={folder}", f"paths.output_dir={folder}", "logger=none",
        ])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    module = rc.instantiate(cfg.model)
    (folder / "checkpoints").mkdir(exist_ok=True)
    torch.save({"state_dict": module.state_dict()}, folder / "checkpoints" / "last.ckpt")
    return folder


def n_slices(case: dict) -> list[int]:
    return [len([f for f in Path(p).iterdir() if f.is_file()]) for p in case["images"].values()]


def run(cohort_root: Path, work: Path, backends: tuple[str, ...] = ()) -> dict[str, object]:
    run_dir = make_run(work / "run", list(SEQUENCES))
    models = load_models(run_dir, which="last")
    cohort = prediction_cohort(cohort_root, SEQUENCES, split="train")
    predictor = CohortPredictor(models, work / "out")
    model = models[0]
    baseline = peak_memory_mb()
    predictor.predict_case(cohort.cases[0])  # warm-up: imports, allocator, page cache
    rows = []
    for case in cohort.cases[1:]:
        start, cpu_start = time.perf_counter(), time.process_time()
        prepared = predictor.preprocessor(case)
        read = time.perf_counter()
        probability = float(model.probabilities(prepared.image[None])[0, 0])
        done = time.perf_counter()
        rows.append({"id": case["id"], "slices": n_slices(case), "read_preprocess_s": read - start,
                     "network_s": done - read, "total_s": done - start,
                     "cpu_s": time.process_time() - cpu_start, "probability": probability})
    start = time.perf_counter()
    predictor.predict(cohort)
    end_to_end = (time.perf_counter() - start) / len(cohort.cases)
    result = {"patients": rows, "end_to_end_s_per_patient": end_to_end,
              "memory_after_load_mb": baseline, "peak_memory_mb": peak_memory_mb(),
              "torch_threads": torch.get_num_threads(), "cpu_cores": os.cpu_count()}
    if backends:
        result["backends"] = compare_backends(run_dir, cohort.cases[1:], predictor, backends,
                                              work)
    return result


BACKENDS = ("eager", "torchscript", "onnx")
"""eager: the checkpoint in PyTorch; the others: the run exported in that format."""
REPEATS = 3
"""Forward passes per patient and backend."""


def compare_backends(run_dir: Path, cases: list[dict], predictor: CohortPredictor,
                     backends: tuple[str, ...], work: Path) -> dict[str, dict[str, float]]:
    """Network and whole-patient seconds per patient of each backend on the same patients."""
    from radiogenomics.inference.export import export_run

    models = {name: load_models(run_dir, which="last")[0] if name == "eager" else
              load_models(export_run(run_dir, name, work / f"export-{name}", "last").parent)[0]
              for name in backends}
    images, reading = [], []
    for case in cases:
        start = time.perf_counter()
        images.append(predictor.preprocessor(case).image[None])
        reading.append(time.perf_counter() - start)
    for model in models.values():  # warm-up: first-call allocation, graph optimisation
        model.probabilities(images[0])
    seconds: dict[str, list[float]] = {name: [] for name in models}
    outputs: dict[str, list[float]] = {name: [] for name in models}
    for image in images:
        for _ in range(REPEATS):  # interleaved, so that a busy moment hits every backend
            for name, model in models.items():
                start = time.perf_counter()
                outputs[name].append(float(model.probabilities(image)[0, 0]))
                seconds[name].append(time.perf_counter() - start)
    reference = outputs[backends[0]]
    return {name: {"network_s": statistics.median(seconds[name]),
                   "total_s": statistics.median(reading) + statistics.median(seconds[name]),
                   "max_abs_difference": max(abs(a - b) for a, b in zip(outputs[name],
                                                                         reference))}
            for name in models}


def backend_table(backends: dict[str, dict[str, float]]) -> str:
    reference = next(iter(backends))
    lines = [f"{'backend':<13}{'network s':>11}{'total s':>9}{'speed-up':>10}"
             f"{'max |p - p_' + reference + '|':>22}", "-" * 65]
    for name, row in backends.items():
        speedup = backends[reference]["network_s"] / row["network_s"]
        lines.append(f"{name:<13}{row['network_s']:>11.3f}{row['total_s']:>9.2f}"
                     f"{speedup:>9.2f}x{row['max_abs_difference']:>22.1e}")
    lines.append("-" * 65)
    lines.append(f"medians over patients x {REPEATS} passes, measured in this run; network: "
                 "the forward pass alone; total: plus the median reading and preprocessing")
    return "\n".join(lines)


def table(result: dict) -> str:
    rows = result["patients"]
    lines = [f"{'patient':<9}{'slices per series':<22}{'read+prep s':>12}{'network s':>11}"
             f"{'total s':>9}{'CPU s':>8}", "-" * 71]
    for row in rows:
        lines.append(f"{row['id']:<9}{str(row['slices']):<22}{row['read_preprocess_s']:>12.2f}"
                     f"{row['network_s']:>11.2f}{row['total_s']:>9.2f}{row['cpu_s']:>8.2f}")
    totals = [row["total_s"] for row in rows]
    lines += [
        "-" * 71,
        f"median {statistics.median(totals):.2f} s per patient (max {max(totals):.2f}), "
        f"{statistics.median(row['cpu_s'] for row in rows):.2f} CPU s (all threads); "
        f"whole cohort through CohortPredictor: {result['end_to_end_s_per_patient']:.2f} s "
        "per patient",
        f"peak memory {result['peak_memory_mb']:.0f} MB (after loading the model: "
        f"{result['memory_after_load_mb']:.0f} MB); torch threads {result['torch_threads']}, "
        f"CPU cores {result['cpu_cores']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cohort", type=Path, help="a synthetic cohort folder of your own")
    parser.add_argument("--patients", type=int, default=4, help="patients to generate")
    parser.add_argument("--size", type=int, default=96, help="grid size of the generated cohort")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="backends compared on the same patients (none: skip), "
                             f"from {','.join(BACKENDS)}; the first is the reference")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    backends = tuple(b for b in args.backends.split(",") if b and b != "none")
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        parser.error(f"--backends: {sorted(unknown)} not in {BACKENDS}")
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        cohort = args.cohort or generate_cohort(work / "cohort", patients=args.patients,
                                                test_patients=0, format="dicom", size=args.size)
        result = run(cohort, work, backends)
    print(f"cohort: {args.cohort or f'synthetic, size {args.size}'}; cnn3d on {list(SEQUENCES)}")
    print(table(result))
    if backends:
        print(f"\nbackends (the same {len(result['patients'])} patients, this process):")
        print(backend_table(result["backends"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
