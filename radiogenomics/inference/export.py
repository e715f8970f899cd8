"""Export a trained run, or a fold ensemble, for fast inference: ``radiogenomics export RUN
--format onnx|torchscript --out DIR``.

DIR receives the network (``model.onnx`` or ``model.ts``), ``manifest.json`` (task, sequences,
preprocessing, what the outputs mean, the source run and its commit, library versions), the
run's ``config.yaml``, ``run_info.json`` and ``splits.json`` (predict.py rebuilds the module
around the network from them, and audits leakage as for the run), and a MONAI bundle in
``bundle/`` (`radiogenomics.inference.bundle`). ``predict.py ckpt_path=DIR`` predicts with it
(`radiogenomics.inference.exported`).

A multirun folder (the folds of a CV) is exported as ONE network that gives the fold
ensemble's mean probability (`radiogenomics.inference.fold_ensemble`); the manifest's
``ensemble`` names the members, whose run files go to ``members/<job>/`` (the leakage audit
reads them all), and the multirun's ``calibration.json`` is copied, so predict.py with DIR
predicts as with the multirun.

ONNX goes through ``torch.onnx.export(dynamo=True)`` (torch.export, then onnxscript): the
supported exporter of current torch, exact on our 3D convolutions and instance norms, with
the batch dimension symbolic so sliding windows and slice batches of any size run. The
legacy TorchScript-based exporter, deprecated, is used only when it fails. TorchScript is
``torch.jit.trace`` (MONAI's nets do not all script). Each file is checked against the
trained net on a random batch; the manifest is written only after.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

import radiogenomics
from radiogenomics.data.case import CLASS_NAMES
from radiogenomics.data.labels import INTERNAL_CLASSES, REGIONS
from radiogenomics.errors import CheckpointError, RadiogenomicsError
from radiogenomics.evaluation.calibration import CALIBRATION_FILE
from radiogenomics.extras import require
from radiogenomics.inference.bundle import write_bundle
from radiogenomics.inference.exported import MANIFEST, MODEL_FILES, ExportedNet, is_export_folder
from radiogenomics.inference.fold_ensemble import (
    MEMBER_FILES,
    MEMBERS_FOLDER,
    FoldEnsemble,
    check_exportable,
    ensemble_section,
)
from radiogenomics.inference.trained_models import TrainedModel, check_ensemble, load_model
from radiogenomics.interpret.slice_batch import to_slices
from radiogenomics.runs import (
    RUN_CONFIG,
    RUN_INFO,
    choose_checkpoint,
    find_runs,
    git_commit,
    saved_info,
)

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
"""Largest difference of logits, exported vs trained, that an export accepts, relative to
1 + |logit| (float32 rounding grows with the logit)."""
_RUN_FILES = (RUN_CONFIG, RUN_INFO, "splits.json")
_WRITTEN = (MANIFEST, *MODEL_FILES.values(), *_RUN_FILES, CALIBRATION_FILE, MEMBERS_FOLDER,
            "bundle")
"""What an export writes into --out: removed first by --overwrite, so nothing stale stays."""
_VERSIONED = ("torch", "monai", "numpy", "onnx", "onnxruntime", "onnxscript")
_EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")


def example_input(model: TrainedModel, batch: int = 2) -> torch.Tensor:
    """A random batch shaped as the net receives it: whole volumes, patches or slices.

    Two items, as torch.export specialises a batch of one to a constant size.
    """
    generator = torch.Generator().manual_seed(0)
    channels = len(model.preprocess.sequences)
    patch = model.module.hparams.get("patch_size") if model.is_segmenter else None
    shape = tuple(patch or model.preprocess.spatial_size)
    volumes = torch.randn(batch, channels, *shape, generator=generator)
    if model.slicing is None:
        return volumes
    return to_slices(volumes[0], model.slicing.axis)[:batch].contiguous()


@contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the exporters' progress lines and warnings (ours say what matters)."""
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _export_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> str:
    """Write `net` as ONNX with a symbolic batch; the exporter that did it."""
    names = {"input_names": ["image"], "output_names": ["logits"], "opset_version": 18}
    try:
        with _quiet_exporters():
            torch.onnx.export(net, (example,), str(path), dynamo=True, external_data=False,
                              dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                              **names)
        return "torch.onnx.export(dynamo=True)"
    except Exception as err:  # an op torch.export cannot trace: the legacy exporter may
        log.warning("the dynamo ONNX exporter failed (%s: %s): using the legacy exporter",
                    type(err).__name__, str(err).split("\n", 1)[0][:200])
    with _quiet_exporters():
        torch.onnx.export(net, (example,), str(path), dynamo=False,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, **names)
    return "torch.onnx.export(dynamo=False)"


