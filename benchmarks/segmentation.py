"""Tumour segmentation on this machine: train a segmenter with train.py on a synthetic cohort
and print the validation Dice per region, HD95 and the wall time.

    python benchmarks/segmentation.py [--model unet] [--patients 40] [--size 64]
        [--epochs 150] [--minutes 15] [--workdir DIR] [train.py overrides ...]

The cohort is generated once into ``--workdir`` (default: a folder in the system temp dir)
and reused, with its preprocessing cache. The recipe trains on 32-voxel patches (half
centred on tumour) of 48-voxel volumes at 2 mm, 4 a batch, and validates whole volumes by
sliding windows every 3 epochs; overrides given on the command line come after it.
Training stops after ``--epochs`` or ``--minutes`` (Lightning's ``max_time``), whichever
comes first; the validation scores of every epoch and of the best one are printed
(target: WT Dice >= 0.80 within 15 minutes on CPU).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REGION_SCORES = ["dice_wt", "dice_tc", "dice_et", "dice_ncr", "dice_ed", "dice", "iou", "hd95"]
RECIPE = ["data.spatial_size=[48,48,48]", "data.spacing=[2.0,2.0,2.0]",
          "model.patch_size=[32,32,32]", "data.batch_size=4", "trainer.check_val_every_n_epoch=3"]


def make_cohort(workdir: Path, patients: int, size: int) -> tuple[Path, float]:
    """The synthetic cohort of `patients` at `size` voxels (generated when absent), and the
    seconds its generation took (0 when reused)."""
    from radiogenomics.data.synthetic import generate_cohort

    root = workdir / f"cohort_{patients}p_{size}"
    if (root / "cohort.json").exists():
        return root, 0.0
    start = time.perf_counter()
    generate_cohort(root, patients=patients, seed=0, format="both", size=size)
    return root, time.perf_counter() - start


def max_time(minutes: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a number of minutes."""
    whole = int(round(minutes))
    return f"00:{whole // 60:02d}:{whole % 60:02d}:00"


def train(model: str, cohort: Path, workdir: Path, epochs: int, minutes: float,
          overrides: list[str]) -> tuple[Path, float]:
    """Run train.py; return its run directory and wall time in seconds."""
    run_dir = workdir / "runs" / f"{model}_{time.strftime('%Y%m%d_%H%M%S')}"
    command = [
        sys.executable, "train.py", f"model={model}", f"data.root={cohort}",
        f"data.cache_dir={cohort}/.cache", "data.synthetic=null", "trainer=cpu",
        f"trainer.max_epochs={epochs}", f"++trainer.max_time={max_time(minutes)}",
        "~callbacks.progress_bar", "logger=csv", "test=false", f"hydra.run.dir={run_dir}",
        f"paths.log_dir={workdir / 'logs'}", *RECIPE, *overrides,
    ]
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return run_dir, time.perf_counter() - start


def report(run_dir: Path) -> pd.DataFrame:
    """Validation scores of every epoch (from the run's metrics.csv)."""
    metrics = pd.read_csv(run_dir / "csv" / "metrics.csv")
    columns = [f"val/{name}" for name in REGION_SCORES]
    scores = metrics.dropna(subset=["val/dice"])[["epoch", *columns]].reset_index(drop=True)
    return scores.astype({"epoch": int})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "radiogenomics-bench-seg")
    parser.add_argument("overrides", nargs="*", help="train.py overrides")
    args = parser.parse_args()

    cohort, generation_s = make_cohort(args.workdir, args.patients, args.size)
    run_dir, train_s = train(args.model, cohort, args.workdir, args.epochs, args.minutes,
                             args.overrides)
    scores = report(run_dir)
    best = scores.loc[scores["val/dice"].idxmax()]
    reached = scores[scores["val/dice_wt"] >= 0.80]
    print(f"\n{args.model} on {args.patients} synthetic patients (grid {args.size}), "
          f"{len(scores)} epochs")
    print(scores.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nbest epoch {int(best['epoch'])}: " + ", ".join(
        f"{name} {best[f'val/{name}']:.3f}" for name in REGION_SCORES))
    print(f"WT Dice >= 0.80 first at epoch: "
          f"{int(reached['epoch'].iloc[0]) if len(reached) else 'not reached'}")
    print(f"wall time: train.py {train_s / 60:.1f} min (cache preparation included), "
          f"cohort generation {generation_s / 60:.1f} min; run directory {run_dir}")


if __name__ == "__main__":
    main()
