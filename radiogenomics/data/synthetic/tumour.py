"""A glioma in patient world space: irregular core, necrosis, enhancing rim and oedema.

Sub-regions follow BraTS 2021 labels: 1 necrotic / non-enhancing core, 2 oedema,
4 enhancing tumour. HGG: necrotic core inside an enhancing rim. LGG: a non-enhancing
core (no necrosis) that enhances, in patches, only in a quarter of patients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from .anatomy import Template, Warp, probe, rotation
from .fields import SmoothField, broadcast_axes, grid_axes

EDGE_MM = 0.7
"""Width of the soft tumour boundaries (partial volume)."""


@dataclass
class Tumour:
    """Random geometry of one tumour; render it on any grid with `tumour_maps`."""

    grade: int
    centre: np.ndarray
    orientation: np.ndarray
    radii: np.ndarray  # semi-axes of the tumour core, mm
    necrosis: float  # radius of the necrotic core / radius of the core (0: none)
    oedema: float  # extent of the oedema / radius of the core
    enhancing: bool
    shape: SmoothField  # lobulation of the core
    oedema_shape: SmoothField
    texture: SmoothField  # [enhancing patches (LGG), intensity texture]

    @property
    def radius(self) -> float:
        """Geometric-mean radius of the core, mm."""
        return float(np.prod(self.radii) ** (1 / 3))


def draw_tumour(rng: np.random.Generator, grade: int, warp: Warp, template: Template) -> Tumour:
    """Size, shape and place (in white matter, away from the surface) of a tumour."""
    radius = rng.uniform(11.0, 22.0) if grade else rng.uniform(9.0, 20.0)
    radii = radius * rng.uniform(0.75, 1.25, size=3)
    radii *= radius / np.prod(radii) ** (1 / 3)
    necrosis = rng.uniform(0.35, 0.7) if grade else 0.0
    oedema = rng.uniform(1.4, 2.2) if grade else rng.uniform(1.15, 1.6)
    enhancing = bool(grade) or rng.random() < 0.25
    candidates = rng.uniform([-65.0, -95.0, -35.0], [65.0, 65.0, 70.0], size=(128, 3))
    wm, depth = probe(warp, template, candidates)
    good = np.flatnonzero((wm > 0.5) & (depth > 0.5 * radius + 6.0))
    centre = candidates[good[0] if good.size else int(np.argmax(wm * depth))]
    half = oedema * radius * 1.6 + 10.0
    low, high = centre - half, centre + half
    return Tumour(
        grade=grade,
        centre=centre,
        orientation=rotation(rng.uniform(-np.pi, np.pi, size=3)),
        radii=radii,
        necrosis=necrosis,
        oedema=oedema,
        enhancing=enhancing,
        shape=SmoothField(rng, low, high, spacing=max(6.0, 0.5 * radius)),
        oedema_shape=SmoothField(rng, low, high, spacing=12.0),
        texture=SmoothField(rng, low, high, spacing=5.0, components=2),
    )


def tumour_maps(
    tumour: Tumour, tissues: dict[str, np.ndarray], affine: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Soft fractions {ncr, net, ed, et}, the BraTS label map and a texture field on a grid.

    `tissues` are the patient's maps on the grid (`brain` and `wm` are used).
    """
    brain, wm = tissues["brain"], tissues["wm"]
    shape = brain.shape
    axes = grid_axes(shape, affine)
    relative = [c - centre for c, centre in zip(broadcast_axes(axes), tumour.centre)]
    distance = np.zeros(shape, np.float32)
    for direction, radius in zip(tumour.orientation.T, tumour.radii):
        along = sum(float(d) * r for d, r in zip(direction, relative))
        distance += (along / radius) ** 2
    distance = np.sqrt(distance)
    rho = distance * np.exp(0.18 * tumour.shape.on_grid(axes)[0])
    rho_oedema = distance * np.exp(0.25 * tumour.oedema_shape.on_grid(axes)[0])
    patches, texture = tumour.texture.on_grid(axes)

    sharpness = tumour.radius / EDGE_MM
    core = expit((1.0 - rho) * sharpness)
    reach = tumour.oedema * (0.75 + 0.5 * np.clip(wm / np.maximum(brain, 1e-3), 0, 1))
    oedema = np.clip(np.maximum(expit((reach - rho_oedema) * sharpness), core) - core, 0, 1)
    inner = expit((tumour.necrosis - rho) * sharpness) if tumour.necrosis > 0 else 0 * core
    enhancing = np.ones_like(core) if tumour.grade else expit((patches - 1.0) * 4.0)
    enhancing = enhancing * float(tumour.enhancing)

    fractions = {
        "ncr": inner * brain,
        "net": (core - inner) * (1 - enhancing) * brain,
        "ed": oedema * brain,
        "et": (core - inner) * enhancing * brain,
    }
    in_brain = brain > 0.5
    seg = np.zeros(shape, np.uint8)
    seg[in_brain & (oedema + core > 0.5)] = 2
    seg[in_brain & (core > 0.5)] = 1
    seg[in_brain & (core > 0.5) & (inner < 0.5) & (enhancing > 0.5)] = 4
    return {k: v.astype(np.float32) for k, v in fractions.items()}, seg, texture
