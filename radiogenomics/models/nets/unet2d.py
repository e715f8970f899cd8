"""The 2D U-Net of the Kaggle BraTS baseline, applied to the axial slices of a volume."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNet
from torch import nn


class UNet2D(nn.Module):
    """MONAI's BasicUNet in 2D with He (Kaiming) initialisation and dropout in every block.

    A 4D input (B, C, X, Y) is segmented as slices; a 5D volume (B, C, X, Y, Z) is cut into
    its B*Z axial slices, segmented, and the slice outputs stacked back into (B, K, X, Y, Z),
    so the net trains and infers on the volumes of the 3D pipeline.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 4,
        features: Sequence[int] = (32, 64, 128, 256, 512, 32),
        dropout: float = 0.2,
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        self.unet = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                              features=tuple(features), act="relu", norm=norm, dropout=dropout)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            return self.unet(x)
        if x.ndim != 5:
            raise ValueError(f"UNet2D takes (B, C, X, Y) slices or (B, C, X, Y, Z) volumes, "
                             f"got shape {tuple(x.shape)}")
        batch, channels, *plane, depth = x.shape
        slices = x.permute(0, 4, 1, 2, 3).reshape(batch * depth, channels, *plane)
        out = self.unet(slices)
        return out.reshape(batch, depth, -1, *plane).permute(0, 2, 3, 4, 1)
