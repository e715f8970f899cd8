"""MRI series recognition data: slices labelled with their sequence and acquisition plane.

Labels come from the cohort itself: the sequence from the series' folder (canonical name),
the plane from the DICOM geometry (``Volume.plane``) with ``planes="native"``, or from the
plane each slice is cut in with ``planes="all"`` (any cohort, NIfTI included). Cohort,
patient-level splits and skipping are those of `MRIDataModule`; the cache holds, per
patient, a few normalised slices of every series.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import NormalizeIntensity, Resize
from torch.utils.data import Dataset

from radiogenomics.data.augment import augmentation
from radiogenomics.data.cache import CaseCache
from radiogenomics.data.case import SEQUENCES, Case
from radiogenomics.data.datamodule import MRIDataModule
from radiogenomics.data.readers import load_volume
from radiogenomics.data.slices import PLANE_AXIS
from radiogenomics.data.volume import Volume
from radiogenomics.errors import DataError

log = logging.getLogger(__name__)

SEQUENCE_CLASSES: tuple[str, ...] = SEQUENCES
"""Sequence classes, in class-index order."""

PLANE_CLASSES: tuple[str, ...] = ("axial", "coronal", "sagittal")
"""Plane classes, in class-index order."""

PLANE_MODES: tuple[str, ...] = ("native", "all")

SERIES_TARGET = "sequence"

_CACHE_VERSION = 2


@dataclass(frozen=True)
class SeriesSlicing:
    """How slices are cut from a series: their number per plane, size and planes."""

    slices_per_series: int = 8
    slice_size: tuple[int, int] = (64, 64)
    planes: str = "native"

    def __post_init__(self) -> None:
        if self.planes not in PLANE_MODES:
            raise ValueError(f"data.planes must be one of {PLANE_MODES}, not {self.planes!r}")


def acquisition_axis(volume: Volume) -> int:
    """RAS axis the series was acquired across (the stacking axis when the plane is unknown)."""
    return PLANE_AXIS.get(volume.plane, PLANE_AXIS["axial"])


FOREGROUND_FRACTION = 0.1
"""A slice is foreground when a voxel exceeds this fraction of the series' 99th percentile
(background air and the zeros of skull-stripped scans stay below it)."""


def foreground_extent(array: np.ndarray, axis: int) -> tuple[int, int]:
    """First and last index along ``axis`` of the slices that hold foreground."""
    threshold = FOREGROUND_FRACTION * np.percentile(array, 99)
    other = tuple(a for a in range(array.ndim) if a != axis)
    filled = np.flatnonzero((array > threshold).any(axis=other))
    return (int(filled[0]), int(filled[-1])) if filled.size else (0, array.shape[axis] - 1)


def cut_series(volume: Volume, axis: int, slicing: SeriesSlicing) -> np.ndarray:
    """``(n, 1, h, w)`` float32 slices across ``axis``, spread over the central 80 % of the
    head (the slices with foreground, so the empty margins of a series are never cut).

    The volume is z-scored over its nonzero voxels first, then each slice is resized to
    ``slicing.slice_size``.
    """
    first, last = foreground_extent(volume.array, axis)
    array = NormalizeIntensity(nonzero=True)(torch.from_numpy(volume.array)).numpy()
    positions = np.unique(np.round(first + np.linspace(0.1, 0.9, slicing.slices_per_series)
                                   * (last - first)).astype(int))
    slices = np.take(array, positions, axis=axis)
    slices = np.moveaxis(slices, axis, 0)
    resize = Resize(slicing.slice_size, mode="bilinear", anti_aliasing=True)
    resized = resize(torch.from_numpy(np.ascontiguousarray(slices)))
    return torch.as_tensor(resized).numpy()[:, None].astype(np.float32)


def series_examples(volume: Volume, sequence: str, slicing: SeriesSlicing
                    ) -> tuple[np.ndarray, list[int], list[int]]:
    """Slices of one series with their sequence and plane class indices."""
    if slicing.planes == "native":
        if volume.plane not in PLANE_CLASSES:
            raise DataError("the acquisition plane is unknown (no DICOM geometry)",
                            hint="set data.planes=all to label slices by the plane they are "
                                 "cut in")
        planes = [volume.plane]
    else:
        planes = list(PLANE_CLASSES)
    parts = [cut_series(volume, PLANE_AXIS[plane], slicing) for plane in planes]
    plane_labels = [PLANE_CLASSES.index(p) for p, part in zip(planes, parts) for _ in part]
    slices = np.concatenate(parts)
    return slices, [SEQUENCE_CLASSES.index(sequence)] * len(slices), plane_labels


class SeriesCache(CaseCache):
    """Per patient, the labelled slices of every series, stored under ``root``.

    An entry ``<id>-<key>/`` holds ``slices.npy`` (n, 1, h, w) and ``labels.json``; the
    key hashes the slicing and every source file's size and time. A series that cannot be
    read is left out with a warning; a patient with no usable series fails.
    """

    VERSION = _CACHE_VERSION
    DESCRIPTION = "cutting series"

    def __init__(self, root: str | Path, slicing: SeriesSlicing, sequences: Sequence[str]
                 ) -> None:
        super().__init__(root)
        self.slicing = slicing
        self.sequences = tuple(sequences)

    def sources(self, case: Case) -> dict[str, str]:
        return {s: case["images"][s] for s in self.sequences if s in case["images"]}

    def key_fields(self, case: Case) -> dict[str, Any]:
        return {"slicing": asdict(self.slicing)}

    def ready(self, entry: Path) -> bool:
        """Whether the entry folder is complete (renamed into place with its labels)."""
        return (entry / "labels.json").exists()

    def _read(self, entry: Path, mmap: bool = True) -> dict[str, Any]:
        """``slices`` (memory-mapped) and the per-slice ``sequence``, ``plane``, ``series``."""
        labels = json.loads((entry / "labels.json").read_text())
        return {"slices": np.load(entry / "slices.npy", mmap_mode="r" if mmap else None),
                **labels}

    def compute(self, case: Case) -> dict[str, Any]:
        slices, labels = [], {"sequence": [], "plane": [], "series": []}
        problems = []
        for sequence, path in self.sources(case).items():
            try:
                volume = load_volume(path, patient=case["id"])
                part, sequences, planes = series_examples(volume, sequence, self.slicing)
            except DataError as error:
                problems.append(f"{sequence}: {error}")
                continue
            slices.append(part)
            labels["sequence"] += sequences
            labels["plane"] += planes
            labels["series"] += [Path(path).name] * len(part)
        if not slices:
            raise DataError("no usable series: " + "; ".join(problems), patient=case["id"],
                            hint="check the series of this patient or exclude it")
        for problem in problems:
            log.warning("patient %s: series left out: %s", case["id"], problem)
        return {"slices": np.concatenate(slices).astype(np.float16), **labels}

    def _save(self, folder: Path, case: Case, result: dict[str, Any]) -> None:
        labels = {k: v for k, v in result.items() if k != "slices"}
        np.save(folder / "slices.npy", result["slices"])
        (folder / "labels.json").write_text(json.dumps(labels))


class SeriesSliceDataset(Dataset):
    """Items ``{"image": (1, h, w), "sequence": int, "plane": int, "id": patient, "series"}``.

    ``series`` names the slice's series within its patient (its folder or file name).
    """

    def __init__(self, cases: list[Case], cache: SeriesCache, transform: Any = None) -> None:
        self.cases = cases
        self.cache = cache
        self.transform = transform
        self.entries = [cache.load(case) for case in cases]
        self.index = [(number, row) for number, entry in enumerate(self.entries)
                      for row in range(len(entry["sequence"]))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, Any]:
        number, row = self.index[item]
        entry = self.entries[number]
        sample = {"image": torch.from_numpy(entry["slices"][row].astype(np.float32))}
        if self.transform is not None:
            # seeded from torch's RNG, as in CachedVolumeDataset: reproducible under seed_everything
            self.transform.set_random_state(seed=int(torch.randint(2**31, ()).item()))
            sample = self.transform(sample)
            sample["image"] = torch.as_tensor(sample["image"]).as_subclass(torch.Tensor)
        sample.update(id=self.cases[number]["id"], series=entry["series"][row],
                      sequence=entry["sequence"][row], plane=entry["plane"][row])
        return sample


class SeriesDataModule(MRIDataModule):
    """Slices of every series of every patient, labelled with sequence and plane.

    ``slices_per_series`` slices (per plane) of ``slice_size`` are cut from each series of
    ``sequences``; ``planes`` is ``native`` (the acquisition plane, from DICOM geometry) or
    ``all`` (each series cut in the three planes). Other arguments are `MRIDataModule`'s.
    """

    def __init__(self, layout: str, root: str, sequences: Sequence[str] = SEQUENCE_CLASSES,
                 slices_per_series: int = 8, slice_size: Sequence[int] = (64, 64),
                 planes: str = "native", **kwargs: Any) -> None:
        super().__init__(layout, root, target=SERIES_TARGET, sequences=sequences, **kwargs)
        unknown = sorted(set(self.sequences) - set(SEQUENCE_CLASSES))
        if unknown:
            raise ValueError(f"data.sequences {unknown} are not sequence classes "
                             f"{list(SEQUENCE_CLASSES)}")
        slicing = SeriesSlicing(slices_per_series, tuple(slice_size), planes)
        self.cache = SeriesCache(self.cache.root / "series", slicing, self.sequences)

    @property
    def num_channels(self) -> int:
        return 1

    def _dataset(self, cases: list[Case], train: bool) -> SeriesSliceDataset:
        return SeriesSliceDataset(cases, self.cache, augmentation(self.augment) if train else None)
