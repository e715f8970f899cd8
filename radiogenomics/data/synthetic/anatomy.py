"""Per-patient brain anatomy: the MNI152 tissue templates shipped in nilearn's wheel, warped.

Each patient is the template seen through a random affine (small rotation, scaling,
translation) and a smooth elastic displacement, so no two brains are identical.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from radiogenomics.errors import DataError

from .fields import SmoothField, broadcast_axes, grid_axes, sample
from .settings import BRAIN_CENTRE_MM, FIELD_OF_VIEW_MIN_MM, FIELD_OF_VIEW_MM

TEMPLATE_NAME = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"

VESSEL_SHARE = 0.8
VESSEL_DEPTH_MM = 5.0
"""Share of the CSF compartment taken by cortical veins, venous sinuses and dura: most of it
at the brain surface, falling off with depth (they enhance on T1wCE; see `contrast`)."""


def template_dir() -> Path:
    """nilearn's bundled data folder, found without importing nilearn (slow to import)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "nilearn is not installed; its wheel ships the MNI152 templates",
            hint="pip install 'nilearn>=0.10'",
        )
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


@dataclass(frozen=True)
class Template:
    """Tissue probability maps in [0, 1] on the template grid (1 mm, RAS)."""

    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    depth: np.ndarray  # distance to the brain surface, mm, on a 2 mm grid
    affine: np.ndarray
    depth_affine: np.ndarray


def _load(kind: str) -> tuple[np.ndarray, np.ndarray]:
    path = template_dir() / TEMPLATE_NAME.format(kind)
    if not path.is_file():
        raise DataError(
            "the MNI152 template that nilearn ships is missing",
            path=path,
            hint="reinstall nilearn>=0.10 (pip install --force-reinstall nilearn)",
        )
    image = nib.load(path)
    return np.asarray(image.dataobj, dtype=np.float32) / 255.0, image.affine


def brain_points(template: Template, step: int = 4) -> np.ndarray:
    """Template world positions (n, 3) of every `step`-th brain voxel along each axis."""
    index = np.argwhere(template.brain[::step, ::step, ::step] > 0.5) * step
    return index @ template.affine[:3, :3].T + template.affine[:3, 3]


@lru_cache(maxsize=4)
def load_template(voxel_mm: float) -> Template:
    """The templates, smoothed to the resolution they will be sampled at (cached per process)."""
    t1, affine = _load("t1")
    brain = (t1 > 0).astype(np.float32)
    gm, wm = _load("gm")[0], _load("wm")[0]
    depth = ndimage.distance_transform_edt(brain[::2, ::2, ::2] > 0.5, sampling=2.0)
    depth_affine = affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    sigma = 0.42 * voxel_mm if voxel_mm > 1.2 else 0.5
    brain, gm, wm = (ndimage.gaussian_filter(m, sigma) for m in (brain, gm, wm))
    return Template(brain, gm, wm, depth.astype(np.float32), affine, depth_affine)


class Warp:
    """Maps patient world mm to template world mm: random affine plus elastic displacement.

    `in_template_space`: the patient world is template space, affinely aligned with the
    template as BraTS volumes are (`align_to_template`: only the elastic displacement's
    non-affine part is left); the affine drawn
    for the anatomy (its size, shape and orientation) is then `template_from_head`, which
    `pose.py` puts in the scanner's world. The same random draws either way.
    """

    def __init__(self, rng: np.random.Generator, in_template_space: bool = False) -> None:
        angles = np.deg2rad(rng.uniform(-8.0, 8.0, size=3))
        scale = rng.uniform(0.9, 1.1) * rng.uniform(0.97, 1.03, size=3)
        self.matrix = rotation(angles) @ np.diag(scale)
        shift = rng.uniform(-6.0, 6.0, size=3)
        self.offset = BRAIN_CENTRE_MM + shift - self.matrix @ BRAIN_CENTRE_MM
        self.template_from_head = np.eye(4)
        self.template_from_head[:3, :3], self.template_from_head[:3, 3] = self.matrix, self.offset
        if in_template_space:
            self.matrix, self.offset = np.eye(3), np.zeros(3)  # see align_to_template
        low, high = FIELD_OF_VIEW_MIN_MM, FIELD_OF_VIEW_MIN_MM + FIELD_OF_VIEW_MM
        self.elastic = SmoothField(rng, low, high, spacing=32.0, components=3)
        self.elastic_mm = rng.uniform(2.0, 4.0)

    def align_to_template(self, points: np.ndarray) -> None:
        """Choose the affine part so that, over `points` (n, 3; template world), the least-
        squares affine fit of the whole warp is the identity: the patient world is then
        template space, up to the elastic displacement's non-affine rest."""
        design = np.c_[points, np.ones(len(points))]
        fit, *_ = np.linalg.lstsq(design, self.elastic_mm * self.elastic.at(points).T,
                                  rcond=None)
        self.matrix, self.offset = np.eye(3) - fit[:3].T, -fit[3]

    def at(self, points: np.ndarray) -> np.ndarray:
        """Template position of patient world points (n, 3) -> (n, 3)."""
        moved = points @ self.matrix.T + self.offset
        return moved + self.elastic_mm * self.elastic.at(points).T

    def on_grid(self, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
        """Template position of every voxel of an axis-aligned grid -> (3, *shape)."""
        axes = grid_axes(shape, affine)
        out = self.elastic_mm * self.elastic.on_grid(axes)
        x, y, z = broadcast_axes(axes)
        for i, (a, b, c) in enumerate(self.matrix):
            out[i] += a * x + b * y + c * z + self.offset[i]
        return out


def rotation(angles: np.ndarray) -> np.ndarray:
    """Rotation matrix from angles (radians) about the x, y and z axes."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def tissue_maps(
    warp: Warp, template: Template, shape: tuple[int, ...], affine: np.ndarray
) -> dict[str, np.ndarray]:
    """Fractions of brain, CSF, surface vessels, GM and WM in each voxel of the patient grid."""
    template_mm = warp.on_grid(shape, affine)
    brain = np.clip(sample(template.brain, template.affine, template_mm), 0.0, 1.0)
    gm = sample(template.gm, template.affine, template_mm)
    wm = sample(template.wm, template.affine, template_mm)
    tissue = gm + wm
    scale = np.where(tissue > brain, brain / np.maximum(tissue, 1e-6), 1.0)
    gm, wm = gm * scale, wm * scale
    csf = np.clip(brain - gm - wm, 0.0, 1.0)
    depth = sample(template.depth, template.depth_affine, template_mm)
    vessel = csf * VESSEL_SHARE * np.exp(-depth / VESSEL_DEPTH_MM)
    return {"brain": brain, "csf": csf - vessel, "vessel": vessel, "gm": gm, "wm": wm}


def probe(warp: Warp, template: Template, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """White-matter fraction and depth below the brain surface (mm) at patient world points."""
    template_mm = warp.at(points).T
    wm = sample(template.wm, template.affine, template_mm)
    depth = sample(template.depth, template.depth_affine, template_mm)
    return wm, depth
