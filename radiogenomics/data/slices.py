"""2D slices cut from the cached volumes, for 2D models (vgg16, attention_vgg, unet2d, ...).

The cohort, the patient-level split and the preprocessing cache are those of
`MRIDataModule`; only the items differ: ``slices_per_case`` slices of each patient in one
``plane``, chosen by ``selection``. Every item carries its patient ``id`` so that a model
can aggregate slice outputs into one prediction per patient. ``split_unit="slice"`` splits
the slices rather than the patients (the protocol of some published work, which inflates
scores): it is logged as a warning and `radiogenomics audit` fails it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from radiogenomics.data.augment import augmentation
from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.case import Case
from radiogenomics.data.cohorts import require_label
from radiogenomics.data.datamodule import SEGMENTATION_TARGET, MRIDataModule
from radiogenomics.errors import ConfigError, LabelError

log = logging.getLogger(__name__)

PLANE_AXIS: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
"""Spatial axis (RAS voxel order) that a slice of each plane is cut across."""

SELECTIONS: tuple[str, ...] = ("central", "brain_area", "tumour")
SPLIT_UNITS: tuple[str, ...] = ("patient", "slice")
"""What the train/validation split assigns: whole patients, or single slices."""


def cut(array: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Slice ``index`` of a channel-first ``(C, X, Y, Z)`` array in ``plane``: ``(C, h, w)``."""
    return np.take(array, index, axis=PLANE_AXIS[plane] + 1)


def select_slices(image: np.ndarray, seg: np.ndarray | None, plane: str, count: int,
                  selection: str) -> list[int]:
    """Indices (ascending) of the ``count`` slices of a ``(C, X, Y, Z)`` volume to serve.

    ``central``: the middle ``count`` slices. ``brain_area``: the slices with most nonzero
    voxels (the brain after normalisation). ``tumour``: the slices with most tumour voxels
    in ``seg``. Ties go to the slice nearer the centre.
    """
    axis = PLANE_AXIS[plane] + 1
    n_slices = image.shape[axis]
    count = min(count, n_slices)
    if selection == "central":
        start = (n_slices - count) // 2
        return list(range(start, start + count))
    if selection == "tumour":
        if seg is None:
            raise ValueError("selection='tumour' needs the tumour mask")
        voxels = np.asarray(seg) > 0
    else:
        voxels = (np.asarray(image) != 0).any(axis=0, keepdims=True)
    other = tuple(a for a in range(voxels.ndim) if a != axis)
    area = voxels.sum(axis=other)
    distance = np.abs(np.arange(n_slices) - (n_slices - 1) / 2)
    order = np.lexsort((distance, -area))
    return sorted(int(i) for i in order[:count])


def chosen_slices(cache: PreprocessCache, case: Case, plane: str, count: int,
                  selection: str) -> list[int]:
    """`select_slices` of a case's cached volume."""
    arrays = cache.load(case)
    return select_slices(arrays["image"], arrays.get("seg"), plane, count, selection)


class SliceDataset(Dataset):
    """The selected slices of each case, served from the preprocessing cache.

    Items: ``{"image": (C, h, w) float, "id", "slice"}`` plus ``"label"`` for a case-level
    target or ``"seg": (1, h, w) int64`` for the ``seg`` target. ``slices`` (patient id ->
    slice indices) serves those slices of the patients it names instead of selecting them.
    """

    def __init__(self, cases: list[Case], cache: PreprocessCache, target: str | None,
                 plane: str, slices_per_case: int, selection: str, transform: Any = None,
                 slices: Mapping[str, Sequence[int]] | None = None) -> None:
        self.cases = cases
        self.cache = cache
        self.target = target
        self.plane = plane
        self.transform = transform
        self.index: list[tuple[int, int]] = []
        for number, case in enumerate(cases):
            chosen = (slices or {}).get(case["id"])
            if chosen is None:
                chosen = chosen_slices(cache, case, plane, slices_per_case, selection)
            self.index += [(number, position) for position in chosen]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict[str, Any]:
        number, position = self.index[item]
        case = self.cases[number]
        arrays = self.cache.load(case)
        image = cut(arrays["image"], self.plane, position).astype(np.float32)
        sample: dict[str, Any] = {"id": case["id"], "slice": position,
                                  "image": torch.from_numpy(image)}
        if self.target == SEGMENTATION_TARGET:
            seg = cut(arrays["seg"], self.plane, position).astype(np.int64)
            sample["seg"] = torch.from_numpy(seg)
        if self.transform is not None:
            # seeded from torch's RNG, as in CachedVolumeDataset: reproducible under seed_everything
            self.transform.set_random_state(seed=int(torch.randint(2**31, ()).item()))
            sample = self.transform(sample)
            sample["image"] = torch.as_tensor(sample["image"]).as_subclass(torch.Tensor)
            if "seg" in sample:
                sample["seg"] = torch.as_tensor(sample["seg"]).as_subclass(torch.Tensor).long()
        if self.target and self.target != SEGMENTATION_TARGET:
            value = case["labels"].get(self.target)
            sample["label"] = torch.tensor(-1 if value is None else value)
        return sample


