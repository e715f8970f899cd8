"""Per-patient summary of repeated stochastic predictions (TTA, MC dropout, ensembles)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Forward = Callable[[torch.Tensor], torch.Tensor]
"""(B, C, X, Y, Z) images -> (B, K) probabilities (K = 1: positive class of a binary target)."""


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
    if p.size == 1:
        p = np.array([p[0], 1.0 - p[0]])
    p = np.clip(p, 1e-12, 1.0)
    return float(-(p * np.log2(p)).sum())


def summarise(samples: torch.Tensor, method: str) -> UncertaintySummary:
    """Summary of (N, K) probability samples."""
    values = samples.detach().double().cpu().numpy().reshape(samples.shape[0], -1)
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
    return UncertaintySummary(method, len(values), mean, std, predictive_entropy(mean))
