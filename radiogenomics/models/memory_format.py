"""channels_last_3d memory format for 3D nets (``model.channels_last=true``).

Storing 5D activations and conv weights channels-last lets cuDNN use its fastest 3D
convolution kernels with bf16 on recent GPUs (oneDNN on CPU gains too: a cnn3d training
step at 8x2x32^3 ran 1.1-1.2x faster on a 2-core CPU). Values do not change beyond float
round-off, only the layout in memory.
"""

from __future__ import annotations

import torch
from torch import nn


def channels_last_net(net: nn.Module) -> nn.Module:
    """`net` with its 5D parameters (3D conv weights) stored channels-last, in place."""
    return net.to(memory_format=torch.channels_last_3d)


def channels_last_input(x: torch.Tensor) -> torch.Tensor:
    """A 5D batch (B, C, X, Y, Z) stored channels-last; any other tensor unchanged."""
    return x.contiguous(memory_format=torch.channels_last_3d) if x.ndim == 5 else x
