"""2D networks on a preprocessed volume: its slices across one axis, as a batch, and back."""

from __future__ import annotations

import torch


def to_slices(volume: torch.Tensor, axis: int) -> torch.Tensor:
    """(C, X, Y, Z) volume -> (N, C, h, w) batch of its slices across spatial `axis` (0-2)."""
    return volume.movedim(axis + 1, 0)


def from_slices(slices: torch.Tensor, axis: int) -> torch.Tensor:
    """(N, C, h, w) per-slice maps -> (C, X, Y, Z) volume: the inverse of `to_slices`."""
    return slices.movedim(0, axis + 1)
