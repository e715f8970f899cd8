"""Attention maps of networks that compute them (attention-gated VGG)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radiogenomics.errors import RadiogenomicsError
from radiogenomics.interpret.gradcam import normalise_map
from radiogenomics.interpret.slice_batch import from_slices, to_slices


class AttentionExplainer:
    """The net's own attention maps, upsampled to the input and averaged over its gates.

    The net must have ``attention_maps(x)`` returning one (B, 1, *spatial) tensor per
    attention gate (or a single tensor). A 2D net (``axis`` given) gets one map per slice
    across that axis.
    """

    name = "attention"

    def check(self, net: nn.Module) -> None:
        """Fail before any patient is processed when the net computes no attention."""
        if not callable(getattr(net, "attention_maps", None)):
            raise RadiogenomicsError(
                f"{type(net).__name__} computes no attention maps (no attention_maps method) "
                "-> use interpret=gradcam, or a model with attention gates (model=attention_vgg)")

    def _maps(self, net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        maps = net.attention_maps(batch)
        gates: Sequence[torch.Tensor] = [maps] if isinstance(maps, torch.Tensor) else maps
        mode = "bilinear" if batch.ndim == 4 else "trilinear"
        upsampled = [F.interpolate(g.float().mean(1, keepdim=True), size=batch.shape[2:],
                                   mode=mode, align_corners=False) for g in gates]
        return torch.stack(upsampled).mean(0)

    def __call__(self, net: nn.Module, image: torch.Tensor, axis: int | None = None
                 ) -> np.ndarray:
        """Map of a (C, X, Y, Z) image, as an (X, Y, Z) array in [0, 1]; `axis`: 2D net."""
        self.check(net)
        with torch.no_grad():
            if axis is None:
                heatmap = self._maps(net, image[None])[0, 0]
            else:
                heatmap = from_slices(self._maps(net, to_slices(image, axis)), axis)[0]
        return normalise_map(heatmap).cpu().numpy()
