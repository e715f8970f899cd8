"""One segmenter, one case: the predicted mask on the grid of the case's input images.

The prediction is made on the preprocessed grid, then every spatial step of the
preprocessing (orientation, resampling, foreground crop, slab, resize) is inverted with MONAI's
`Invertd`, so the mask has the shape and affine of the case's reference image (its first
sequence as `radiogenomics.data.readers.load_volume` reads it: for DICOM, the RAS geometry
of the conversion) and lies over the scan voxel for voxel; voxel-wise uncertainty maps are
written beside it on the same grid. With ``data.register=true`` the preprocessing starts on
the template grid: the mask is made there, then taken back onto each series' own voxels
through the patient's registration (`native_masks`). `CohortSegmenter`
(`radiogenomics.inference.segmentation`) is the cohort- and ensemble-level runner of predict.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai import transforms as mt
from monai.data import MetaTensor

from radiogenomics.data.case import Case
from radiogenomics.data.labels import from_internal, to_internal
from radiogenomics.data.nifti import write_nifti
from radiogenomics.data.readers import load_volume
from radiogenomics.data.template_space import Registration, resample, to_native
from radiogenomics.data.template_transform import REGISTRATION_KEY
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.data.volume import Volume
from radiogenomics.evaluation.segmentation_scores import region_volumes
from radiogenomics.inference.preprocess import CasePreprocessor, PreparedCase
from radiogenomics.interpret.uncertainty import VoxelUncertainty
from radiogenomics.models.segmenter import SegmentationModule

DEFAULT_SCHEME = "brats2021"
"""Label scheme of masks written for cases whose cohort has none (e.g. RSNA DICOM)."""

VOLUMES_FILE = "region_volumes.csv"


def truth_on_grid(case: Case, grid: Volume) -> np.ndarray:
    """The case's own mask in internal codes, resampled (nearest) onto `grid`'s voxels."""
    truth = load_volume(case["seg"], patient=case["id"])
    codes = to_internal(np.rint(truth.array).astype(np.int64),
                        case.get("label_scheme") or "brats2021", patient=case["id"])
    if codes.shape == grid.array.shape and np.allclose(truth.affine, grid.affine, atol=1e-4):
        return codes
    source = MetaTensor(torch.from_numpy(codes[None]).float(), affine=truth.affine)
    target = MetaTensor(torch.zeros(1, *grid.array.shape), affine=grid.affine)
    resampled = mt.ResampleToMatch(mode="nearest", padding_mode="zeros")(source, target)
    return resampled[0].round().long().numpy()


def truth_on_series(case: Case, registration: Registration, series: str) -> np.ndarray:
    """The case's template-space mask in internal codes on the native voxels of `series`."""
    truth = load_volume(case["seg"], patient=case["id"])
    codes = to_internal(np.rint(truth.array).astype(np.int64),
                        case.get("label_scheme") or "brats2021", patient=case["id"])
    native = to_native(codes.astype(np.float32), truth.affine, registration, series, order=0)
    return np.rint(native.array).astype(np.int64)


def on_truth_grid(case: Case, mask: Volume) -> Volume:
    """A template-space `mask` on the voxels of the case's own template-space mask (nearest):
    registered cases are scored there, as cases read from that grid are."""
    truth = load_volume(case["seg"], patient=case["id"])
    array = resample(np.asarray(mask.array), mask.affine, truth.array.shape, truth.affine,
                     np.eye(4), order=0)
    return Volume.from_array(array, truth.affine, **mask.meta)


def native_masks(mask: Volume, registration: Registration) -> dict[str, Volume]:
    """A template-space `mask` on the native voxels of each registered series (nearest)."""
    masks = {}
    for series in registration.series:
        native = to_native(np.asarray(mask.array, np.float32), mask.affine, registration, series)
        masks[series] = Volume(np.rint(native.array).astype(np.uint8), native.affine,
                               native.spacing, meta=dict(mask.meta))
    return masks


def probability_map(module: SegmentationModule, image: torch.Tensor) -> np.ndarray:
    """(K, X, Y, Z) probabilities of one preprocessed (C, X, Y, Z) image, in eval mode."""
    was_training = module.training
    module.eval()
    with torch.no_grad():
        probabilities = batch_probabilities(module, image[None])[0].float().cpu().numpy()
    module.train(was_training)
    return probabilities


def batch_probabilities(module: SegmentationModule, batch: torch.Tensor) -> torch.Tensor:
    """(B, K, X, Y, Z) probabilities of (B, C, X, Y, Z) preprocessed images, as they are."""
    batch = batch.as_subclass(torch.Tensor).to(module.device)
    with torch.no_grad():
        return module.probabilities(module.logits(batch))


