"""The template space: nilearn's MNI152 T1 and its brain mask on BraTS's 1 mm 240x240x155 grid.

The template is the MNI152 2009a symmetric T1 (skull-stripped) that ships in nilearn's wheel:
nothing is downloaded. Its brain mask is nilearn's (``load_mni152_brain_mask``: T1 > 0.2).
The grid's voxel centres lie on the template's own (whole mm), x -120..119, y -137..102,
z -72..82 (RAS mm): the atlas brain (x -72..72, y -107..73, z -72..82) centred left-right
and front-back and filling the 155 slices, as BraTS brains fill theirs. The template is
copied onto it without interpolation.
"""

from __future__ import annotations

from functools import lru_cache

import nibabel as nib
import numpy as np
from scipy import ndimage

from radiogenomics.data.synthetic.anatomy import TEMPLATE_NAME, template_dir
from radiogenomics.data.volume import Volume
from radiogenomics.errors import DataError

BRATS_SHAPE: tuple[int, int, int] = (240, 240, 155)
BRATS_ORIGIN_MM = np.array([-120.0, -137.0, -72.0])
"""RAS mm of the centre of voxel (0, 0, 0) of the template grid."""
BRAIN_THRESHOLD = 0.2
"""nilearn's threshold on the T1 (scaled to [0, 1]) for its MNI152 brain mask."""


def template_affine() -> np.ndarray:
    """Voxel -> RAS mm affine of the template grid (1 mm, axis-aligned)."""
    affine = np.eye(4)
    affine[:3, 3] = BRATS_ORIGIN_MM
    return affine


@lru_cache(maxsize=1)
def load_template() -> tuple[Volume, Volume]:
    """The MNI152 T1 (in [0, 1]) and its brain mask (uint8 as float) on the template grid."""
    path = template_dir() / TEMPLATE_NAME.format("t1")
    if not path.is_file():
        raise DataError("the MNI152 template that nilearn ships is missing", path=path,
                        hint="reinstall nilearn>=0.10 (pip install --force-reinstall nilearn)")
    image = nib.load(path)
    t1 = np.asarray(image.dataobj, dtype=np.float32) / 255.0
    index = np.linalg.inv(image.affine) @ template_affine()
    on_grid = ndimage.affine_transform(t1, index[:3, :3], index[:3, 3], output_shape=BRATS_SHAPE,
                                       order=0, mode="constant", cval=0.0)
    affine = template_affine()
    return (Volume.from_array(on_grid, affine, "axial"),
            Volume.from_array(on_grid > BRAIN_THRESHOLD, affine, "axial"))


@lru_cache(maxsize=4)
def brain_points(step: int = 4) -> np.ndarray:
    """Homogeneous RAS positions (n, 4) of every `step`-th voxel of the atlas brain mask."""
    _, mask = load_template()
    index = np.argwhere(mask.array[::step, ::step, ::step] > 0) * step
    return np.c_[index @ mask.affine[:3, :3].T + mask.affine[:3, 3], np.ones(len(index))]

