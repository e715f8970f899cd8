"""MGMT from the whole brain, from the tumour ROI (true or predicted) and jointly with the mask.

    python benchmarks/segment_then_classify.py [--work DIR] [--epochs 8] [--folds 5]

On the `realistic` synthetic preset (as hard as the real task: an ideal observer reaches an
AUC of about 0.6), read as its BraTS-layout NIfTI (template space, tumour masks), it runs
with the package's own commands, each a k-fold multirun (`python train.py -m data.fold=...`):

- cnn3d on the whole brain (the default crop),
- cnn3d on the ground-truth tumour ROI (`data.roi=tumour`),
- cnn3d on the tumour ROI predicted by a U-Net trained first (`data.roi_model=<unet run>`),
- the multi-task network (`model=multitask`: mask and MGMT from one encoder),

and prints, per configuration, the pooled out-of-fold AUC with its bootstrap 95% interval
(`cv_summary.csv`), the mean and SD over folds of the held-out test AUC, and the minutes.
The same commands run on the real cohorts by changing `data=`/`data.root`. The segmenter is
trained once on fold 0's training patients (their masks, no MGMT labels); its Dice is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ["data.synthetic.preset=realistic", "data.cohort_options.image_format=nifti"]
CONFIGS: dict[str, tuple[str, list[str]]] = {
    "cnn3d, whole brain": ("whole_brain", []),
    "cnn3d, ground-truth tumour ROI": ("true_roi", ["data.roi=tumour"]),
    "cnn3d, predicted tumour ROI": ("predicted_roi", ["data.roi=tumour", "data.roi_model={unet}"]),
    "multitask (mask + MGMT)": ("multitask", ["model=multitask"]),
}
"""Table row -> (sweep folder, overrides)."""


def train(work: Path, overrides: list[str]) -> float:
    """Run ``python train.py`` in `work` with `overrides`; its minutes."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], cwd=work, check=True,
                   stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) / 60


def summary(sweep: Path) -> dict[str, float]:
    """Pooled out-of-fold AUC (with interval) and test AUC (mean, SD) of a CV multirun."""
    rows = {r["metric"]: r for r in csv.DictReader((sweep / "cv_summary.csv").open())}
    pooled, test = rows["oof/auc_pooled"], rows.get("test/auc", {})
    return {"oof_auc": float(pooled["mean"]), "oof_low": float(pooled["low"]),
            "oof_high": float(pooled["high"]), "patients": int(pooled["n"]),
            "test_auc_mean": float(test.get("mean", "nan")),
            "test_auc_sd": float(test.get("sd", "nan"))}


def last_values(run: Path) -> dict[str, float]:
    """The last logged value of every metric in a run's ``metrics.csv``."""
    values: dict[str, float] = {}
    for path in run.rglob("metrics.csv"):
        for row in csv.DictReader(path.open()):
            values.update({k: float(v) for k, v in row.items() if v not in ("", None)})
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--patients", type=int, default=150,
                        help="patients of the synthetic cohort (a fifth of them held out)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="segment-then-classify-"))
    work.mkdir(parents=True, exist_ok=True)
    common = [*DATA, f"data.synthetic.patients={args.patients}",
              f"data.synthetic.test_patients={args.patients // 5}",
              f"trainer.max_epochs={args.epochs}", "logger=csv"]
    folds = "data.fold=" + ",".join(str(k) for k in range(args.folds))
    unet = work / "logs" / "unet"
    minutes = {"segmenter": train(work, ["model=unet", *common, f"hydra.run.dir={unet}"])}
    results: dict[str, dict[str, float]] = {}
    for name, (folder, extra) in CONFIGS.items():
        sweep = work / "logs" / folder
        overrides = [o.format(unet=unet) for o in extra]
        minutes[name] = train(work, ["-m", folds, f"data.n_folds={args.folds}", *common,
                                     *overrides, f"hydra.sweep.dir={sweep}"])
        results[name] = {**summary(sweep), "minutes": minutes[name]}
        print(f"{name}: pooled OOF AUC {results[name]['oof_auc']:.3f} "
              f"[{results[name]['oof_low']:.3f}, {results[name]['oof_high']:.3f}]", flush=True)
    seg = last_values(unet)
    print(f"\nrealistic preset, NIfTI, {args.folds}-fold CV, {args.epochs} epochs; segmenter "
          f"{minutes['segmenter']:.1f} min, test Dice {seg.get('test/dice', float('nan')):.3f}")
    print("| input | pooled OOF AUC [95% CI] | test AUC (mean ± SD over folds) | minutes |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['oof_auc']:.3f} [{r['oof_low']:.3f}, {r['oof_high']:.3f}] | "
              f"{r['test_auc_mean']:.3f} ± {r['test_auc_sd']:.3f} | {r['minutes']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "segmenter": seg,
                                         "minutes": minutes}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
