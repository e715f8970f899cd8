"""Segment, then classify: crop each case around its tumour (``data.roi=tumour``).

The mask a case is cropped by is its cohort's ground-truth mask (``case["seg"]``), or, when a
segmenter run is named (``data.roi_model``), the mask that run predicted for it, stored in the
case as ``case["predicted_seg"]`` (a NIfTI file in the cache, on the grid of the case's
reference image). `TumourCropd` is the crop as a step of the cached preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai import transforms as mt
from monai.data import MetaTensor

from radiogenomics.data.case import Case
from radiogenomics.data.resample import SeparableResized, foreground_box
from radiogenomics.errors import ConfigError, DataError

ROI_CHOICES = ("tumour",)
"""What ``data.roi`` may name (null: the whole brain)."""
ROI_KEY = "roi"
"""The key of the mask the crop is computed from, inside the preprocessing pipeline."""
PREDICTED_MASK_KEY = "predicted_seg"
"""The case key of the mask a segmenter run predicted for it (see module docstring)."""
ROI_MODEL_HINT = ("set data.roi_model=<run dir of a trained segmenter> (its predicted masks "
                  "are used), or use a cohort with tumour masks")


def check_roi(roi: Any) -> str | None:
    """``data.roi`` checked: None or one of `ROI_CHOICES`."""
    if roi is None or roi in ROI_CHOICES:
        return roi
    raise ConfigError(f"must be null (the whole brain) or one of {list(ROI_CHOICES)}, not "
                      f"{roi!r}", key="data.roi")


def roi_mask_path(case: Case, predicted: bool) -> Any:
    """The mask file a case is cropped by: the predicted one when `predicted`, else its own.

    A case without it is a `DataError` naming the patient and what to set.
    """
    if predicted:
        path = case.get(PREDICTED_MASK_KEY)
        if not path:
            raise DataError("no predicted tumour mask for this case (data.roi_model is set)",
                            patient=case["id"], hint="the datamodule or predictor predicts it "
                                                     "before preprocessing: report this as a bug")
        return path
    if not case.get("seg"):
        raise DataError("no tumour mask to crop around (data.roi=tumour)", patient=case["id"],
                        hint=ROI_MODEL_HINT)
    return case["seg"]


def tumour_box(tumour_start: Sequence[int], tumour_end: Sequence[int],
               voxel_mm: Sequence[float], margin_mm: float,
               spatial_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (voxels, end excluded) of the box a tumour is cropped to.

    The smallest box with the proportions of `spatial_size` in mm (one mm per output voxel on
    every axis, so the resize does not distort) that holds the tumour's bounding box plus at
    least `margin_mm` on each side, centred on the tumour. It may leave the volume.
    """
    extent = [int(e) - int(s) for s, e in zip(tumour_start, tumour_end)]
    needed = [n + 2 * math.ceil(margin_mm / v - 1e-6) for n, v in zip(extent, voxel_mm)]
    mm_per_output_voxel = max(n * v / s for n, v, s in zip(needed, voxel_mm, spatial_size))
    size = [max(n, math.ceil(mm_per_output_voxel * s / v - 1e-6))
            for n, v, s in zip(needed, voxel_mm, spatial_size)]
    start = np.array([int(s) - (n - e) // 2 for s, n, e in zip(tumour_start, size, extent)])
    return start, start + np.array(size)


class TumourCropd(mt.MapTransform, mt.InvertibleTransform):
    """Crop every image to the `tumour_box` of the mask at ``mask_key`` (labels > 0), then
    resize it to ``spatial_size``; zero padding where the box leaves the volume.

    MONAI's ``CropForeground.crop_pad`` and ``Resize`` record each step on every image, so
    ``Invertd`` maps results (masks, maps) back onto the input. An empty mask is a
    `DataError` naming the patient: there is no tumour to crop around.
    """

    def __init__(self, keys: Sequence[str], mask_key: str, margin_mm: float,
                 spatial_size: Sequence[int], modes: Sequence[str],
                 patient_key: str = "id") -> None:
        super().__init__(keys)
        self.mask_key = mask_key
        self.margin_mm = float(margin_mm)
        self.spatial_size = tuple(int(s) for s in spatial_size)
        self.patient_key = patient_key
        self.cropper = mt.CropForeground(allow_smaller=False)
        self.resizer = SeparableResized(keys, spatial_size, modes)

    def box(self, data: Mapping[Hashable, Any]) -> tuple[np.ndarray, np.ndarray]:
        """The crop box of a case, from its mask and that mask's voxel size."""
        mask = data[self.mask_key]
        found = foreground_box(mask.as_tensor() if isinstance(mask, MetaTensor) else mask, 0)
        if found is None:
            source = mask.meta.get("filename_or_obj") if isinstance(mask, MetaTensor) else None
            raise DataError("the tumour mask is empty: no tumour to crop around (data.roi="
                            "tumour)", patient=data.get(self.patient_key), path=source,
                            hint="leave the patient out (data.on_error=skip lists it) or use "
                                 "the whole brain (data.roi=null)")
        affine = np.asarray(mask.affine, dtype=np.float64)
        voxel_mm = np.linalg.norm(affine[:3, :3], axis=0)
        return tumour_box(*found, voxel_mm, self.margin_mm, self.spatial_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        start, end = self.box(d)
        for key in self.key_iterator(d):
            d[key] = self.cropper.crop_pad(d[key], start, end)
        return self.resizer(d)

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.resizer.allow_missing_keys = self.allow_missing_keys  # Invertd inverts one key
        d = self.resizer.inverse(data)
        for key in self.key_iterator(d):
            d[key] = self.cropper.inverse(d[key])
        return d
