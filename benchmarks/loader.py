"""The training loader at the winner's input (1x256x256x64, batch 8) from the cache.

    python benchmarks/loader.py [--patients 16] [--batches 12] [--workers 1,2,4,8]
                                [--feed SAMPLES_PER_S] [--json out.json]

Prepares the cache of a synthetic RSNA-layout DICOM cohort with the `rsna_winner` recipe's
data settings (T1wCE, 64-slice slab, 256x256x64) and its default augmentation, then:

- profiles one sample in this process, one torch thread as in a worker: the cache read
  (memory-mapped float16 to a tensor), each MONAI transform of the augmentation, collation
  of a batch;
- measures samples/s of the training DataLoader as the datamodule builds it, with 1, 2, 4
  and 8 workers (capped at the cores), for both places augmentation can run:
  `data.augment_on=workers` (MONAI, per sample, in the workers) and `device` (the workers
  only read; the batch is augmented after transfer, timed here on the GPU when there is one);
- says how many workers keep a GPU fed that trains `--feed` samples/s (default: the
  winner-input bf16 figure of benchmarks/train_step.py when its --json is given, else 64).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler, default_collate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WINNER = ["experiment=rsna_winner", "hydra.mode=RUN", "data.num_workers=0",
          "data.prepare_workers=null", "data.test_split=val", "data.synthetic=null",
          "data.n_folds=2"]


def _ms(run: Callable[[], object], repeats: int) -> float:
    run()
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return 1000 * (time.perf_counter() - start) / repeats


def winner_datamodule(cohort: Path, cache_dir: Path, augment_on: str) -> Any:
    """The rsna_winner recipe's datamodule on `cohort` (cache prepared, fold 0 set up)."""
    from benchmarks.train_step import compose_train
    from radiogenomics import config as rc

    cfg = compose_train([*WINNER, f"data.root={cohort / 'rsna'}",
                         f"data.cache_dir={cache_dir}", f"data.splits_dir={cache_dir / 'splits'}",
                         f"data.augment_on={augment_on}"])
    datamodule = rc.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.train_cases = datamodule.train_cases + datamodule.val_cases  # every patient
    return datamodule


def profile_sample(datamodule: Any, repeats: int) -> dict[str, float]:
    """Milliseconds per sample of each stage, one torch thread (as in a DataLoader worker)."""
    from monai.transforms import Randomizable

    from radiogenomics.data.augment import augmentation

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset = datamodule._dataset(datamodule.train_cases, train=True)
        plain = datamodule._dataset(datamodule.train_cases, train=False)
        n = len(plain)
        counter = iter(range(10**9))
        result = {"cache read": _ms(lambda: plain[next(counter) % n], repeats)}
        image = plain[0]["image"]
        for step in augmentation(datamodule.augment).transforms:
            if isinstance(step, Randomizable):
                step.set_random_state(0)
            prob = getattr(step, "prob", 1.0)
            forced = step
            if hasattr(step, "prob"):
                step.prob = 1.0  # the cost when it fires; weighted by its odds below
            cost = _ms(lambda forced=forced: forced({"image": image}), repeats)
            result[f"{type(step).__name__} (p={prob:g})"] = cost * prob
            if hasattr(step, "prob"):
                step.prob = prob
        result["whole sample, workers path"] = _ms(lambda: dataset[next(counter) % n],
                                                   repeats * 3)
        batch = [plain[i % n] for i in range(datamodule.batch_size)]
        result["collate batch, per sample"] = _ms(lambda: default_collate(batch),
                                                  repeats) / len(batch)
    finally:
        torch.set_num_threads(threads)
    return result


def loader_rate(datamodule: Any, workers: int, batches: int) -> float:
    """Steady-state samples/s of the training loader with `workers` processes.

    The batches the workers prefetch while they start (2 each) are drawn before the clock
    starts, and at least 4 batches per worker are timed: with fewer, batches made during
    the start-up would count as if made in the timed window.
    """
    dataset = datamodule._dataset(datamodule.train_cases, train=True)
    batch = datamodule.batch_size
    warm = 2 * max(workers, 1)
    timed = max(batches, 4 * workers)
    sampler = RandomSampler(dataset, replacement=True, num_samples=batch * (warm + timed))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers,
                        pin_memory=datamodule.pin_memory, drop_last=True,
                        persistent_workers=False, prefetch_factor=2 if workers else None)
    iterator = iter(loader)
    for _ in range(warm):
        next(iterator)
    start = time.perf_counter()
    count = sum(len(b["id"]) for b in iterator)
    return count / (time.perf_counter() - start)