def _export_torchscript(net: nn.Module, example: torch.Tensor, path: Path) -> str:
    with _quiet_exporters(), torch.no_grad():
        torch.jit.save(torch.jit.trace(net, example), str(path))
    return "torch.jit.trace"


def _check(net: nn.Module, example: torch.Tensor, path: Path) -> float:
    """Largest logit difference of the exported file against `net`, on a batch of three
    (another size than the export's); CheckpointError above `TOLERANCE`."""
    batch = torch.cat([example, example[:1].flip(-1)])
    with torch.no_grad():
        expected = net(batch)
        difference = (ExportedNet(path)(batch) - expected).abs()
    scaled = float((difference / (1 + expected.abs())).max())
    if not scaled <= TOLERANCE:
        raise CheckpointError(f"{path} differs from the trained net by {scaled:.3g} (relative "
                              f"to 1 + |logit|; tolerance {TOLERANCE}) -> export with the "
                              "other --format")
    return float(difference.max())


def output_meaning(model: TrainedModel) -> dict[str, Any]:
    """What the network's logits are, and how predict.py turns them into its outputs."""
    hparams = model.module.hparams
    if model.is_segmenter:
        regions = hparams.output == "regions"
        return {"kind": "segmentation", "activation": "sigmoid" if regions else "softmax",
                "channels": list(REGIONS if regions else INTERNAL_CLASSES),
                "threshold": float(hparams.threshold) if regions else None,
                "meaning": "one sigmoid channel per nested BraTS region; labels: ET, else "
                           "NCR inside TC, else ED inside WT" if regions else
                           "softmax over the internal labels; the mask is their argmax",
                "sliding_window": hparams.patch_size and {
                    "roi_size": list(hparams.patch_size), "overlap": float(hparams.overlap),
                    "sw_batch_size": int(hparams.sw_batch_size), "mode": "gaussian"}}
    classes = list(CLASS_NAMES.get(model.target, []))
    binary = int(hparams.get("num_classes", 2)) == 2
    meaning = {"kind": "classification", "activation": "sigmoid" if binary else "softmax",
               "class_names": classes,
               "meaning": (f"one logit: sigmoid = P({model.target} = "
                           f"{classes[1] if classes else 1})" if binary
                           else f"one logit per class of {model.target}, softmax")}
    if hasattr(model.module, "heads"):  # multitask: the net called on images gives class logits
        meaning["segmentation"] = (
            "not exported: the network is the multitask net's classification path (encoder and "
            "class head), what predict.py uses for a multitask run's class predictions; its "
            "segmentation decoder, which gives the run's masks, needs the training run")
    return meaning


