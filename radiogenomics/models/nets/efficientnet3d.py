"""MONAI's EfficientNet for volumes, never pretrained, with a classifier that starts small."""

from __future__ import annotations

from monai.networks.nets import EfficientNetBN
from torch import nn


class EfficientNet3D(EfficientNetBN):
    """3D EfficientNet (``model_name``: efficientnet-b0 ... b7) with no pretrained weights.

    MONAI initialises the last linear layer uniformly in [-1, 1], which with 1280 features
    gives logits of about +-10 and a BCE near 10 at the start; here it starts near zero.
    ``norm="batch"`` uses PyTorch's batch-norm momentum: MONAI's default (0.01, from
    TensorFlow) leaves the running statistics off for hundreds of steps, and validation
    outputs constant meanwhile.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1,
                 model_name: str = "efficientnet-b0", norm: str = "batch") -> None:
        super().__init__(model_name, pretrained=False, spatial_dims=3, in_channels=in_channels,
                         num_classes=num_classes, norm=norm)
        nn.init.normal_(self._fc.weight, std=0.01)
        nn.init.zeros_(self._fc.bias)

    @property
    def gradcam_layer(self) -> str:
        """Name of the layer Grad-CAM reads by default (the last convolution)."""
        return "_conv_head"
