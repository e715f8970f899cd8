"""SegResNet with a classification head on its bottleneck: tumour masks and a case label
from one shared encoder (the multi-task set-up of joint segmentation and MGMT/grade)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.segresnet_block import get_norm_layer
from monai.networks.nets import SegResNet
from torch import nn


class MultiTaskSegResNet(nn.Module):
    """MONAI's SegResNet (encoder, decoder) and a pooled linear head on the encoder's output.

    Called on images it gives the class logits (B, num_classes), as a classifier does (so
    Grad-CAM, TTA and export see a classifier), without running the decoder; with
    ``segment=True`` it gives ``(segmentation logits (B, out_channels, *spatial), class
    logits)``. The head normalises and activates the bottleneck features (the SegResNet
    blocks are pre-activation), pools them globally and applies dropout.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        num_classes: int = 1,
        init_filters: int = 16,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] = (1, 1, 1),
        dropout_prob: float | None = None,
        head_dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.segresnet = SegResNet(spatial_dims=3, init_filters=init_filters,
                                   in_channels=in_channels, out_channels=out_channels,
                                   dropout_prob=dropout_prob, blocks_down=tuple(blocks_down),
                                   blocks_up=tuple(blocks_up))
        features = init_filters * 2 ** (len(blocks_down) - 1)
        self.head = nn.Sequential(
            get_norm_layer(name=self.segresnet.norm, spatial_dims=3, channels=features),
            nn.ReLU(inplace=True), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
            nn.Dropout(head_dropout), nn.Linear(features, num_classes))

    @property
    def gradcam_layer(self) -> str:
        """Name of the layer Grad-CAM reads by default: the encoder's last stage."""
        return f"segresnet.down_layers.{len(self.segresnet.down_layers) - 1}"

    def forward(self, x: torch.Tensor, segment: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        bottleneck, skips = self.segresnet.encode(x)
        logits = self.head(bottleneck)
        if not segment:
            return logits
        return self.segresnet.decode(bottleneck, skips[::-1]), logits