def manifest(model: TrainedModel, format: str, exporter: str, example: torch.Tensor,
             difference: float) -> dict[str, Any]:
    """The manifest.json of an export: enough to preprocess, run and read the network."""
    preprocess = model.preprocess
    info = saved_info(model.run_dir)
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "format": format, "model_file": MODEL_FILES[format], "exporter": exporter,
        "task": {"target": model.target, "model": type(model.module).__name__,
                 "net": type(model.net).__name__},
        "input": {"name": "image", "shape": ["batch", *example.shape[1:]], "dtype": "float32",
                  "channels": list(preprocess.sequences),
                  "slices": model.slicing and {"plane": model.slicing.plane,
                                               "count": model.slicing.count,
                                               "selection": model.slicing.selection,
                                               "aggregate": model.slicing.aggregate}},
        "preprocessing": {
            "sequences": list(preprocess.sequences), "reference": preprocess.sequences[0],
            "orientation": "RAS", "spacing_mm": preprocess.spacing and list(preprocess.spacing),
            "crop_foreground": {"margin": 2} if preprocess.crop_foreground else None,
            "slab": preprocess.slab, "spatial_size": list(preprocess.spatial_size),
            "normalisation": "z-score per channel over the non-zero voxels (background 0)",
            "steps": "load each sequence, orient RAS, resample the reference to spacing_mm and "
                     "the others onto its grid, crop to the reference's foreground, keep the "
                     "central slab (if any), resize to spatial_size, normalise, stack channels",
            "cache_dtype": preprocess.dtype},
        "output": {"name": "logits", **output_meaning(model)},
        "source": {"run": str(model.run_dir.resolve()),
                   "checkpoint": str(model.checkpoint.resolve()),
                   "git_commit": info.get("git_commit"),
                   "radiogenomics_version": info.get("radiogenomics_version"),
                   "versions": info.get("versions", {})},
        "exported": {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "radiogenomics_version": radiogenomics.__version__,
                     "git_commit": git_commit(Path(__file__).resolve().parent),
                     "versions": versions, "max_abs_difference": difference},
    }


def is_multirun(ckpt_path: str | Path) -> bool:
    """Whether `ckpt_path` is a multirun folder (job folders holding runs), not one run."""
    path = Path(ckpt_path).expanduser()
    return path.is_dir() and not (path / RUN_CONFIG).is_file()


def _models_of(ckpt_path: str | Path, checkpoint: str) -> list[TrainedModel]:
    """The model of a run, or the members of a multirun's fold ensemble, as predict.py loads
    them; refused where one network cannot predict as they do."""
    if is_export_folder(ckpt_path):
        raise CheckpointError(f"{ckpt_path} is an export already -> export its source run "
                              "(manifest.json: source.run)")
    models = [load_model(run_dir, chosen or choose_checkpoint(run_dir, checkpoint))
              for run_dir, chosen in find_runs(ckpt_path)]
    if is_multirun(ckpt_path):
        check_ensemble(models)
        check_exportable(models, ckpt_path)
    return models


def _network(models: list[TrainedModel], ckpt_path: str | Path) -> nn.Module:
    """The net to export: the run's, or the fold ensemble's mean as one network."""
    if not is_multirun(ckpt_path):
        return models[0].net.eval()
    activation = output_meaning(models[0])["activation"]
    return FoldEnsemble([model.net for model in models], activation).eval()


def _copy_run_files(models: list[TrainedModel], ckpt_path: str | Path, out: Path) -> Path | None:
    """The (first) run's files beside the manifest; each member's in members/<job>/ and the
    multirun's calibration.json for an ensemble. The calibration copied, if any."""
    for name in _RUN_FILES:
        if (models[0].run_dir / name).is_file():
            shutil.copyfile(models[0].run_dir / name, out / name)
    if not is_multirun(ckpt_path):
        return None
    for model in models:
        folder = out / MEMBERS_FOLDER / model.run_dir.name
        folder.mkdir(parents=True, exist_ok=True)
        for name in MEMBER_FILES:
            if (model.run_dir / name).is_file():
                shutil.copyfile(model.run_dir / name, folder / name)
    calibration = Path(ckpt_path).expanduser() / CALIBRATION_FILE
    if not calibration.is_file():
        return None
    shutil.copyfile(calibration, out / CALIBRATION_FILE)
    return out / CALIBRATION_FILE


