"""The random augmentation of data/augment.py applied to a whole batch on the device it is on.

At the winner's input (1x256x256x64) MONAI's ``RandAffined`` costs a DataLoader worker about
0.3 s per sample on a CPU core; ``F.affine_grid`` + ``F.grid_sample`` on a GPU rotate a batch
of 8 in about a millisecond. With ``data.augment_on=device`` the workers only read the cache
and the datamodule augments each training batch after it reaches the model's device
(``on_after_batch_transfer``). The draws follow the same distributions as the MONAI
transforms of ``augmentation`` (flip, rotation and zoom about the volume centre in voxel
space, gain, offset, noise) and the matrices are MONAI's own (``create_rotate``,
``create_scale``), so the two paths differ only in which random numbers they draw.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.transforms.utils import create_rotate, create_scale

from radiogenomics.data.augment import AugmentConfig


def voxel_affine(rotation: tuple[float, float, float], scale: tuple[float, float, float]
                 ) -> torch.Tensor:
    """4x4 matrix mapping an output voxel (centred index coordinates) to the input voxel it
    samples, as MONAI's ``Affine(rotate_params=rotation, scale_params=scale)`` builds it."""
    rotate = create_rotate(3, rotation, backend="torch")
    zoom = create_scale(3, scale, backend="torch")
    return (torch.as_tensor(rotate) @ torch.as_tensor(zoom)).double()


def grid_theta(affines: torch.Tensor, spatial_size: tuple[int, int, int]) -> torch.Tensor:
    """``F.affine_grid``'s (B, 3, 4) matrices for voxel-space affines of (B, 4, 4).

    affine_grid works in coordinates normalised to [-1, 1] per axis (align_corners=False:
    a centred voxel index u becomes 2u/N) and lists the axes last-to-first (x is the last
    dimension of the tensor): the voxel matrix is rescaled per axis and its axes reversed.
    """
    half = torch.tensor([n / 2.0 for n in spatial_size], dtype=affines.dtype,
                        device=affines.device)
    linear = affines[:, :3, :3] * half[None, None, :] / half[None, :, None]
    shift = affines[:, :3, 3] / half[None, :]
    theta = torch.cat([linear, shift[..., None]], dim=2)
    order = [2, 1, 0]
    return theta[:, order][:, :, [*order, 3]]


class BatchAugment:
    """Random flip, rotation/zoom, gain, offset and noise for a batch (B, C, X, Y, Z) and its
    optional mask (B, 1, X, Y, Z; nearest-neighbour), each sample drawn independently.

    Random numbers come from torch's generator of the batch's device, so
    ``seed_everything`` makes a run reproducible on one machine.
    """

    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    def _chance(self, prob: float, batch: int, device: torch.device) -> torch.Tensor:
        return torch.rand(batch, device=device) < prob

    def _uniform(self, bound: float, shape: tuple[int, ...], device: torch.device
                 ) -> torch.Tensor:
        return (torch.rand(shape, device=device) * 2 - 1) * bound

    def __call__(self, image: torch.Tensor, seg: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        config, batch, device = self.config, image.shape[0], image.device
        view = (batch, 1, 1, 1, 1)
        if config.flip_prob > 0:
            flip = self._chance(config.flip_prob, batch, device).view(view)
            image = torch.where(flip, image.flip(2), image)
            if seg is not None:
                seg = torch.where(flip, seg.flip(2), seg)
        if config.rotate_prob > 0 and (config.rotate_range_deg > 0 or config.scale_range > 0):
            image, seg = self._affine(image, seg)
        if config.intensity_prob > 0:
            gain = 1 + self._uniform(config.intensity_scale, (batch,), device)
            gain = torch.where(self._chance(config.intensity_prob, batch, device), gain, 1.0)
            offset = self._uniform(config.intensity_shift, (batch,), device)
            offset = torch.where(self._chance(config.intensity_prob, batch, device), offset, 0.0)
            image = image * gain.view(view).to(image.dtype) + offset.view(view).to(image.dtype)
        if config.noise_std > 0:
            # MONAI's RandGaussianNoise draws each sample's std from [0, noise_std]
            std = torch.rand(batch, device=device) * config.noise_std
            std = torch.where(self._chance(0.5, batch, device), std, 0.0)
            image = image + torch.randn_like(image) * std.view(view).to(image.dtype)
        return image, seg

    def _affine(self, image: torch.Tensor, seg: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        config, batch, device = self.config, image.shape[0], image.device
        chosen = torch.nonzero(self._chance(config.rotate_prob, batch, device)).flatten()
        # the angles and zooms of every sample are drawn, so the stream does not depend on
        # which samples were chosen
        angles = self._uniform(math.radians(config.rotate_range_deg), (batch, 3), device)
        zooms = 1 + self._uniform(config.scale_range, (batch, 3), device)
        if chosen.numel() == 0:
            return image, seg
        affines = torch.stack([
            voxel_affine(tuple(angles[i].tolist()), tuple(zooms[i].tolist()))
            for i in chosen.tolist()]).to(device)
        size = tuple(image.shape[2:])
        theta = grid_theta(affines, size).to(torch.float32)
        grid = F.affine_grid(theta, [len(chosen), 1, *size], align_corners=False)
        image = image.clone()
        moved = F.grid_sample(image[chosen].float(), grid, mode="bilinear",
                              padding_mode="zeros", align_corners=False)
        image[chosen] = moved.to(image.dtype)
        if seg is not None:
            seg = seg.clone()
            moved_seg = F.grid_sample(seg[chosen].float(), grid, mode="nearest",
                                      padding_mode="zeros", align_corners=False)
            seg[chosen] = moved_seg.to(seg.dtype)
        return image, seg
