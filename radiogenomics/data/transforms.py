"""The deterministic MONAI preprocessing pipeline whose output the cache stores."""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor

from radiogenomics.data.labels import to_internal
from radiogenomics.data.readers import load_volume
from radiogenomics.data.resample import ResampleCropResized, SeparableResized, memory_order
from radiogenomics.data.roi import ROI_KEY, TumourCropd
from radiogenomics.data.template_transform import RegisterToTemplated
from radiogenomics.data.volume import c_order, is_nifti
from radiogenomics.errors import DataError, NiftiError

log = logging.getLogger(__name__)

SOURCE_KEY = "filename_or_obj"
"""MetaTensor meta key of the file or series an image was read from (MONAI's name)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """Everything that decides the output of the deterministic pipeline (and so the cache key).

    ``spacing`` resamples the reference sequence (the first one) to that voxel size in mm;
    the other sequences and the mask are resampled onto its grid by world coordinates.
    ``spatial_size`` is the final array size after foreground cropping; ``slab`` keeps
    that many contiguous axial slices around the one of largest brain area before resizing
    in-plane (the Kaggle winner's "central slices"), ``None`` resizes the whole volume.
    """

    sequences: tuple[str, ...] = ("T1wCE",)
    spacing: tuple[float, float, float] | None = (2.0, 2.0, 2.0)
    spatial_size: tuple[int, int, int] = (48, 48, 48)
    with_seg: bool = False
    seg_optional: bool = False
    """With ``with_seg``: a case without a tumour mask is prepared with its image only (a
    multi-task model trains its classification term on it) instead of failing."""
    crop_foreground: bool = True
    slab: int | None = None
    dtype: str = "float16"
    skip_invalid_files: bool = False
    """Leave unreadable DICOM images out of a series (listed in the log) instead of failing."""
    register: bool = False
    """Register DICOM series to the template grid first (`template_transform`)."""
    roi: str | None = None
    """``tumour``: crop to a box around the tumour mask instead of the brain (`data.roi`)."""
    roi_margin_mm: float = 10.0
    """Tumour margin kept on each side of the ROI, in mm."""
    roi_model: str | None = None
    """Identity (checkpoints, sizes, mtimes) of the segmenter whose predicted masks give the
    ROI; None: the cohort's own masks."""

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        # an entry holds the same arrays whether a missing mask is allowed or not (a case
        # without one fails otherwise): caches of multi-task and segmentation runs are shared
        del values["seg_optional"]
        if not self.register:
            del values["register"]  # off: the keys of caches made before it existed stay valid
        if self.roi is None:  # likewise for the ROI settings
            for key in ("roi", "roi_margin_mm", "roi_model"):
                del values[key]
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PreprocessConfig:
        def tup(v: Any) -> Any:
            return tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v

        return cls(**{k: tup(v) for k, v in values.items()})


class LoadVolumed(mt.MapTransform):
    """Read each image (DICOM series folder or NIfTI file) as a channel-first MetaTensor in RAS."""

    def __init__(self, keys: Sequence[str], patient_key: str = "id",
                 skip_invalid_files: bool = False) -> None:
        super().__init__(keys)
        self.patient_key = patient_key
        self.options: dict[str, Any] = {}
        if skip_invalid_files:
            self.options["skip_invalid_files"] = True

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            volume = load_volume(d[key], patient=d.get(self.patient_key), **self.options)
            for note in volume.meta.get("skipped", []):
                log.warning("patient %s, %s: not read: %s", d.get(self.patient_key), d[key], note)
            d[key] = MetaTensor(
                as_tensor(volume.array)[None],
                affine=torch.as_tensor(volume.affine, dtype=torch.float64),
                meta={SOURCE_KEY: str(d[key])},
            )
        return d


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """The voxels as a float32 tensor, laid out in memory as read.

    A DICOM series in RAS order is a permuted view of its slice stack, a NIfTI array is in
    Fortran order: the resampler computes in the memory order of what it is given
    (`resample.apply_axis_maps`), so neither is copied. Only flipped axes (negative strides,
    which torch cannot view) are copied, tile by tile.
    """
    if any(stride < 0 for stride in array.strides):
        return torch.from_numpy(c_order(array))
    return torch.from_numpy(np.asarray(array, dtype=np.float32))


class CheckMaskGridd(mt.Transform):
    """Refuse a NIfTI mask that is not on the voxel grid of its NIfTI reference image.

    In BraTS-style cohorts the mask is drawn on the co-registered images: another shape or
    affine means a wrong, cropped or damaged file that resampling would silently hide. A
    mask paired with DICOM series (another grid by nature) is resampled by world position.
    """

    def __init__(self, mask_key: str, reference_key: str, patient_key: str = "id") -> None:
        self.mask_key = mask_key
        self.reference_key = reference_key
        self.patient_key = patient_key

    def __call__(self, data: Mapping[Hashable, Any]) -> Mapping[Hashable, Any]:
        mask, image = data[self.mask_key], data[self.reference_key]
        mask_path, image_path = mask.meta.get(SOURCE_KEY), image.meta.get(SOURCE_KEY)
        if not (mask_path and image_path and is_nifti(mask_path) and is_nifti(image_path)):
            return data
        shift = float((mask.affine - image.affine).abs().max())
        if mask.shape[1:] != image.shape[1:] or shift > 1e-2:
            raise NiftiError(
                f"tumour mask is not on the voxel grid of {image_path}: shape "
                f"{tuple(mask.shape[1:])} vs {tuple(image.shape[1:])}, affines differ by up to "
                f"{shift:.3g}", patient=data.get(self.patient_key), path=mask_path,
                hint="the mask must be drawn on this case's own images (same shape and affine): "
                     "check that it belongs to the case and was not cropped or resampled",
            )
        return data


class ToInternalLabelsd(mt.MapTransform):
    """Convert a mask from its cohort's label scheme to the internal 0/1/2/3 scheme."""

    def __init__(self, keys: Sequence[str], scheme_key: str = "label_scheme") -> None:
        super().__init__(keys)
        self.scheme_key = scheme_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            values = torch.round(mask.as_tensor() if isinstance(mask, MetaTensor) else mask)
            scheme = d.get(self.scheme_key, "brats2021")
            low, high = (float(v) for v in torch.aminmax(values)) if values.numel() else (0, 0)
            if not (low >= 0 and high <= 255):
                converted = to_internal(values.to(torch.int64), scheme)
            else:
                # byte codes: find those present by counting, not by sorting the volume
                # (torch.unique), and let to_internal check and convert just them
                codes = values.to(torch.uint8)
                present = torch.nonzero(torch.bincount(codes.flatten(), minlength=256))[:, 0]
                targets = to_internal(present, scheme)
                converted = torch.zeros_like(values)
                for code, target in zip(present.tolist(), targets.tolist()):
                    if target:
                        converted.masked_fill_(codes == code, target)
            if isinstance(mask, MetaTensor):
                d[key] = MetaTensor(converted.to(mask.dtype), meta=mask.meta,
                                    applied_operations=mask.applied_operations)
            else:
                d[key] = converted.to(torch.int64)
        return d


class CentralSlabd(mt.Cropd):
    """Keep ``depth`` contiguous axial slices centred on the slice of largest brain area.

    The slab is cut with MONAI's `Crop`, which shifts each image's affine by the slab's
    offset and records the crop, so that ``Invertd`` pads results (masks, maps) back onto
    every slice of the input, each on its own slice.
    """

    def __init__(self, keys: Sequence[str], reference_key: str, depth: int) -> None:
        super().__init__(keys, cropper=mt.Crop())
        self.reference_key = reference_key
        self.depth = depth

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None
                 ) -> dict[Hashable, Any]:
        d = dict(data)
        reference = d[self.reference_key][0]
        area = (reference > 0).sum(dim=(0, 1))
        n_slices = reference.shape[-1]
        centre = int(torch.argmax(area)) if n_slices else 0
        start = min(max(centre - self.depth // 2, 0), max(n_slices - self.depth, 0))
        slab = (slice(None), slice(None), slice(start, start + self.depth))
        for key in self.key_iterator(d):
            d[key] = self.cropper(d[key], slab, lazy=False)
        return d


class NormalizeNonzerod(mt.MapTransform):
    """Channel-wise z-score over the non-zero voxels (background stays 0), in place.

    Gives the values of MONAI's ``NormalizeIntensityd(nonzero=True, channel_wise=True)`` at
    a fraction of its cost on CPU, and keeps the MetaTensor (its affine and the record of
    spatial transforms that ``Invertd`` needs).
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            plain = image.as_tensor() if isinstance(image, MetaTensor) else image
            foreground = plain != 0
            axes = tuple(range(1, plain.ndim))
            count = foreground.sum(axes, keepdim=True).clamp_min(1)
            mean = plain.sum(axes, keepdim=True) / count
            centred = (plain - mean).mul_(foreground)
            std = (centred.square().sum(axes, keepdim=True) / count).sqrt()
            std = torch.where(std > 0, std, torch.ones_like(std))
            # the background of `centred` is 0 already, as it is in `plain`
            plain.copy_(centred.div_(std))
        return d


class CheckFinited(mt.MapTransform):
    """Fail loudly on blank or non-finite images after preprocessing."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            # plain tensor: MetaTensor's per-op bookkeeping is not needed for a check
            image = d[key].as_tensor() if isinstance(d[key], MetaTensor) else d[key]
            image = image.permute(memory_order(image))  # in memory order: one sweep
            # one pass: min and max propagate NaN and are infinite if any voxel is
            low, high = (float(v) for v in torch.aminmax(image))
            if not (math.isfinite(low) and math.isfinite(high)):
                raise DataError(f"{key} has non-finite voxels after preprocessing",
                                patient=d.get("id"), hint="check the source series")
            if high == low:
                raise DataError(f"{key} is blank (every voxel has the same value)",
                                patient=d.get("id"), hint="exclude the patient or fix the series")
        return d


def preprocessing(config: PreprocessConfig) -> mt.Compose:
    """The deterministic pipeline: load, (register,) orient RAS, resample, crop, resize,
    normalise."""
    sequences = list(config.sequences)
    reference = sequences[0]
    image_keys = list(sequences)
    # the ROI mask (data.roi=tumour) travels with the images until the crop, then is dropped
    mask_keys = (["seg"] if config.with_seg else []) + ([ROI_KEY] if config.roi else [])
    all_keys = image_keys + mask_keys
    modes = ["bilinear"] * len(image_keys) + ["nearest"] * len(mask_keys)
    if config.roi and config.slab is not None:
        raise ValueError("a tumour ROI and a slab both choose the field of view: set one")
    steps: list[mt.Transform] = [
        LoadVolumed(all_keys, skip_invalid_files=config.skip_invalid_files),
        *[CheckMaskGridd(key, reference) for key in mask_keys],
        CheckFinited(image_keys),
        *([RegisterToTemplated(image_keys)] if config.register else []),
        mt.Orientationd(keys=all_keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if config.with_seg:  # the ROI mask needs no codes: its tumour is every label > 0
        steps.append(ToInternalLabelsd(["seg"]))
    # MONAI's Spacingd (reference), ResampleToMatchd (others), CropForegroundd(margin=2) and
    # Resized in one separable pass per image, with MONAI's record of each step (see resample)
    steps.append(ResampleCropResized(
        all_keys, reference=reference, modes=modes, spacing=config.spacing,
        margin=2 if config.crop_foreground and not config.roi else None,
        spatial_size=config.spatial_size if config.slab is None and not config.roi else None))
    if config.roi:
        steps += [
            TumourCropd(all_keys, mask_key=ROI_KEY, margin_mm=config.roi_margin_mm,
                        spatial_size=config.spatial_size,
                        modes=[m.replace("nearest", "nearest-exact") for m in modes]),
            mt.DeleteItemsd(keys=ROI_KEY),
        ]
    if config.slab is not None:
        steps += [
            CentralSlabd(all_keys, reference_key=reference, depth=config.slab),
            # MONAI's Resized, computed separably; torch's "nearest" resize shifts a mask by
            # half a voxel against the bilinear image, hence "nearest-exact"
            SeparableResized(all_keys, spatial_size=config.spatial_size,
                             modes=[m.replace("nearest", "nearest-exact") for m in modes]),
        ]
    steps += [
        NormalizeNonzerod(image_keys),
        mt.ConcatItemsd(keys=image_keys, name="image", dim=0),
    ]
    return mt.Compose(steps)
