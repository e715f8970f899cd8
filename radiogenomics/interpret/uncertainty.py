"""Summaries of repeated stochastic predictions (TTA, MC dropout, ensembles): per patient for
classifiers, voxel by voxel for segmenters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
"""(B, C, X, Y, Z) images -> (B, K) probabilities (K = 1: positive class of a binary target), or
(B, K, X, Y, Z) probability maps of a segmenter."""


@dataclass
class UncertaintySummary:
    """Mean and spread of N probability samples of one patient, and the predictive entropy."""

    method: str
    samples: int
    mean: np.ndarray
    std: np.ndarray
    entropy: float
    """Entropy of the mean prediction in bits: 0 certain, 1 (binary) a coin toss."""


def predictive_entropy(probabilities: np.ndarray) -> float:
    """Entropy in bits of a binary (K = 1, positive class) or K-class probability vector."""
    p = np.asarray(probabilities, dtype=float).ravel()
    return float(voxel_entropy(p, exclusive=p.size > 1))


def summarise(samples: torch.Tensor, method: str) -> UncertaintySummary:
    """Summary of (N, K) probability samples."""
    values = samples.detach().double().cpu().numpy().reshape(samples.shape[0], -1)
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
    return UncertaintySummary(method, len(values), mean, std, predictive_entropy(mean))


def voxel_entropy(mean: np.ndarray, exclusive: bool) -> np.ndarray:
    """Entropy in bits of (K, X, Y, Z) mean probabilities, voxel by voxel.

    `exclusive`: the K channels are one softmax over classes (entropy of that distribution,
    at most log2 K); else they are K independent sigmoid regions (e.g. ET, TC, WT), and the
    voxel's entropy is the mean of their binary entropies, in [0, 1].
    """
    p = np.clip(np.asarray(mean, dtype=np.float64), 1e-12, 1.0)
    if exclusive:
        return -(p * np.log2(p)).sum(axis=0)
    q = np.clip(1.0 - p, 1e-12, 1.0)
    return -(p * np.log2(p) + q * np.log2(q)).mean(axis=0)


@dataclass
class VoxelUncertainty:
    """Voxel-wise mean and spread of N probability maps, and the predictive entropy."""

    method: str
    samples: int
    mean: np.ndarray
    """(K, X, Y, Z) mean probability of each channel."""
    std: np.ndarray
    """(K, X, Y, Z) standard deviation of each channel over the samples."""
    entropy: np.ndarray
    """(X, Y, Z) entropy of the mean in bits (see `voxel_entropy`)."""


class VoxelStatistics:
    """Running mean and standard deviation of probability maps, added a few at a time.

    Only the sums are kept, so an ensemble of many members times many samples costs the
    memory of two maps.
    """

    def __init__(self) -> None:
        self.count = 0
        self.total: np.ndarray | None = None
        self.squares: np.ndarray | None = None

    def add(self, samples: torch.Tensor) -> None:
        """(N, K, X, Y, Z) probability samples."""
        values = samples.detach().double().cpu().numpy()
        total, squares = values.sum(axis=0), np.square(values).sum(axis=0)
        if self.total is None:
            self.total, self.squares = total, squares
        else:
            self.total += total
            self.squares += squares
        self.count += len(values)

    def summary(self, method: str, exclusive: bool) -> VoxelUncertainty:
        """Mean, standard deviation (N - 1) and entropy of every sample added so far."""
        if self.total is None or self.squares is None:
            raise ValueError("no sample was added")
        n = self.count
        mean = self.total / n
        variance = (self.squares - n * np.square(mean)) / max(n - 1, 1)
        std = np.sqrt(np.clip(variance, 0.0, None))
        return VoxelUncertainty(method, n, mean.astype(np.float32), std.astype(np.float32),
                                voxel_entropy(mean, exclusive).astype(np.float32))
