"""VGG16 convolutional base (torchvision's module layout, no torchvision) and its classifier."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from radiogenomics.errors import RadiogenomicsError
from radiogenomics.models.nets.weights import load_state_dict_file

log = logging.getLogger(__name__)

VGG16_LAYERS: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
"""Output channels of each 3x3 convolution, "M" for a 2x2 max-pooling (configuration D)."""

POOL_INDICES: dict[str, int] = {"pool3": 16, "pool4": 23, "pool5": 30}
"""Index in ``features`` of the pooling layers whose outputs attention models read."""


class VGG16Base(nn.Module):
    """The 13 convolutions and 5 poolings of VGG16 as ``features``, indexed like torchvision.

    Its state dict keys are torchvision's (``features.0.weight`` ... ``features.28.bias``),
    so ImageNet weights saved from ``torchvision.models.vgg16`` load unchanged.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width in VGG16_LAYERS:
            if width == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(channels, int(width), kernel_size=3, padding=1),
                           nn.ReLU(inplace=True)]
                channels = int(width)
        self.features = nn.Sequential(*layers)
        self.out_channels = channels
        # He initialisation, as torchvision's VGG: with PyTorch's default init the signal of a
        # 13-convolution plain network fades, and a base trained from scratch barely learns
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def load_pretrained(self, path: str | Path) -> None:
        """Load the ``features.*`` tensors of a torchvision-layout VGG16 state dict file.

        The first convolution's RGB kernels are summed over colour (and spread over
        ``in_channels`` inputs) when the input is not 3-channel, e.g. grayscale MRI.
        """
        state = {k: v for k, v in load_state_dict_file(path).items() if k.startswith("features.")}
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise RadiogenomicsError(
                f"{path} is not a VGG16 state dict in torchvision's layout: it lacks "
                f"{', '.join(missing[:4])}{'...' if len(missing) > 4 else ''} -> save it with "
                "torch.save(torchvision.models.vgg16(weights=...).state_dict(), path)")
        first = state["features.0.weight"]
        in_channels = own["features.0.weight"].shape[1]
        if first.shape[1] != in_channels:
            state["features.0.weight"] = (first.sum(dim=1, keepdim=True) / in_channels).repeat(
                1, in_channels, 1, 1)
        wrong = [k for k in own if state[k].shape != own[k].shape]
        if wrong:
            raise RadiogenomicsError(f"{path}: tensors {wrong[:4]} have shapes that do not fit "
                                     "VGG16 -> is it weights for another network?")
        self.load_state_dict({k: state[k] for k in own})
        log.info("loaded VGG16 convolutional base from %s", path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build_base(in_channels: int, pretrained_path: str | Path | None, freeze: bool | None
               ) -> VGG16Base:
    """A VGG16 base, pretrained from a local file when given, frozen as asked.

    ``freeze=None`` freezes a pretrained base and trains one started from scratch.
    """
    base = VGG16Base(in_channels)
    if pretrained_path:
        base.load_pretrained(pretrained_path)
    else:
        log.warning("no pretrained_path: training VGG16 from scratch")
        if freeze:
            warnings.warn("freeze=true without pretrained_path: the VGG16 base keeps its random "
                          "weights and only the head learns", UserWarning, stacklevel=3)
    if freeze if freeze is not None else bool(pretrained_path):
        base.requires_grad_(False)
    return base


class VGG16Classifier(nn.Module):
    """Feature extraction with VGG16 (the VGG16 FLAIR project's model).

    VGG16 convolutional base → global average pooling → dense layers ``hidden``
    (128-64-32-16) with ReLU → ``num_classes`` logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 1,
        pretrained_path: str | Path | None = None,
        freeze: bool | None = None,
        hidden: Sequence[int] = (128, 64, 32, 16),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.base = build_base(in_channels, pretrained_path, freeze)
        layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        width = self.base.out_channels
        for size in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)

    @property
    def gradcam_layer(self) -> str:
        """Name of the layer Grad-CAM reads by default (the last convolution)."""
        return "base.features.28"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.base(x))
