"""Monte-Carlo dropout: dropout left on at test time, T stochastic passes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from radiogenomics.data.errors import RadiogenomicsError
from radiogenomics.interpret.uncertainty import Forward


def dropout_layers(net: nn.Module) -> list[nn.Module]:
    """The dropout layers of `net` that drop something (p > 0)."""
    return [m for m in net.modules() if isinstance(m, _DropoutNd) and m.p > 0]


@contextmanager
def dropout_active(net: nn.Module) -> Iterator[None]:
    """Switch the dropout layers to training mode (all else stays in eval), then back."""
    layers = dropout_layers(net)
    modes = [layer.training for layer in layers]
    try:
        for layer in layers:
            layer.train()
        yield
    finally:
        for layer, mode in zip(layers, modes):
            layer.train(mode)


class MCDropoutUncertainty:
    """Probabilities of `samples` passes with dropout on; needs a net with dropout."""

    name = "mc_dropout"

    def __init__(self, samples: int = 10, seed: int = 0) -> None:
        if samples < 2:
            raise RadiogenomicsError(f"MC dropout needs at least 2 samples, got {samples} -> "
                                     "set uncertainty.samples to 2 or more")
        self.samples = samples
        self.seed = seed

    def check(self, net: nn.Module, voxelwise: bool = False) -> None:
        """Refuse a net without dropout: its T passes would all be the same."""
        if not dropout_layers(net):
            raise RadiogenomicsError(
                f"MC dropout refused: {type(net).__name__} has no dropout layer with p > 0, so "
                "all passes would give the same prediction -> train with dropout (e.g. "
                "model.net.dropout=0.2) or use uncertainty=tta")

    def __call__(self, forward: Forward, net: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """(samples, K) probabilities of the (C, X, Y, Z) `image`."""
        self.check(net)
        devices = [image.device.index or 0] if image.is_cuda else []
        with dropout_active(net), torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.seed)
            return torch.cat([forward(image[None]) for _ in range(self.samples)])

    def voxel_samples(self, forward: Forward, net: nn.Module, image: torch.Tensor
                      ) -> torch.Tensor:
        """(samples, K, X, Y, Z) probability maps of the (C, X, Y, Z) `image` (a segmenter)."""
        return self(forward, net, image)