def device_augment_ms(datamodule: Any, repeats: int = 20) -> dict[str, Any]:
    """Milliseconds to widen and augment one training batch after transfer, on the GPU when
    there is one (else this CPU, all threads)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"

    class Trainer:
        training = True

    datamodule.trainer = Trainer()
    size = datamodule.preprocess.spatial_size
    batch = {"image": torch.randn(datamodule.batch_size, datamodule.num_channels, *size,
                                  device=device).half()}

    def run() -> None:
        datamodule.on_after_batch_transfer(dict(batch), 0)
        if device == "cuda":
            torch.cuda.synchronize()

    return {"ms_per_batch": _ms(run, repeats), "device": device}


def feed_rate(train_step_json: Path | None, default: float) -> tuple[float, str]:
    """Samples/s the GPU consumes: train_step.py's fastest winner-input row, if given."""
    if train_step_json is None or not train_step_json.is_file():
        return default, "target"
    rows = json.loads(train_step_json.read_text())["steps"]
    winner = [r for r in rows if r["case"] == "winner input" and r["device"] == "cuda"]
    if not winner:
        return default, "target"
    best = max(winner, key=lambda r: r["samples_per_s"])
    return best["samples_per_s"], (f"train_step {best['precision']}"
                                   f"{' channels_last_3d' if best['channels_last_3d'] else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=16)
    parser.add_argument("--size", type=int, default=96, help="synthetic series matrix")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per loader")
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--feed", type=float, default=64.0,
                        help="samples/s the GPU trains (target: 64)")
    parser.add_argument("--train-step-json", type=Path, default=None,
                        help="benchmarks/train_step.py --json output: feed its GPU rate")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from radiogenomics.data.synthetic import generate_cohort

    cpus = os.cpu_count() or 1
    workers = [w for w in (int(x) for x in args.workers.split(",")) if w <= cpus]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        start = time.perf_counter()
        cohort = generate_cohort(Path(tmp) / "cohort", patients=args.patients,
                                 test_patients=0, format="dicom", size=args.size)
        results: dict[str, Any] = {"cpus": cpus, "patients": args.patients,
                                   "generate_s": time.perf_counter() - start}
        start = time.perf_counter()
        cache = Path(tmp) / "cache"
        on_workers = winner_datamodule(cohort, cache, "workers")
        on_device = winner_datamodule(cohort, cache, "device")
        results["prepare_s"] = time.perf_counter() - start
        results["input"] = [on_workers.num_channels, *on_workers.preprocess.spatial_size]
        results["batch"] = on_workers.batch_size
        results["profile_ms"] = profile_sample(on_workers, args.repeats)
        results["device_augment"] = device_augment_ms(on_device)
        rates: dict[str, dict[int, float]] = {"workers": {}, "device": {}}
        for count in workers:
            rates["workers"][count] = loader_rate(on_workers, count, args.batches)
            rates["device"][count] = loader_rate(on_device, count, args.batches)
        results["samples_per_s"] = rates

    feed, source = feed_rate(args.train_step_json, args.feed)
    results["feed"] = {"samples_per_s": feed, "source": source}
    print(f"input {'x'.join(map(str, results['input']))}, batch {results['batch']}, "
          f"{args.patients} cached patients, {cpus} cores")
    print("\none sample, one torch thread (ms):")
    for name, ms in results["profile_ms"].items():
        print(f"  {name:<42} {ms:8.1f}")
    aug = results["device_augment"]
    print(f"  {'batch augmentation after transfer (' + aug['device'] + ')':<42} "
          f"{aug['ms_per_batch']:8.1f} per batch of {results['batch']}")
    print(f"\n{'workers':>7} {'augment in workers':>19} {'augment on device':>18}  samples/s")
    for count in workers:
        print(f"{count:>7} {rates['workers'][count]:>19.1f} {rates['device'][count]:>18.1f}")
    print(f"\nworkers to feed {feed:.0f} samples/s ({source}):")
    for place in ("workers", "device"):
        per_worker = rates[place][workers[0]] / workers[0]
        needed = math.ceil(feed / per_worker)
        at8 = rates[place].get(8)
        print(f"  augment on {place:<8} {per_worker:6.1f} samples/s per worker -> {needed} "
              f"workers" + (f"; 8 workers measured {at8:.1f} samples/s "
                            f"({'meets' if at8 >= 64 else 'misses'} >= 64)" if at8 else ""))
    results["workers_needed"] = {
        place: math.ceil(feed / (rates[place][workers[0]] / workers[0]))
        for place in ("workers", "device")}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