def mask_on_input_grid(module: SegmentationModule, preprocessor: CasePreprocessor,
                       prepared: PreparedCase, probabilities: np.ndarray, case: Case,
                       label_scheme: str | None = None) -> Volume:
    """The mask of (K, X, Y, Z) `probabilities` of `prepared`, on its reference image's grid.

    Probabilities are mapped back before `module` turns them into labels, so the mask is as
    smooth as the input grid allows. Codes follow `label_scheme`, by default the case's own
    scheme (that of its cohort's masks), else brats2021.
    """
    stacked, affine = preprocessor.to_input_geometry(prepared, probabilities)
    internal = module.label_map(torch.from_numpy(stacked)[None])[0, 0].numpy().astype(np.uint8)
    scheme = label_scheme or case.get("label_scheme") or DEFAULT_SCHEME
    mask = from_internal(internal, scheme, patient=case["id"])
    spacing = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
    return Volume(mask, affine, spacing, meta={"label_scheme": scheme})


def predict_mask(module: SegmentationModule | Sequence[SegmentationModule], case: Case,
                 preprocess: PreprocessConfig, label_scheme: str | None = None) -> Volume:
    """The predicted tumour mask of `case`, in the geometry of its reference image (with
    ``register``, taken back from the template grid onto that series' own voxels).

    `preprocess` is the preprocessing the module was trained with (the datamodule's
    ``preprocess``). Codes follow `label_scheme` (see `mask_on_input_grid`). A sequence of
    modules (e.g. the folds of a CV) is an ensemble: their probabilities are averaged.
    """
    modules = [module] if isinstance(module, SegmentationModule) else list(module)
    preprocessor = CasePreprocessor(dataclasses.replace(preprocess, with_seg=False))
    prepared = preprocessor(case)
    probabilities = np.mean([probability_map(m, prepared.image) for m in modules], axis=0)
    mask = mask_on_input_grid(modules[0], preprocessor, prepared, probabilities, case,
                              label_scheme)
    registration = prepared.sample.get(REGISTRATION_KEY)
    if registration is None:
        return mask
    return native_masks(mask, registration)[preprocessor.reference]


def write_mask(mask: Volume, out_dir: str | Path, case_id: str) -> Path:
    """Write `mask` as ``<out_dir>/<case_id>_seg.nii.gz`` (uint8, its own affine)."""
    path = Path(out_dir) / f"{case_id}_seg.nii.gz"
    return write_nifti(np.asarray(mask.array, dtype=np.uint8), mask.affine, path)


def write_uncertainty_maps(maps: VoxelUncertainty, affine: np.ndarray, out_dir: str | Path,
                           case_id: str) -> list[Path]:
    """Write maps already on the input grid beside the mask ``<case_id>_seg.nii.gz``.

    ``<case_id>_prob_mean.nii.gz`` and ``<case_id>_prob_std.nii.gz`` hold one volume per
    output channel (4D, channels last, as viewers expect), ``<case_id>_entropy.nii.gz``
    the entropy in bits; all float32 with the mask's affine.
    """
    folder = Path(out_dir)
    return [
        write_nifti(np.moveaxis(maps.mean, 0, -1).astype(np.float32), affine,
                    folder / f"{case_id}_prob_mean.nii.gz"),
        write_nifti(np.moveaxis(maps.std, 0, -1).astype(np.float32), affine,
                    folder / f"{case_id}_prob_std.nii.gz"),
        write_nifti(maps.entropy.astype(np.float32), affine, folder / f"{case_id}_entropy.nii.gz"),
    ]


def segment_cases(module: SegmentationModule, cases: Iterable[Case], preprocess: PreprocessConfig,
                  out_dir: str | Path, label_scheme: str | None = None) -> pd.DataFrame:
    """Predict and write ``<id>_seg.nii.gz`` for each case, and ``region_volumes.csv``.

    The table has one row per patient: ``id``, ``ET_ml``, ``TC_ml``, ``WT_ml`` and ``mask``
    (the file written); it is returned too.
    """
    rows = []
    for case in cases:
        mask = predict_mask(module, case, preprocess, label_scheme)
        path = write_mask(mask, out_dir, case["id"])
        volumes = region_volumes(mask.array, mask.affine, mask.meta["label_scheme"])
        rows.append({"id": case["id"], **volumes, "mask": str(path)})
    table = pd.DataFrame(rows, columns=["id", "ET_ml", "TC_ml", "WT_ml", "mask"])
    table.to_csv(Path(out_dir) / VOLUMES_FILE, index=False)
    return table
