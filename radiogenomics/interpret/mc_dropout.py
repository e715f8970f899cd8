"""Monte-Carlo dropout: dropout left on at test time, T stochastic passes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from radiogenomics.errors import RadiogenomicsError
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
    """Probabilities of `samples` passes with dropout on, `batch_size` passes per forward call;
    needs a net with dropout."""

    name = "mc_dropout"

    def __init__(self, samples: int = 10, seed: int = 0, batch_size: int = 4) -> None:
        if samples < 2:
            raise RadiogenomicsError(f"MC dropout needs at least 2 samples, got {samples} -> "
                                     "set uncertainty.samples to 2 or more")
        if batch_size < 1:
            raise RadiogenomicsError(f"uncertainty.batch_size must be at least 1, got "
                                     f"{batch_size}")
        self.samples = samples
        self.seed = seed
        self.batch_size = batch_size

    def check(self, net: nn.Module, voxelwise: bool = False) -> None:
        """Refuse a net without dropout: its T passes would all be the same."""
        if not dropout_layers(net):
            raise RadiogenomicsError(
                f"MC dropout refused: {type(net).__name__} has no dropout layer with p > 0, so "
                "all passes would give the same prediction -> train with dropout (e.g. "
                "model.net.dropout=0.2) or use uncertainty=tta")

    def __call__(self, forward: Forward, net: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """(samples, K) probabilities of the (C, X, Y, Z) `image`.

        The passes run `batch_size` at a time as copies of the image in one batch: dropout
        draws its masks per sample, so each copy is an independent pass.
        """
        self.check(net)
        devices = [image.device.index or 0] if image.is_cuda else []
        sizes = [min(self.batch_size, self.samples - start)
                 for start in range(0, self.samples, self.batch_size)]
        with dropout_active(net), torch.random.fork_rng(devices=devices), torch.no_grad():
            torch.manual_seed(self.seed)
            return torch.cat([forward(image[None].expand(n, *image.shape).contiguous())
                              for n in sizes])

    def voxel_samples(self, forward: Forward, net: nn.Module, image: torch.Tensor
                      ) -> torch.Tensor:
        """(samples, K, X, Y, Z) probability maps of the (C, X, Y, Z) `image` (a segmenter)."""
        return self(forward, net, image)
