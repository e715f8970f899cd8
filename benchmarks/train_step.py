"""Training speed of cnn3d: samples/s and peak memory per input size, and the data-wait share.

    python benchmarks/train_step.py [--steps 3] [--winner-batch 2] [--patients 40] [--epochs 3]
                                    [--json out.json]

Each network measurement runs in its own process so that its peak memory is its own
(peak RSS on CPU, peak allocated CUDA memory on GPU). The data-wait share trains cnn3d as
conf/ configures it (default data, batch and DataLoader workers) on a synthetic DICOM cohort
of --patients from the preprocessing cache, and splits each step into the time spent
waiting for the next batch and the time spent computing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def time_steps(step: Callable[[], None], steps: int, device: str) -> float:
    """Seconds taken by `steps` calls of `step` after one warm-up call (allocator, optimizer
    state, kernel selection); on CUDA the peak-memory counter is reset after the warm-up."""
    step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_step(channels: int, size: list[int], batch: int, steps: int, precision: str,
                 channels_last: bool, cudnn_benchmark: bool = False) -> dict[str, float]:
    """Forward + backward + Adam step of cnn3d on random data; returns samples/s and memory.
    `cudnn_benchmark`: let cuDNN time its convolution algorithms on the first step
    (``trainer.benchmark=true``) instead of choosing them by heuristics."""
    from radiogenomics.models.nets.resnet3d import ResNet3D

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = cudnn_benchmark
    net = ResNet3D(in_channels=channels, num_classes=1).to(device)
    x = torch.randn(batch, channels, *size, device=device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
        x = x.to(memory_format=torch.channels_last_3d)
    y = torch.rand(batch, 1, device=device)
    optimizer = torch.optim.Adam(net.parameters(), 1e-4)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")

    def step() -> None:
        with autocast:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    elapsed = time_steps(step, steps, device)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"samples_per_s": batch * steps / elapsed, "peak_mb": peak_mb, "device": device}


def run_isolated(**kwargs: object) -> dict[str, float]:
    code = (f"import json,sys; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.train_step "
            f"import measure_step; print(json.dumps(measure_step(**{kwargs!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def compose_train(overrides: Sequence[str]) -> Any:
    """conf/train.yaml composed with `overrides` (Hydra's compose API; no run directory)."""
    from hydra import compose, initialize_config_dir

    import radiogenomics.config  # noqa: F401 (registers the resolvers of conf/)

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="train", overrides=list(overrides))


