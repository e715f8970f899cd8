"""Validation metric of every model of the zoo after a few CPU minutes on the synthetic cohort.

    python benchmarks/zoo.py [--epochs N] [--minutes 10] [--models vgg16 series_resnet]
                             [--json out.json] [--set KEY=VALUE ...]  (overrides for every model)

Each model trains in its own ``python train.py model=<name>`` process on CPU for a fixed
number of epochs (``EPOCHS``: a few CPU minutes each on a 2-core machine, so the figures do
not depend on the machine's load; ``--minutes`` only caps a run with ``trainer.max_time``)
on the default synthetic cohort (generated into ``<paths.data_dir>/synthetic`` on first
use, then shared) at its config's input size; the best checkpoint is then tested.
The table gives, per model, the best validation value of its monitored metric (patient-level
AUC for the classifiers, mean of sequence and plane accuracy per slice for series_resnet,
whose accuracies per series are in the details), the test value of the best checkpoint and
the number of epochs validated.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODELS: tuple[str, ...] = ("cnn3d", "efficientnet3d", "multiscale", "vgg16", "attention_vgg",
                           "series_resnet", "multitask")

DETAILS = ("val/slice_auc", "val/acc_sequence", "val/acc_plane", "val/series_acc_sequence",
           "val/series_acc_plane", "val/dice")
"""Further validation metrics reported, at the best epoch, by the models that log them, and
their test values."""

EPOCHS: dict[str, int] = {"cnn3d": 8, "efficientnet3d": 8, "multiscale": 6, "vgg16": 6,
                          "attention_vgg": 6, "series_resnet": 10, "multitask": 8}
"""Training epochs per model: each is a few CPU minutes on a 2-core machine."""


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a CSVLogger metrics.csv, empty cells dropped."""
    with path.open() as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(handle)]


def summarise(rows: list[dict[str, float]], monitor: str) -> dict[str, float]:
    """Best validation value of `monitor`, its epoch's details, the test value, epochs done."""
    validated = [row for row in rows if monitor in row]
    best = max(validated, key=lambda row: row[monitor])
    test = monitor.replace("val/", "test/")
    summary = {"epochs": len({row["epoch"] for row in validated}),
               "best_val": best[monitor], "best_epoch": int(best["epoch"]),
               "test": next((row[test] for row in rows if test in row), float("nan"))}
    summary.update({key: best[key] for key in DETAILS if key in best})
    tested = next((row for row in rows if test in row), {})
    summary.update({key: tested[key] for key in (d.replace("val/", "test/") for d in DETAILS)
                    if key in tested})
    return summary


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_model(model: str, overrides: list[str], epochs: int, minutes: int,
              out: Path) -> dict[str, object]:
    """Train one model in its own process; its summary, or the tail of its error."""
    run_dir = out / model
    monitor = "val/acc" if model == "series_resnet" else "val/auc"
    command = [sys.executable, "train.py", f"model={model}", "trainer=cpu",
               f"+trainer.max_time='00:00:{minutes:02d}:00'", f"trainer.max_epochs={epochs}",
               "logger=csv", "~callbacks.progress_bar", f"hydra.run.dir={run_dir}",
               # the slice configs test on validation patients by default (real cohorts have no
               # labelled test part): here every model is tested on the held-out test patients
               "data.test_split=test", *overrides]
    start, cpu = time.perf_counter(), children_cpu_s()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu
    row: dict[str, object] = {"model": model, "monitor": monitor, "wall_s": wall,
                              "cpu_s": cpu, "overrides": " ".join(overrides)}
    if result.returncode != 0:
        row["error"] = (result.stdout + result.stderr)[-2000:]
        return row
    row.update(summarise(read_metrics(run_dir / "csv" / "metrics.csv"), monitor))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs for every model (default: EPOCHS per model)")
    parser.add_argument("--minutes", type=int, default=10, help="cap on training time per model")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides for every model, e.g. paths.data_dir=DIR")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="zoo-") as tmp:
        for model in args.models:
            epochs = args.epochs or EPOCHS[model]
            row = run_model(model, args.set, epochs, args.minutes, Path(tmp))
            rows.append(row)
            print(f"{model}: {'failed' if 'error' in row else 'done'} in {row['wall_s']:.0f} s",
                  file=sys.stderr, flush=True)
    print(f"\n{'model':<15} {'metric':<8} {'best val':>8} {'epoch':>5} {'test':>6} "
          f"{'epochs':>6} {'wall s':>7} {'CPU s':>7}  details")
    for row in rows:
        if "error" in row:
            print(f"{row['model']:<15} failed:\n{row['error']}")
            continue
        details = ", ".join(f"{key}={row[key]:.3f}" for key in
                            (*DETAILS, *(d.replace("val/", "test/") for d in DETAILS))
                            if key in row)
        print(f"{row['model']:<15} {row['monitor']:<8} {row['best_val']:>8.3f} "
              f"{row['best_epoch']:>5} {row['test']:>6.3f} {row['epochs']:>6} "
              f"{row['wall_s']:>7.0f} {row['cpu_s']:>7.0f}  {details}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
