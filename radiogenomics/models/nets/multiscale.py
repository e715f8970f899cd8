"""Multiscale CNN of Díaz-Pernas et al. 2021 (Healthcare 9:153) for 2D slices or volumes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool
from torch import nn


def _conv(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int,
          stride: int = 1) -> Convolution:
    """Convolution with "same" padding, batch norm and ReLU."""
    return Convolution(spatial_dims, in_channels, out_channels, strides=stride,
                       kernel_size=kernel_size, act="RELU", norm="BATCH")


class MultiScaleCNN(nn.Module):
    """Parallel pathways of different receptive field, fused before the classifier.

    Each pathway is two convolutions of one kernel size (``kernel_sizes``, the paper's
    11/7/3: large, medium and small scale), the first with stride 2. Their feature maps
    are concatenated, fused by a 3-wide convolution, pooled globally and classified.
    ``spatial_dims=3`` builds the same network for volumes (smaller kernels, e.g.
    ``[7, 5, 3]``, keep it affordable there).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        spatial_dims: int = 2,
        kernel_sizes: Sequence[int] = (11, 7, 3),
        pathway_channels: Sequence[int] = (16, 32),
        fusion_channels: int = 64,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"kernel sizes must be odd, got {list(kernel_sizes)}")
        first, second = pathway_channels
        self.pathways = nn.ModuleList(
            nn.Sequential(
                _conv(spatial_dims, in_channels, first, k, stride=2),
                _conv(spatial_dims, first, second, k),
            )
            for k in kernel_sizes
        )
        self.fusion = nn.Sequential(
            _conv(spatial_dims, second * len(kernel_sizes), fusion_channels, 3),
            Pool[Pool.MAX, spatial_dims](kernel_size=2),
            _conv(spatial_dims, fusion_channels, fusion_channels, 3),
            Pool[Pool.ADAPTIVEAVG, spatial_dims](1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(fusion_channels, num_classes))

    @property
    def gradcam_layer(self) -> str:
        """Name of the layer Grad-CAM reads by default."""
        return "fusion.2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scales = torch.cat([pathway(x) for pathway in self.pathways], dim=1)
        return self.head(self.fusion(scales))
