"""3D ResNet classifier (MONAI's ResNet), the network of the RSNA-MICCAI 2021 winner."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.networks.nets.resnet import ResNet, get_inplanes
from torch import nn

from radiogenomics.models.nets.weights import load_pretrained

_LAYERS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


class ResNet3D(nn.Module):
    """A 3D ResNet backbone with a dropout + linear head.

    ``pretrained_path`` loads a local state dict (e.g. MedicalNet's ``resnet_10.pth``)
    into the backbone; the head is always trained from scratch.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        depth: int = 10,
        widen_factor: float = 1.0,
        dropout: float = 0.0,
        pretrained_path: str | Path | None = None,
    ) -> None:
        super().__init__()
        if depth not in _LAYERS:
            raise ValueError(f"depth must be one of {sorted(_LAYERS)}, not {depth}")
        self.backbone = ResNet(
            block="basic", layers=_LAYERS[depth], block_inplanes=get_inplanes(),
            spatial_dims=3, n_input_channels=in_channels, widen_factor=widen_factor,
            feed_forward=False,
        )
        if pretrained_path:
            load_pretrained(self.backbone, pretrained_path)
        features = int(get_inplanes()[-1] * widen_factor)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))

    @property
    def gradcam_layer(self) -> str:
        """Name of the layer Grad-CAM reads by default."""
        return "backbone.layer4"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))
