"""Random MONAI transforms applied after the cache, on each draw of a training sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from monai import transforms as mt


@dataclass
class AugmentConfig:
    """Strength and probability of each random transform (0 disables it).

    Spatial: ``flip_prob`` mirrors left-right (the first axis, R-L in RAS); with odds
    ``rotate_prob`` one random affine rotates about each axis by up to ``rotate_range_deg``
    degrees and zooms by up to ``scale_range`` (0.1: 0.9x to 1.1x). Intensity, in units of
    the normalised image, each with odds ``intensity_prob``: a gain of up to
    ``intensity_scale`` (0.1: x0.9 to x1.1) and an offset of up to ``intensity_shift``.
    ``noise_std``: Gaussian noise of that standard deviation, added with odds 0.5.
    """

    flip_prob: float = 0.5
    rotate_range_deg: float = 10.0
    rotate_prob: float = 0.3
    scale_range: float = 0.1
    intensity_shift: float = 0.1
    intensity_scale: float = 0.1
    intensity_prob: float = 0.5
    noise_std: float = 0.0


def patch_sampling(patch_size: Sequence[int]) -> list[mt.Transform]:
    """Crop one random ``patch_size`` patch of image and seg, centred on tumour or on
    background with equal odds (volumes smaller than the patch are zero-padded first).

    The cropper returns a list of one sample: the dataset unwraps it.
    """
    keys = ["image", "seg"]
    return [mt.SpatialPadd(keys=keys, spatial_size=list(patch_size)),
            mt.RandCropByPosNegLabeld(keys=keys, label_key="seg", spatial_size=list(patch_size),
                                      pos=1, neg=1, num_samples=1)]


def augmentation(config: AugmentConfig | None, with_seg: bool = False,
                 patch_size: Sequence[int] | None = None) -> mt.Compose:
    """Random spatial and intensity transforms (identity when ``config`` is ``None``),
    after cropping a training patch when ``patch_size`` is given (needs ``with_seg``)."""
    steps: list[mt.Transform] = patch_sampling(patch_size) if patch_size is not None else []
    if config is None:
        return mt.Compose(steps)
    keys = ["image", "seg"] if with_seg else ["image"]
    modes = ["bilinear", "nearest"] if with_seg else ["bilinear"]
    if config.flip_prob > 0:
        steps.append(mt.RandFlipd(keys=keys, prob=config.flip_prob, spatial_axis=0))
    if config.rotate_prob > 0 and (config.rotate_range_deg > 0 or config.scale_range > 0):
        angle = float(np.deg2rad(config.rotate_range_deg))
        steps.append(mt.RandAffined(keys=keys, prob=config.rotate_prob, mode=modes,
                                    rotate_range=(angle, angle, angle),
                                    scale_range=(config.scale_range,) * 3,
                                    padding_mode="zeros"))
    if config.intensity_prob > 0:
        steps.append(mt.RandScaleIntensityd(keys=["image"], factors=config.intensity_scale,
                                            prob=config.intensity_prob))
        steps.append(mt.RandShiftIntensityd(keys=["image"], offsets=config.intensity_shift,
                                            prob=config.intensity_prob))
    if config.noise_std > 0:
        steps.append(mt.RandGaussianNoised(keys=["image"], std=config.noise_std, prob=0.5))
    return mt.Compose(steps)
