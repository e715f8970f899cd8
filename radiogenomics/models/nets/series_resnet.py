"""2D ResNet with two heads: the MRI sequence and the acquisition plane of a slice."""

from __future__ import annotations

import torch
from monai.networks.nets.resnet import ResNet, get_inplanes
from torch import nn

_LAYERS = {10: [1, 1, 1, 1], 18: [2, 2, 2, 2], 34: [3, 4, 6, 3]}


class SeriesResNet(nn.Module):
    """MONAI's 2D ResNet trunk shared by a sequence head and a plane head."""

    def __init__(self, in_channels: int = 1, num_sequences: int = 4, num_planes: int = 3,
                 depth: int = 10, dropout: float = 0.2) -> None:
        super().__init__()
        if depth not in _LAYERS:
            raise ValueError(f"depth must be one of {sorted(_LAYERS)}, not {depth}")
        self.trunk = ResNet(
            block="basic", layers=_LAYERS[depth], block_inplanes=get_inplanes(), spatial_dims=2,
            n_input_channels=in_channels, conv1_t_stride=2, feed_forward=False,
        )
        features = get_inplanes()[-1]
        self.sequence_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_sequences))
        self.plane_head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_planes))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.trunk(x)
        return {"sequence": self.sequence_head(features), "plane": self.plane_head(features)}
