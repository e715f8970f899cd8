"""A MONAI bundle of an exported network, for MONAI users: ``configs/metadata.json`` (MONAI's
bundle metadata schema), ``configs/inference.json``, ``models/model.ts`` and ``docs/README.md``.

``python -m monai.bundle run --config_file configs/inference.json --bundle_root .
--dataset_dir <BraTS-layout folder>`` (MONAI's command line needs ``fire``; from Python,
``monai.bundle.run(...)`` with the same arguments) reads each case folder's NIfTI files,
preprocesses them with MONAI's transforms (orient, resample, crop, resize, normalise: the
steps of our pipeline, computed MONAI's way, so probabilities differ slightly from ours) and
prints each case's probabilities (classifiers) or saves its probability maps on the
network's grid in ``eval/`` (segmenters). Our own ``predict.py ckpt_path=<export>`` runs the
exact pipeline instead, reads DICOM as well and maps masks back onto the input grid.
"""

from __future__ import annotations

import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from radiogenomics.data.cohorts.names import BRATS2021_SUFFIXES

SCHEMA = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
          "0.8.1/meta_schema_20220324.json")
"""The MONAI bundle metadata schema whose fields metadata.json fills (not fetched)."""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def metadata_json(manifest: dict[str, Any]) -> dict[str, Any]:
    """configs/metadata.json: MONAI's bundle metadata fields, from our manifest."""
    task, output, inputs = manifest["task"], manifest["output"], manifest["input"]
    segmenter = output["kind"] == "segmentation"
    labels = output.get("channels") or output.get("class_names") or []
    spatial = [int(n) for n in inputs["shape"][2:]]
    slab = manifest["preprocessing"]["slab"]
    source = manifest["source"]
    checkpoints = source.get("checkpoints")  # a fold ensemble's members
    weights = (f"the mean of {len(checkpoints)} fold models" if checkpoints
               else source["checkpoint"])
    return {
        "schema": SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported from {source['run']} ({weights})"},
        "monai_version": _version("monai"),
        "pytorch_version": _version("torch"),
        "numpy_version": _version("numpy"),
        "optional_packages_version": {"nibabel": _version("nibabel")},
        "name": f"radiogenomics {task['target']} {task['net']}",
        "task": f"{task['target']} {output['kind']} from brain MRI",
        "description": f"{task['net']} trained by radiogenomics ({task['model']}). "
                       f"{output['meaning']}." + (f" Trained on a central slab of {slab} "
                                                  "slices: the bundle's preprocessing resizes "
                                                  "the whole volume instead." if slab else ""),
        "authors": "radiogenomics developers",
        "copyright": "see the training run and its data",
        "data_source": "see the source run's data config (config.yaml beside this bundle)",
        "data_type": "nibabel",
        "image_classes": ", ".join(f"channel {i}: {s} MRI, z-scored over the brain"
                                   for i, s in enumerate(inputs["channels"])),
        "label_classes": ", ".join(f"{i}: {name}" for i, name in enumerate(labels)),
        "pred_classes": output["meaning"],
        "eval_metrics": {},
        "intended_use": "research only, not for clinical use",
        "references": [],
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "magnitude", "modality": "MR",
                "num_channels": len(inputs["channels"]), "spatial_shape": spatial,
                "dtype": "float32", "value_range": [],
                "is_patch_data": bool(segmenter and output.get("sliding_window")),
                "channel_def": {str(i): s for i, s in enumerate(inputs["channels"])}}},
            "outputs": {"pred": {
                "type": "image" if segmenter else "probabilities",
                "format": "segmentation" if segmenter else "classification",
                "num_channels": len(labels) if segmenter or len(labels) > 2 else 1,
                "spatial_shape": spatial if segmenter else [1],
                "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                "channel_def": {str(i): name for i, name in enumerate(
                    labels if segmenter or len(labels) > 2 else labels[1:])}}},
        },
    }


