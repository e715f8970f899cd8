"""A patient's registration to template space: saved, read back, and used to map images.

`Registration` holds, for each series, its native geometry (the RAS grid the DICOM reader
returns) and the 4x4 RAS mm transform ``native_from_template`` (template world -> the
series' scanner world). `to_template` brings a native image into template space, `to_native`
brings any template-space output (mask, map) back onto a series' own voxels: both sample the
target grid once through the saved matrix, so a mask goes back exactly where it came from.

On disk (`save`, `load`): ``registration.json`` (everything, RAS) and one ITK transform file
per series, ``<series>_native_from_template.tfm`` (the same affine in ITK's LPS convention,
template -> native, as ITK's resampling and ANTs expect it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from radiogenomics.data.volume import Volume
from radiogenomics.files import atomic_write

REGISTRATION_FILE = "registration.json"
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
"""RAS <-> LPS (ITK's physical space): its own inverse."""


@dataclass(frozen=True)
class SeriesGeometry:
    """Where one series' voxels lie (RAS) and how template space maps into its world."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    native_from_template: np.ndarray
    source: str = ""


@dataclass
class Registration:
    """The registration of one patient's series to the template grid."""

    patient: str
    template_shape: tuple[int, int, int]
    template_affine: np.ndarray
    series: dict[str, SeriesGeometry] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def resample(array: np.ndarray, affine: np.ndarray, shape: tuple[int, ...],
             target_affine: np.ndarray, source_from_target: np.ndarray,
             order: int = 1) -> np.ndarray:
    """`array` (voxel -> world `affine`) sampled at each voxel of the grid (`shape`,
    `target_affine`), whose world points map into the array's world by `source_from_target`;
    order 0 (nearest) for labels and masks, 1 (linear) for images. Outside is 0."""
    index = np.linalg.inv(affine) @ source_from_target @ target_affine
    return ndimage.affine_transform(np.asarray(array), index[:3, :3], index[:3, 3],
                                    output_shape=tuple(shape), order=order, mode="constant",
                                    cval=0.0)


def to_template(volume: Volume, registration: Registration, series: str,
                order: int = 1) -> np.ndarray:
    """A native image of `series` on the template grid (template_affine)."""
    geometry = registration.series[series]
    return resample(volume.array, volume.affine, registration.template_shape,
                    registration.template_affine, geometry.native_from_template, order)


def to_native(array: np.ndarray, affine: np.ndarray, registration: Registration, series: str,
              order: int = 0) -> Volume:
    """A template-space image (`array`, voxel -> template world `affine`: the template grid
    or any other, such as a BraTS-layout NIfTI's) on the native voxels of `series`."""
    geometry = registration.series[series]
    native = resample(array, affine, geometry.shape, geometry.affine,
                      np.linalg.inv(geometry.native_from_template), order)
    return Volume.from_array(native, geometry.affine)


def itk_transform_text(native_from_template: np.ndarray) -> str:
    """The ITK ``.tfm`` text of a RAS template -> native affine (in LPS, as ITK reads it)."""
    lps = LPS @ native_from_template @ LPS
    parameters = [*lps[:3, :3].ravel(), *lps[:3, 3]]
    return ("#Insight Transform File V1.0\n#Transform 0\n"
            "Transform: AffineTransform_double_3_3\n"
            f"Parameters: {' '.join(repr(float(p)) for p in parameters)}\n"
            "FixedParameters: 0 0 0\n")


def tfm_name(series: str) -> str:
    """File name of a series' ITK transform."""
    return f"{series}_native_from_template.tfm"


def save(registration: Registration, folder: str | Path) -> Path:
    """Write ``registration.json`` and one ``.tfm`` per series into `folder`; its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "patient": registration.patient,
        "template_shape": list(registration.template_shape),
        "template_affine": registration.template_affine.tolist(),
        "series": {name: {"shape": list(g.shape), "affine": g.affine.tolist(),
                          "native_from_template": g.native_from_template.tolist(),
                          "source": g.source, "itk_transform": tfm_name(name)}
                   for name, g in registration.series.items()},
        **registration.details,
    }
    for name, geometry in registration.series.items():
        with atomic_write(folder / tfm_name(name)) as tmp:
            tmp.write_text(itk_transform_text(geometry.native_from_template))
    with atomic_write(folder / REGISTRATION_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return folder / REGISTRATION_FILE


def load(path: str | Path) -> Registration:
    """A registration saved by `save` (``registration.json`` or its folder)."""
    path = Path(path)
    record = json.loads((path / REGISTRATION_FILE if path.is_dir() else path).read_text())
    series = {name: SeriesGeometry(tuple(s["shape"]), np.array(s["affine"]),
                                   np.array(s["native_from_template"]), s.get("source", ""))
              for name, s in record.pop("series").items()}
    return Registration(record.pop("patient"), tuple(record.pop("template_shape")),
                        np.array(record.pop("template_affine")), series, record)
