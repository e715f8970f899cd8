"""Near-duplicate scans: one scan under two patient ids, found by coarse fingerprints.

A preprocessed volume is averaged down to ``GRID``³ blocks per channel and z-scored (an
intensity scale or offset changes nothing); the cohort's mean fingerprint (what every brain
shares: the template anatomy, the field of view) is subtracted, and two scans are compared by
the correlation of what is left. A re-export of one scan (noise, rescaled intensities)
correlates above 0.95; distinct patients of the synthetic cohort at most about 0.5 (50
patients); a duplicate shifted by a voxel falls to about 0.8 and is missed at the default.
Thresholding the residual into bits (a perceptual hash) was tried and rejected: background
blocks sit at the threshold and flip under noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from radiogenomics.audit.checks import FAIL, PASS, SKIP, Partition, Verdict, leaking_pairs

GRID = 8
"""Blocks along each axis of a fingerprint: 8³ = 512 numbers per channel."""
DUPLICATE_CORRELATION = 0.9
"""Correlation of fingerprints from which two volumes count as one scan."""


def coarse(volume: np.ndarray, grid: int = GRID) -> np.ndarray:
    """A ``(C, X, Y, Z)`` volume averaged into ``grid``³ blocks per channel, each channel's
    blocks z-scored, flattened."""
    tensor = torch.as_tensor(np.asarray(volume, dtype=np.float32))
    blocks = torch.nn.functional.adaptive_avg_pool3d(tensor, grid).reshape(len(tensor), -1)
    spread = blocks.std(dim=1, keepdim=True).clamp(min=1e-6)
    return ((blocks - blocks.mean(dim=1, keepdim=True)) / spread).reshape(-1).numpy()


def fingerprints(volumes: Mapping[str, np.ndarray], grid: int = GRID) -> np.ndarray:
    """One row per volume (in the order of `volumes`): its coarse blocks minus the mean's."""
    blocks = np.stack([coarse(volume, grid) for volume in volumes.values()])
    return blocks - blocks.mean(axis=0) if len(blocks) > 2 else blocks


def similarities(rows: np.ndarray) -> np.ndarray:
    """The correlation of every pair of fingerprints (a square matrix; 0 for a flat one)."""
    if len(rows) < 2:
        return np.ones((len(rows), len(rows)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(np.corrcoef(rows), nan=0.0)


def near_duplicates(ids: list[str], similarity: np.ndarray,
                    threshold: float = DUPLICATE_CORRELATION) -> list[tuple[str, str, float]]:
    """Pairs ``(a, b, correlation)`` of different ids whose fingerprints correlate at least
    `threshold`, closest first."""
    first, second = np.triu_indices(len(ids), k=1)
    close = similarity[first, second] >= threshold
    pairs = [(ids[i], ids[j], float(similarity[i, j]))
             for i, j in zip(first[close], second[close])]
    return sorted(pairs, key=lambda pair: -pair[2])


def _across_parts(ids: list[str], partitions: Sequence[Partition]) -> np.ndarray:
    """Square boolean matrix: the two patients are in different parts of some partition."""
    across = np.zeros((len(ids), len(ids)), dtype=bool)
    for partition in partitions:
        homes = {pid: "/".join(sorted(parts)) for pid, parts in partition.part_of().items()}
        number = {home: code for code, home in enumerate(sorted(set(homes.values())), 1)}
        codes = np.array([number[homes[pid]] if pid in homes else 0 for pid in ids])
        known = codes != 0
        across |= (codes[:, None] != codes[None, :]) & known[:, None] & known[None, :]
    return across


def check_near_duplicates(volumes: Mapping[str, np.ndarray], partitions: Sequence[Partition],
                          threshold: float = DUPLICATE_CORRELATION) -> Verdict:
    """No scan in two parts under two ids: near-duplicate pairs split between parts fail."""
    if len(volumes) < 2:
        return Verdict(SKIP, "near-duplicates", "fewer than two volumes to compare")
    ids = list(volumes)
    similarity = similarities(fingerprints(volumes))
    pairs = near_duplicates(ids, similarity, threshold)
    leaks = leaking_pairs([(a, b) for a, b, _ in pairs], partitions)
    if leaks:
        shown = "; ".join(where for _, _, where in leaks[:3])
        return Verdict(FAIL, "near-duplicates", f"{len(leaks)} pair(s) of near-identical scans "
                       f"under two ids in two parts ({shown}; fingerprints correlate >= "
                       f"{threshold}) -> remove the duplicate patient, or keep both ids in one "
                       "part")
    split = similarity[_across_parts(ids, partitions)]
    closest = f"; the closest pair across parts correlates {split.max():.2f}" if split.size else ""
    together = f"; {len(pairs)} near-identical pair(s) within one part" if pairs else ""
    return Verdict(PASS, "near-duplicates", f"no near-identical scans in two parts "
                   f"({len(ids)} volumes{closest}{together}; threshold {threshold})")