class SliceDataModule(MRIDataModule):
    """`MRIDataModule` whose items are 2D slices of the cached volumes.

    ``spatial_size`` is the size of the cached volume: its two in-plane axes give the slice
    size (axial slices of ``[128, 128, 64]`` are 128x128). ``plane`` is ``axial``,
    ``coronal`` or ``sagittal``; ``selection`` is ``central``, ``brain_area`` or ``tumour``
    (the latter needs tumour masks, e.g. data=synthetic or data=brats, and uses them to
    choose the slices of validation and test patients too). ``split_unit`` is ``patient``
    (the patient-level split of every cohort) or ``slice``: the selected slices of the fold's
    patients are shuffled (``split_seed``) and one in ``n_folds`` validated, so slices of one
    patient are on both sides; held-out test patients (``test_split=test``) stay held out.
    """

    def __init__(self, *args: Any, plane: str = "axial", slices_per_case: int = 16,
                 selection: str = "brain_area", split_unit: str = "patient",
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if split_unit not in SPLIT_UNITS:
            raise ConfigError(f"must be one of {list(SPLIT_UNITS)}, not {split_unit!r}",
                              key="data.split_unit")
        self.split_unit = split_unit
        self.slice_split: dict[str, dict[str, list[int]]] | None = None
        """With ``split_unit=slice``: part (train, val) -> patient id -> its slices there."""
        if plane not in PLANE_AXIS:
            raise ValueError(f"data.plane must be one of {list(PLANE_AXIS)}, not {plane!r}")
        if selection not in SELECTIONS:
            raise ValueError(f"data.selection must be one of {list(SELECTIONS)}, "
                             f"not {selection!r}")
        if slices_per_case < 1:
            raise ValueError(f"data.slices_per_case must be at least 1, not {slices_per_case}")
        self.plane = plane
        self.slices_per_case = slices_per_case
        self.selection = selection
        if selection == "tumour" and not self.preprocess.with_seg:
            self.preprocess = dataclasses.replace(self.preprocess, with_seg=True)
            self.cache = PreprocessCache(self.cache.root, self.preprocess)

    def prepare_data(self) -> None:
        """As `MRIDataModule.prepare_data`, after checking that ``tumour`` has its masks."""
        generated_now = (self.synthetic is not None and self.layout == "synthetic"
                         and not (self.root / "cohort.json").exists())
        if self.selection == "tumour" and not generated_now:
            try:
                require_label(self._cohort("train"), SEGMENTATION_TARGET, self.layout)
            except LabelError as error:
                raise LabelError(
                    f"data.selection=tumour needs tumour masks: {error.reason}",
                    path=self.root,
                    hint="set data.selection=brain_area or central, or use a cohort with masks "
                         "(data=brats, data=synthetic)",
                ) from error
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        """As `MRIDataModule.setup`; with ``split_unit=slice``, the slices are split next."""
        fresh = not (self.train_cases or self.val_cases)
        super().setup(stage)
        if fresh and self.split_unit == "slice":
            self._split_slices()

    def _split_slices(self) -> None:
        """Validate fold ``fold`` of the fold's patients' slices, shuffled by ``split_seed``."""
        cases = sorted(self.train_cases + self.val_cases, key=lambda case: case["id"])
        items = [(case["id"], position) for case in cases for position in chosen_slices(
            self.cache, case, self.plane, self.slices_per_case, self.selection)]
        order = np.random.default_rng(self.split_seed).permutation(len(items))
        validated = set(np.array_split(order, self.n_folds)[self.fold].tolist())
        split: dict[str, dict[str, list[int]]] = {"train": defaultdict(list),
                                                  "val": defaultdict(list)}
        for number, (patient, position) in enumerate(items):
            split["val" if number in validated else "train"][patient].append(position)
        self.slice_split = {part: dict(patients) for part, patients in split.items()}
        self.train_cases = [c for c in cases if c["id"] in self.slice_split["train"]]
        self.val_cases = [c for c in cases if c["id"] in self.slice_split["val"]]
        if not self._has_test_split():
            self.test_cases = list(self.val_cases)
        both = len(set(self.slice_split["train"]) & set(self.slice_split["val"]))
        log.warning(
            "SLICE-LEVEL SPLIT (data.split_unit=slice): %d train and %d validation slices cut "
            "at random from the same %d patients (%d with slices on both sides). Validation "
            "and test scores of this run are inflated (by 30-55%% in Yagis et al., Sci Rep "
            "2021) and say nothing about new patients -> data.split_unit=patient for a score "
            "that does", len(items) - len(validated), len(validated), len(cases), both)

    def part_items(self) -> dict[str, list[tuple[str, int]]]:
        """The ``(patient, slice)`` items each part serves (``test`` when it is not ``val``)."""
        parts = {"train": (self.train_cases, True), "val": (self.val_cases, False)}
        if self._has_test_split():
            parts["test"] = (self.test_cases, False)
        items = {}
        for part, (cases, train) in parts.items():
            dataset = self._dataset(cases, train)
            items[part] = [(cases[number]["id"], position) for number, position in dataset.index]
        return items

    def _dataset(self, cases: list[Case], train: bool) -> SliceDataset:
        transform = None
        if train:
            transform = augmentation(self.augment, with_seg=self.target == SEGMENTATION_TARGET)
        slices = self.slice_split["train" if train else "val"] if self.slice_split else None
        return SliceDataset(cases, self.cache, self.target, self.plane, self.slices_per_case,
                            self.selection, transform, slices)
