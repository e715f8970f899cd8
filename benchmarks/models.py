"""Training speed and peak memory of every network at its default input.

    python benchmarks/models.py [--models cnn3d vgg16 ...] [--steps 3] [--set KEY=VALUE ...]
                                [--json PATH]

Each model is composed from conf/train.yaml with ``model=<name>`` (and its default data
config), so its input is what ``python train.py model=<name>`` feeds it: batch size,
channels and spatial size of the datamodule (2D models: slices; series_resnet: single-
channel slices; segmenters: volumes, or patches when ``model.patch_size`` is set). One
training step is forward + backward + the configured optimizer's step on random tensors
of that shape; the loss is the mean of the outputs, which costs no more than a real loss.

Each model runs in its own process, forked from a server process that has imported torch,
MONAI and Lightning once, so that its peak memory is its own: peak resident memory on CPU
(imports included, about 0.5 GB) and the part added by the model and its steps, or the
peak of allocated CUDA memory on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.train_step import time_steps  # noqa: E402

MODELS: tuple[str, ...] = ("cnn3d", "efficientnet3d", "multiscale", "vgg16", "attention_vgg",
                           "series_resnet", "unet", "segresnet", "unet2d", "multitask")
"""The networks of conf/model (the scikit-learn survival models have no training step)."""

PRELOAD = ["torch", "monai.networks.nets", "lightning.pytorch", "hydra", "radiogenomics.config",
           "benchmarks.models"]


def input_shape(data: Any) -> tuple[int, ...]:
    """(batch, channels, *spatial) of the training batches of a data config."""
    from hydra.utils import get_class

    from radiogenomics.data.series import SeriesDataModule
    from radiogenomics.data.slices import SliceDataModule

    kind = get_class(data._target_)
    if issubclass(kind, SeriesDataModule):
        return (data.batch_size, 1, *data.slice_size)
    size = list(data.spatial_size)
    if issubclass(kind, SliceDataModule):
        axes = {"axial": (0, 1), "coronal": (0, 2), "sagittal": (1, 2)}[data.plane]
        return (data.batch_size, len(data.sequences), *(size[a] for a in axes))
    if data.get("patch_size"):
        size = list(data.patch_size)
    return (data.batch_size, len(data.sequences), *size)


def _rss_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Start the peak-RSS count (VmHWM) afresh from the current RSS, where Linux allows it."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _outputs(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [t for v in value.values() for t in _outputs(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _outputs(v)]
    return [value]


def measure_model(model: str, steps: int = 3, overrides: Sequence[str] = (),
                  device: str | None = None) -> dict[str, Any]:
    """Samples/s and peak memory of training steps of `model` at its default input."""
    import torch
    from hydra import compose, initialize_config_dir

    from radiogenomics import config as rc

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="train", overrides=[f"model={model}", *overrides])
    shape = input_shape(cfg.data)
    _reset_peak()
    baseline_mb = _rss_mb("VmRSS")
    module = rc.instantiate(cfg.model).to(device).train()
    optimizer = rc.instantiate(cfg.model.optimizer)(params=module.parameters())
    x = torch.randn(*shape, device=device)
    # a multi-task model trains both of its heads (called on images it gives the class logits)
    forward = getattr(module, "heads", module)

    def step() -> None:
        loss = sum(out.float().mean() for out in _outputs(forward(x)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    elapsed = time_steps(step, steps, device)
    result = {"model": model, "input": list(shape), "steps": steps, "device": device,
              "parameters": sum(p.numel() for p in module.parameters()),
              "samples_per_s": shape[0] * steps / elapsed, "step_s": elapsed / steps,
              "peak_rss_mb": _rss_mb("VmHWM"), "model_rss_mb": _rss_mb("VmHWM") - baseline_mb}
    if device == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def run_isolated(models: Sequence[str], steps: int = 3,
                 overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """`measure_model` for each model in a fresh process of its own; a failure becomes a row
    with ``error``."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    rows = []
    for model in models:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            try:
                rows.append(pool.submit(measure_model, model, steps, list(overrides)).result())
            except Exception as error:  # one broken model must not hide the others
                rows.append({"model": model, "error": f"{type(error).__name__}: {error}"})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'model':<16}{'input (batch x C x spatial)':<30}{'samples/s':>10}{'step s':>8}"
             f"{'peak MB':>9}{'model MB':>9}", "-" * 82]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['model']:<16}failed: {row['error']}")
            continue
        peak = row.get("peak_cuda_mb", row["peak_rss_mb"])
        lines.append(f"{row['model']:<16}{' x '.join(map(str, row['input'])):<30}"
                     f"{row['samples_per_s']:>10.1f}{row['step_s']:>8.2f}{peak:>9.0f}"
                     f"{row['model_rss_mb']:>9.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="Hydra overrides for every model, e.g. data.batch_size=2")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    rows = run_isolated(args.models, args.steps, args.set)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