def _preprocessing(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """MONAI transforms equivalent to our deterministic pipeline (`data.transforms`)."""
    steps = manifest["preprocessing"]
    sequences, reference = steps["sequences"], steps["reference"]
    others = [s for s in sequences if s != reference]
    transforms: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": sequences, "image_only": True,
         "ensure_channel_first": True},
        {"_target_": "Orientationd", "keys": sequences, "axcodes": "RAS",
         "labels": [["L", "R"], ["P", "A"], ["I", "S"]]},
    ]
    if steps["spacing_mm"]:
        transforms.append({"_target_": "Spacingd", "keys": reference,
                           "pixdim": steps["spacing_mm"], "mode": "bilinear"})
    if others:
        transforms.append({"_target_": "ResampleToMatchd", "keys": others,
                           "key_dst": reference, "mode": "bilinear"})
    if steps["crop_foreground"]:
        transforms.append({"_target_": "CropForegroundd", "keys": sequences,
                           "source_key": reference, "margin": 2, "allow_smaller": True})
    return transforms + [
        {"_target_": "Resized", "keys": sequences, "spatial_size": steps["spatial_size"]},
        {"_target_": "NormalizeIntensityd", "keys": sequences, "nonzero": True,
         "channel_wise": True},
        {"_target_": "ConcatItemsd", "keys": sequences, "name": "image", "dim": 0},
        {"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"},
    ]


def inference_json(manifest: dict[str, Any]) -> dict[str, Any]:
    """configs/inference.json: a MONAI bundle config that predicts a BraTS-layout folder."""
    output = manifest["output"]
    segmenter = output["kind"] == "segmentation"
    window = output.get("sliding_window")
    inferer = ({"_target_": "SlidingWindowInferer", "roi_size": window["roi_size"],
                "sw_batch_size": window["sw_batch_size"], "overlap": window["overlap"],
                "mode": window["mode"]} if window else {"_target_": "SimpleInferer"})
    activation = "$torch.sigmoid" if output["activation"] == "sigmoid" else (
        "$lambda x: torch.softmax(x, dim=0)")
    config: dict[str, Any] = {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "sequence_files": {s: BRATS2021_SUFFIXES[s] for s in manifest["input"]["channels"]},
        "datalist": "$[{s: next(iter(sorted(glob.glob(os.path.join(case, '*_' + suffix + "
                    "'.nii.gz')))), '') for s, suffix in files.items()} for files in "
                    "[@sequence_files] for case in sorted(glob.glob(os.path.join(@dataset_dir, "
                    "'*'))) if os.path.isdir(case)]",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": "$torch.jit.load(os.path.join(@bundle_root, 'models', 'model.ts'))",
        "network": "$@network_def.to(@device).eval()",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing(manifest)},
        "inferer": inferer,
        "activation": activation,
        "predict": "$lambda case: @activation(@inferer(@preprocessing(case)['image'][None]"
                   ".to(@device), @network)[0].detach().cpu())",
    }
    config["initialize"] = ["$os.makedirs(@output_dir, exist_ok=True)"]
    if segmenter:
        config["saver"] = {"_target_": "SaveImage", "output_dir": "@output_dir",
                           "output_postfix": "prob", "separate_folder": False}
        config["run"] = ["$[@saver(@predict(case), meta_data=None, filename=os.path.join("
                         "@output_dir, os.path.basename(os.path.dirname(case[next(iter("
                         "case))])))) for case in @datalist]"]
    else:
        config["run"] = ["$[print(os.path.basename(os.path.dirname(case[next(iter(case))])), "
                         "@predict(case).tolist()) for case in @datalist]"]
    return config


def write_bundle(folder: Path, script: Path, manifest: dict[str, Any]) -> Path:
    """Write the bundle into `folder` around the TorchScript file `script`; the folder."""
    model = folder / "models" / "model.ts"
    model.parent.mkdir(parents=True, exist_ok=True)
    if script.resolve() != model.resolve():
        shutil.copyfile(script, model)
    configs = folder / "configs"
    configs.mkdir(exist_ok=True)
    (configs / "metadata.json").write_text(json.dumps(metadata_json(manifest), indent=1))
    (configs / "inference.json").write_text(json.dumps(inference_json(manifest), indent=1))
    (folder / "docs").mkdir(exist_ok=True)
    (folder / "docs" / "README.md").write_text(
        f"# {metadata_json(manifest)['name']}\n\n{__doc__}\nThe exact preprocessing, the "
        "meaning of the outputs and the source run are in ../manifest.json.\n")
    return folder
