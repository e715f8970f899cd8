"""VGG16 with attention gates on pool-3 and pool-4, gated by the global feature (grading)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from radiogenomics.models.nets.vgg import POOL_INDICES, build_base

NORMALIZATIONS: tuple[str, ...] = ("sigmoid", "softmax")


class AttentionGate(nn.Module):
    """Additive attention of local features ``l`` under a global feature ``g``.

    Compatibility ``c_i = psi(ReLU(W_l l_i + W_g g))`` at each position ``i``, normalised over
    positions by ``softmax`` (weights sum to 1) or ``sigmoid`` (each in [0, 1], the attended
    feature then being the attention-weighted mean). Returns the attended feature vector and
    the attention map ``(B, 1, h, w)`` (the softmax weights or the sigmoid gates).
    """

    def __init__(self, local_channels: int, global_channels: int, inter_channels: int = 128,
                 normalize: str = "softmax") -> None:
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, not {normalize!r}")
        self.normalize = normalize
        self.local = nn.Conv2d(local_channels, inter_channels, kernel_size=1, bias=False)
        self.gate = nn.Linear(global_channels, inter_channels)
        self.psi = nn.Conv2d(inter_channels, 1, kernel_size=1)

    def forward(self, local: torch.Tensor, global_feature: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = local.shape
        gate = self.gate(global_feature)[:, :, None, None]
        compatibility = self.psi(torch.relu(self.local(local) + gate)).flatten(1)
        if self.normalize == "softmax":
            weights = attention = torch.softmax(compatibility, dim=1)
        else:
            attention = torch.sigmoid(compatibility)
            weights = attention / attention.sum(dim=1, keepdim=True).clamp_min(1e-6)
        attended = torch.einsum("bn,bcn->bc", weights, local.flatten(2))
        return attended, attention.view(batch, 1, height, width)


class AttentionVGG16(nn.Module):
    """VGG16 whose pool-3 and pool-4 features are attended under the last block's feature.

    The global feature is the globally averaged pool-5 output; the two attended vectors
    and the global feature are concatenated for the linear classifier.
    ``forward(x, return_attention=True)`` also returns ``{"pool3": map, "pool4": map}``;
    ``attention_maps(x)`` gives the two maps alone (what `interpret.attention` reads).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        normalize: str = "softmax",
        inter_channels: int = 128,
        dropout: float = 0.3,
        pretrained_path: str | Path | None = None,
        freeze: bool | None = None,
    ) -> None:
        super().__init__()
        self.base = build_base(in_channels, pretrained_path, freeze)
        channels = self.base.out_channels
        self.attention3 = AttentionGate(256, channels, inter_channels, normalize)
        self.attention4 = AttentionGate(512, channels, inter_channels, normalize)
        self.head = nn.Sequential(nn.Dropout(dropout),
                                  nn.Linear(256 + 512 + channels, num_classes))

    @property
    def gradcam_layer(self) -> str:
        """Name of the layer Grad-CAM reads by default (the last convolution)."""
        return "base.features.28"

    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The pool-3 and pool-4 attention maps ``(B, 1, h, w)`` of a batch, for display."""
        _, maps = self(x, return_attention=True)
        return list(maps.values())

    def forward(self, x: torch.Tensor, return_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        taps = {}
        for index, layer in enumerate(self.base.features):
            x = layer(x)
            if index in (POOL_INDICES["pool3"], POOL_INDICES["pool4"]):
                taps[index] = x
        pool3, pool4 = taps[POOL_INDICES["pool3"]], taps[POOL_INDICES["pool4"]]
        global_feature = x.mean(dim=(2, 3))
        attended3, map3 = self.attention3(pool3, global_feature)
        attended4, map4 = self.attention4(pool4, global_feature)
        logits = self.head(torch.cat([attended3, attended4, global_feature], dim=1))
        if return_attention:
            return logits, {"pool3": map3, "pool4": map4}
        return logits
