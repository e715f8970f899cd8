"""Does a model fit the data it is given? Checked before any data is read or prepared."""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from radiogenomics.errors import ConfigError

TWO_D_DATA = "data=slices, data=png or data=series (2D slices)"
THREE_D_DATA = "data=synthetic, data=rsna or data=brats (3D volumes)"
TWO_D_MODELS = "model=vgg16, attention_vgg, multiscale or series_resnet"
THREE_D_MODELS = "model=cnn3d, efficientnet3d, unet, unet2d or segresnet"


def net_dims(model: nn.Module) -> int | None:
    """2 or 3: the convolutions of `model`'s network; None when it has none (or both)."""
    net = getattr(model, "net", model)
    dims = {2 if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) else 3
            for m in net.modules() if isinstance(m, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d
                                                 | nn.ConvTranspose3d)}
    return dims.pop() if len(dims) == 1 else None


def _datamodule_class(data: Any) -> type | None:
    """The class of a datamodule, or of the ``_target_`` of its config (not instantiated)."""
    target = data.get("_target_") if hasattr(data, "get") else None
    if not isinstance(target, str):
        return type(data)
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None  # instantiating it will say what is wrong


def data_dims(data: Any) -> int | None:
    """2 for a datamodule (or a datamodule config) of slices (slices, png, series), 3 for one
    of volumes, else None."""
    from radiogenomics.data.datamodule import MRIDataModule
    from radiogenomics.data.series import SeriesDataModule
    from radiogenomics.data.slices import SliceDataModule

    cls = _datamodule_class(data)
    if not isinstance(cls, type):
        return None
    if issubclass(cls, SliceDataModule | SeriesDataModule):
        return 2
    if issubclass(cls, MRIDataModule):
        return 3
    return None


def _name(obj: object) -> str:
    net = getattr(obj, "net", None)
    return type(obj).__name__ + (f" (net {type(net).__name__})" if net is not None else "")


def check_model_fits_data(model: nn.Module, datamodule: Any) -> None:
    """Raise ConfigError when a 2D model is given volumes or a 3D model slices.

    `datamodule`: a datamodule or its config (checked before it is instantiated).

    Segmenters with a 2D network (unet2d) segment volumes slice by slice: they take volumes.
    """
    from radiogenomics.models.segmenter import SegmentationModule

    if not isinstance(model, nn.Module):  # scikit-learn estimators (survival grouping)
        return
    model_d, data_d = net_dims(model), data_dims(datamodule)
    if model_d is None or data_d is None or model_d == data_d:
        return
    if isinstance(model, SegmentationModule) and model_d == 2 and data_d == 3:
        return
    wanted = TWO_D_DATA if model_d == 2 else THREE_D_DATA
    given = "3D volumes" if data_d == 3 else "2D slices"
    others = THREE_D_MODELS if data_d == 3 else TWO_D_MODELS
    raise ConfigError(
        f"the model {_name(model)} is a {model_d}D network, but the data "
        f"{_datamodule_class(datamodule).__name__} gives {given}", key="model/data",
        hint=f"use {wanted} with this model (a 2D model=... picks its data by itself when "
             f"no data= is given), or a {data_d}D model ({others})")


def check_input_size(model: nn.Module, data: Any) -> None:
    """Raise ConfigError when a 3D network cannot take the configured input size (a kernel or
    pooling larger than what is left of the volume): one forward pass of zeros at that size."""
    import torch

    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module) or net_dims(model) != 3 or data_dims(data) != 3:
        return
    key = "data.patch_size" if data.get("patch_size") else "data.spatial_size"
    size = data.get("patch_size") or data.get("spatial_size")
    first = next((m for m in net.modules() if isinstance(m, nn.Conv3d)), None)
    if size is None or first is None or min(int(s) for s in size) >= 64:
        return  # 64 voxels or more per axis suit every network here: no pass needed
    training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros(1, first.in_channels, *[int(s) for s in size]))
    except RuntimeError as err:
        reason = str(err).split("\n", 1)[0][:160]
        raise ConfigError(f"{list(size)} is too small for {type(net).__name__} ({reason})",
                          key=key, hint=f"give {key} a larger size (e.g. 32 or 64 per axis), "
                                        "or choose another model") from err
    finally:
        net.train(training)
