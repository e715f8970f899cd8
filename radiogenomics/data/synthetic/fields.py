"""Smooth random fields defined in world millimetres, and sampling of volumes at world points.

Fields are functions of world position, so a patient's anatomy does not depend on the grid
it is rendered on (NIfTI grid, DICOM series, any `size`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


class SmoothField:
    """Random values on a lattice of control points, interpolated by a normalised Gaussian.

    The field has roughly unit standard deviation and varies over about `spacing` mm.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        low: Sequence[float],
        high: Sequence[float],
        spacing: float,
        components: int = 1,
    ) -> None:
        self.nodes = [np.arange(lo, hi + spacing / 2, spacing) for lo, hi in zip(low, high)]
        shape = (components, *(len(n) for n in self.nodes))
        self.values = rng.standard_normal(shape)
        self.sigma = spacing
        offsets = np.arange(-6, 7) * spacing
        w = np.exp(-0.5 * (offsets / self.sigma) ** 2)
        self.values /= (np.sqrt((w**2).sum()) / w.sum()) ** 3

    def _weights(self, axis: int, coords: np.ndarray) -> np.ndarray:
        d2 = ((coords[:, None] - self.nodes[axis][None, :]) / self.sigma) ** 2
        w = np.exp(-0.5 * (d2 - d2.min(axis=1, keepdims=True)))
        return w / w.sum(axis=1, keepdims=True)

    def on_grid(self, axes: Sequence[np.ndarray]) -> np.ndarray:
        """Values on the separable grid of world coordinates `axes` -> (components, nx, ny, nz)."""
        wx, wy, wz = (self._weights(a, np.asarray(c, float)) for a, c in enumerate(axes))
        out = np.tensordot(self.values, wz, axes=([3], [1]))  # (c, X, Y, nz)
        out = np.tensordot(out, wy, axes=([2], [1]))  # (c, X, nz, ny)
        out = np.tensordot(out, wx, axes=([1], [1]))  # (c, nz, ny, nx)
        out = out.transpose(0, 3, 2, 1)
        return out.astype(np.float32)

    def at(self, points: np.ndarray) -> np.ndarray:
        """Values at world points (n, 3) -> (components, n)."""
        wx, wy, wz = (self._weights(a, points[:, a]) for a in range(3))
        return np.einsum("cabz,na,nb,nz->cn", self.values, wx, wy, wz, optimize=True)


def grid_axes(shape: Sequence[int], affine: np.ndarray) -> list[np.ndarray]:
    """World coordinate of each index along each axis of an axis-aligned grid."""
    return [affine[a, a] * np.arange(shape[a]) + affine[a, 3] for a in range(3)]


def broadcast_axes(axes: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Grid axes reshaped to (n, 1, 1), (1, n, 1), (1, 1, n) float32 arrays."""
    shapes = ([-1, 1, 1], [1, -1, 1], [1, 1, -1])
    return [np.asarray(c, np.float32).reshape(shape) for c, shape in zip(axes, shapes)]


def sample(volume: np.ndarray, affine: np.ndarray, world: np.ndarray, order: int = 1) -> np.ndarray:
    """Values of `volume` (voxel -> mm `affine`) at world points (3, ...); 0 outside."""
    inverse = np.linalg.inv(affine)
    flat = world.reshape(3, -1)
    idx = inverse[:3, :3] @ flat + inverse[:3, 3:4]
    values = ndimage.map_coordinates(volume, idx, order=order, mode="constant", cval=0.0)
    return values.reshape(world.shape[1:]).astype(np.float32)


def bias_coefficients(rng: np.random.Generator, strength: float = 0.08) -> np.ndarray:
    """Coefficients of a smooth log-bias polynomial (degree 2 in world position / 100 mm)."""
    return rng.normal(0.0, strength, size=9)


def bias_field(coefficients: np.ndarray, axes: Sequence[np.ndarray]) -> np.ndarray:
    """Multiplicative bias exp(poly(x, y, z)) on the axis-aligned grid with world `axes`."""
    x, y, z = (c / 100.0 for c in broadcast_axes(axes))
    terms = (x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
    log_bias = sum(c * t for c, t in zip(coefficients.astype(np.float32), terms))
    return np.exp(log_bias)


def resample(
    volume: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int],
    target_affine: np.ndarray,
    order: int = 1,
) -> np.ndarray:
    """`volume` (voxel -> mm `affine`) resampled onto the grid (`shape`, `target_affine`)."""
    transform = np.linalg.inv(affine) @ target_affine
    matrix, offset = transform[:3, :3], transform[:3, 3]
    if np.allclose(matrix, np.diag(np.diag(matrix))):
        matrix = np.diag(matrix)  # axis-aligned: scipy's much faster zoom-and-shift path
    return ndimage.affine_transform(
        volume, matrix, offset, output_shape=tuple(shape), order=order, mode="constant", cval=0.0
    )


def rician(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the values plus complex Gaussian noise of std `sigma`."""
    real = clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    return np.sqrt(real * real + imaginary * imaginary)
