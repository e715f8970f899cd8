"""Grad-CAM maps of classifiers with MONAI's `GradCAM`, for 2D and 3D networks."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from monai.visualize import GradCAM
from torch import nn

from radiogenomics.errors import RadiogenomicsError
from radiogenomics.interpret.slice_batch import from_slices, to_slices


def normalise_map(heatmap: torch.Tensor) -> torch.Tensor:
    """Scale a map to [0, 1] over the whole volume (all zeros when it is constant)."""
    low, high = heatmap.min(), heatmap.max()
    return (heatmap - low) / (high - low) if high > low else torch.zeros_like(heatmap)


def target_layer(net: nn.Module, layer: str | None = None) -> str:
    """The layer Grad-CAM reads: `layer`, else the net's ``gradcam_layer`` property."""
    name = layer or getattr(net, "gradcam_layer", None)
    names = [n for n, _ in net.named_modules() if n]
    if name is None:
        raise RadiogenomicsError(
            f"{type(net).__name__} names no Grad-CAM layer (no gradcam_layer property) -> "
            f"set interpret.layer to one of its layers, e.g. {', '.join(names[-5:])}")
    if name not in names:
        raise RadiogenomicsError(
            f"{type(net).__name__} has no layer {name!r} -> set interpret.layer to one of "
            f"its layers, e.g. {', '.join(names[-5:])}")
    return name


class GradCAMExplainer:
    """Grad-CAM map of a patient: where the last convolutions see evidence for the class.

    The map has the input's spatial shape, scaled to [0, 1] over the volume. A 2D network
    (``axis`` given) gets one map per slice across that axis, stacked back into a volume.
    `class_index` is the logit
    explained (None: the predicted class; a one-logit binary net has only logit 0, the
    positive class).
    """

    name = "gradcam"

    def __init__(self, layer: str | None = None, class_index: int | None = None) -> None:
        self.layer = layer
        self.class_index = class_index
        self._cams: dict[int, GradCAM] = {}

    def check(self, net: nn.Module) -> None:
        """Fail before any patient is processed when the net has no usable layer."""
        target_layer(net, self.layer)

    def _cam(self, net: nn.Module) -> GradCAM:
        # MONAI's hooks stay on the module they wrap: give them a copy, not the predicting net
        if id(net) not in self._cams:
            self._cams[id(net)] = GradCAM(copy.deepcopy(net).eval(),
                                          target_layers=target_layer(net, self.layer),
                                          postprocessing=lambda x: x)
        return self._cams[id(net)]

    def __call__(self, net: nn.Module, image: torch.Tensor, axis: int | None = None
                 ) -> np.ndarray:
        """Map of a (C, X, Y, Z) image, as an (X, Y, Z) array; `axis`: slice it for a 2D net."""
        cam = self._cam(net)
        with torch.enable_grad(), warnings.catch_warnings():
            # the image needs no gradient: PyTorch warns that the hook sees outputs only
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            if axis is None:
                heatmap = cam(image[None], class_idx=self.class_index)[0, 0]
            else:
                heatmap = from_slices(cam(to_slices(image, axis), class_idx=self.class_index),
                                      axis)[0]
        return normalise_map(heatmap.detach()).cpu().numpy()