def data_wait_share(cohort: Path, cache_dir: Path, epochs: int = 2,
                    overrides: Sequence[str] = (), precision: str = "32-true",
                    cudnn_benchmark: bool | None = None) -> dict[str, Any]:
    """Share of training-step time spent waiting for batches, training cnn3d as configured
    (conf/train.yaml with model=cnn3d: its default data, batch, augmentation and DataLoader
    workers) on the DICOM cohort at `cohort`, from the preprocessing cache at `cache_dir`
    (filled first, not timed). The first epoch (worker start-up, kernel selection) is not
    counted when there are more; on a GPU each step is synchronised before it is timed."""
    import lightning.pytorch as pl

    from radiogenomics import config as rc

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.wait = self.compute = 0.0
            self.steps = 0
            self._end: float | None = None
            self._start = 0.0

        def on_train_epoch_start(self, trainer: pl.Trainer, *args: object) -> None:
            self.counting = trainer.current_epoch >= min(1, epochs - 1)
            self._end = time.perf_counter()

        def on_train_batch_start(self, *args: object) -> None:
            self._start = time.perf_counter()
            if self._end is not None and self.counting:
                self.wait += self._start - self._end

        def on_train_batch_end(self, *args: object) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self._end = time.perf_counter()
            if self.counting:
                self.compute += self._end - self._start
                self.steps += 1

    cfg = compose_train(["model=cnn3d", f"data.root={cohort}", f"data.cache_dir={cache_dir}",
                         "data.synthetic=null", "data.test_split=val", *overrides])
    datamodule = rc.instantiate(cfg.data)
    datamodule.prepare_data()
    model = rc.instantiate(cfg.model)
    timer = StepTimer()
    trainer = pl.Trainer(max_epochs=epochs, accelerator="auto", devices=1, logger=False,
                         precision=precision, benchmark=cudnn_benchmark,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer],
                         num_sanity_val_steps=0, limit_val_batches=0,
                         default_root_dir=str(cache_dir.parent))
    trainer.fit(model, datamodule=datamodule)
    total = timer.wait + timer.compute
    return {"data_wait_share": timer.wait / total, "wait_s": timer.wait,
            "compute_s": timer.compute, "steps": timer.steps, "epochs": epochs,
            "batch_size": datamodule.batch_size, "num_workers": datamodule.num_workers,
            "augment_on": datamodule.augment_on, "precision": precision,
            "cudnn_benchmark": cudnn_benchmark, "timed_epochs": max(1, epochs - 1),
            "samples_per_s": timer.steps * datamodule.batch_size / total,
            "train_patients": len(datamodule.train_cases),
            "input": [len(datamodule.sequences), *datamodule.preprocess.spatial_size]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--winner-batch", type=int, default=None,
                        help="batch at the winner's input (default: 8 on GPU, 2 on CPU)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-data", action="store_true")
    parser.add_argument("--patients", type=int, default=40,
                        help="synthetic patients of the data-wait run")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the data-wait run")
    parser.add_argument("--winner-workers", type=int, default=8,
                        help="DataLoader workers of the rsna_winner data-wait run (GPU only)")
    args = parser.parse_args()

    gpu = torch.cuda.is_available()
    winner_batch = args.winner_batch or (8 if gpu else 2)
    configs = [("default input", 2, [32, 32, 32], 8, "32-true", False, False),
               ("winner input", 1, [256, 256, 64], winner_batch, "32-true", False, False)]
    if gpu:
        winner = ("winner input", 1, [256, 256, 64], winner_batch)
        configs += [(*winner, "bf16-mixed", False, False),
                    (*winner, "bf16-mixed", True, False),
                    (*winner, "32-true", False, True),
                    (*winner, "bf16-mixed", False, True),
                    (*winner, "bf16-mixed", True, True)]
    rows = []
    for name, channels, size, batch, precision, channels_last, bench in configs:
        result = run_isolated(channels=channels, size=size, batch=batch, steps=args.steps,
                              precision=precision, channels_last=channels_last,
                              cudnn_benchmark=bench)
        rows.append({"case": name, "input": f"{channels}x" + "x".join(map(str, size)),
                     "batch": batch, "precision": precision, "channels_last_3d": channels_last,
                     "cudnn_benchmark": bench, **result})
    print(f"{'case':<14} {'input':<14} {'batch':>5} {'precision':<11} {'cl3d':<5} "
          f"{'cudnn bm':<8} {'samples/s':>10} {'peak MB':>9} device")
    for r in rows:
        print(f"{r['case']:<14} {r['input']:<14} {r['batch']:>5} {r['precision']:<11} "
              f"{str(r['channels_last_3d']):<5} {str(r['cudnn_benchmark']):<8} "
              f"{r['samples_per_s']:>10.2f} {r['peak_mb']:>9.0f} {r['device']}")
    results: dict[str, object] = {"steps": rows}
    if not args.skip_data:
        from radiogenomics.data.synthetic import generate_cohort

        with tempfile.TemporaryDirectory() as tmp:
            cohort = generate_cohort(Path(tmp) / "cohort", patients=args.patients,
                                     test_patients=0, format="dicom", size=32)
            wait = data_wait_share(cohort, Path(tmp) / "cache", epochs=args.epochs)
            print(f"\ndata wait from the cache: {100 * wait['data_wait_share']:.1f}% of step "
                  f"time (num_workers={wait['num_workers']}; target < 5%)")
            results["data_wait"] = wait
            if gpu:  # the rsna_winner recipe as a GPU trains it: 8 workers, bf16, cl3d
                winner = data_wait_share(
                    cohort / "rsna", Path(tmp) / "cache", epochs=args.epochs,
                    overrides=["experiment=rsna_winner", "data.n_folds=2", "data.layout=rsna",
                               f"data.splits_dir={Path(tmp) / 'splits'}",
                               f"data.num_workers={args.winner_workers}",
                               "model.channels_last=true"],
                    precision="bf16-mixed", cudnn_benchmark=True)
                print(f"rsna_winner at 1x256x256x64, batch 8, bf16, channels_last_3d, "
                      f"cudnn benchmark, "
                      f"{winner['num_workers']} workers, augment_on={winner['augment_on']}: "
                      f"{winner['samples_per_s']:.1f} samples/s, data wait "
                      f"{100 * winner['data_wait_share']:.1f}% of step time")
                results["winner_data_wait"] = winner
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