def _clear(out: Path) -> None:
    """Remove what an earlier export wrote into `out` (--overwrite)."""
    for name in _WRITTEN:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _ensemble_manifest(content: dict[str, Any], models: list[TrainedModel],
                       ckpt_path: str | Path, calibration: Path | None) -> dict[str, Any]:
    """The manifest of a fold ensemble: its source is the multirun, its members listed."""
    first = content["source"]
    content["source"] = {"run": str(Path(ckpt_path).expanduser().resolve()),
                         "checkpoints": [str(m.checkpoint.resolve()) for m in models],
                         **{key: first[key] for key in ("git_commit", "radiogenomics_version",
                                                        "versions")}}
    content["output"]["meaning"] += (f", of the mean probability of a fold ensemble of "
                                     f"{len(models)} members")
    content["ensemble"] = ensemble_section(models, ckpt_path, calibration)
    return content


def export_run(ckpt_path: str | Path, format: str, out: str | Path, checkpoint: str = "best",
               overwrite: bool = False) -> Path:
    """Export the model of a run (or checkpoint), or a multirun's fold ensemble as one
    network, into `out`; the manifest's path."""
    if format not in MODEL_FILES:
        raise RadiogenomicsError(f"--format {format!r}: one of {', '.join(MODEL_FILES)}")
    if format == "onnx":  # the exporter, and ONNX Runtime to check what it wrote
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module)
    out = Path(out).expanduser()
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RadiogenomicsError(f"--out {out} is not empty -> choose a new folder, or pass "
                                 "--overwrite")
    models = _models_of(ckpt_path, checkpoint)
    model, net = models[0], _network(models, ckpt_path)
    example = example_input(model)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    path = out / MODEL_FILES[format]
    writer = _export_onnx if format == "onnx" else _export_torchscript
    exporter = writer(net, example, path)
    difference = _check(net, example, path)
    calibration = _copy_run_files(models, ckpt_path, out)
    content = manifest(model, format, exporter, example, difference)
    if is_multirun(ckpt_path):
        content = _ensemble_manifest(content, models, ckpt_path, calibration)
    (out / MANIFEST).write_text(json.dumps(content, indent=1))
    script = path if format == "torchscript" else None
    if script is None:
        script = out / "bundle" / "models" / MODEL_FILES["torchscript"]
        script.parent.mkdir(parents=True, exist_ok=True)
        _export_torchscript(net, example, script)
        _check(net, example, script)
    write_bundle(out / "bundle", script, content)
    log.info("exported %s (%s, max |difference| %.2g) to %s",
             ", ".join(str(m.checkpoint) for m in models), exporter, difference, out)
    return out / MANIFEST


def main(argv: list[str] | None = None) -> int:
    """``radiogenomics export RUN --format onnx|torchscript --out DIR``."""
    parser = argparse.ArgumentParser(
        prog="radiogenomics export",
        description="Export a trained run's network, or a multirun's fold ensemble as one "
                    "network (ONNX or TorchScript), with its preprocessing manifest and a "
                    "MONAI bundle; predict.py ckpt_path=DIR predicts with it.")
    parser.add_argument("run", help="a run directory, a .ckpt file or a multirun folder (its "
                                    "fold ensemble, as one network), as predict.py's ckpt_path")
    parser.add_argument("--format", required=True, choices=sorted(MODEL_FILES))
    parser.add_argument("--out", required=True, help="the folder to write (new or empty)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"),
                        help="the run's checkpoint to export (default: best)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        written = export_run(args.run, args.format, args.out, args.checkpoint, args.overwrite)
    except RadiogenomicsError as err:
        parser.exit(2, f"error: {err}\n")
    print(f"exported to {written.parent} ({written.name}, "
          f"{MODEL_FILES[args.format]}, bundle/)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
