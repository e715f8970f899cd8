"""One LightningDataModule for every volumetric cohort (synthetic, RSNA, BraTS)."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from monai.transforms import Randomizable
from torch.utils.data import DataLoader, Dataset

from radiogenomics.data.augment import AugmentConfig, augmentation
from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.case import Case
from radiogenomics.data.cohorts import COHORTS, load_cohort, require_label
from radiogenomics.data.errors import CohortError
from radiogenomics.data.splits import load_or_create_splits
from radiogenomics.data.transforms import PreprocessConfig

log = logging.getLogger(__name__)

SEGMENTATION_TARGET = "seg"


class CachedVolumeDataset(Dataset):
    """Cases served from the preprocessing cache, with random augmentation on each draw."""

    def __init__(self, cases: list[Case], cache: PreprocessCache, target: str | None,
                 transform: Any = None) -> None:
        self.cases = cases
        self.cache = cache
        self.target = target
        self.transform = transform

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        arrays = self.cache.load(case)
        item: dict[str, Any] = {
            "id": case["id"],
            # copy the float16 bytes, then let torch widen them: ~7x faster than numpy's cast
            "image": torch.from_numpy(np.array(arrays["image"])).float(),
        }
        if "seg" in arrays:
            item["seg"] = torch.from_numpy(np.array(arrays["seg"])).long()
        if self.transform is not None:
            if isinstance(self.transform, Randomizable):
                # MONAI seeds transforms from OS entropy: seed them from torch's RNG instead, so
                # that seed_everything makes augmentation reproducible and resumable, and
                # DataLoader workers (seeded apart by torch) draw different augmentations
                self.transform.set_random_state(seed=int(torch.randint(2**31, ()).item()))
            item = self.transform(item)
            if isinstance(item, list):  # a patch cropper returns a list of one sample
                item = item[0]
            item["image"] = torch.as_tensor(item["image"]).as_subclass(torch.Tensor)
            if "seg" in item:
                item["seg"] = torch.as_tensor(item["seg"]).as_subclass(torch.Tensor).long()
        if self.target and self.target != SEGMENTATION_TARGET:
            value = case["labels"].get(self.target)
            item["label"] = torch.tensor(-1 if value is None else value)
        return item


class MRIDataModule(pl.LightningDataModule):
    """Cohort → patient-level split → cached deterministic transforms → augmentation → loaders.

    ``target`` is the label the model needs (``mgmt``, ``grade``, ``survival_class``,
    ``seg``); asking a cohort for a label it lacks raises an error naming a data config
    that has it. The test set is the cohort's labelled ``test`` split when
    ``test_split="test"``, or the fold's validation patients when ``test_split="val"``.
    """

    def __init__(
        self,
        layout: str,
        root: str,
        target: str = "mgmt",
        sequences: Sequence[str] = ("T1wCE",),
        spatial_size: Sequence[int] = (48, 48, 48),
        spacing: Sequence[float] | None = (2.0, 2.0, 2.0),
        slab: int | None = None,
        fold: int = 0,
        n_folds: int = 5,
        split_seed: int = 42,
        splits_file: str | None = None,
        test_split: str = "val",
        batch_size: int = 8,
        num_workers: int | None = None,
        prepare_workers: int | None = None,
        pin_memory: bool | None = None,
        cache_dir: str | None = None,
        augment: dict[str, Any] | None = None,
        patch_size: Sequence[int] | None = None,
        cohort_options: dict[str, Any] | None = None,
        synthetic: dict[str, Any] | None = None,
        on_error: str = "raise",
    ) -> None:
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if not 0 <= fold < n_folds:
            raise ValueError(f"data.fold={fold} is outside 0..{n_folds - 1} (data.n_folds)")
        self.layout = layout
        self.root = Path(root)
        self.target = target
        self.sequences = tuple(sequences)
        self.preprocess = PreprocessConfig(
            sequences=self.sequences,
            spacing=tuple(spacing) if spacing is not None else None,
            spatial_size=tuple(spatial_size),
            with_seg=target == SEGMENTATION_TARGET,
            slab=slab,
        )
        self.fold, self.n_folds, self.split_seed = fold, n_folds, split_seed
        self.splits_file = splits_file
        self.test_split = test_split
        self.batch_size = batch_size
        cpus = os.cpu_count() or 1
        self.num_workers = num_workers if num_workers is not None else min(4, cpus // 2)
        self.prepare_workers = prepare_workers if prepare_workers is not None else cpus
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.cache = PreprocessCache(cache_dir or self.root / ".cache", self.preprocess)
        self.augment = AugmentConfig(**augment) if augment else None
        if patch_size is not None and target != SEGMENTATION_TARGET:
            raise ValueError("data.patch_size crops training patches around the tumour mask: "
                             f"it needs target seg, not {target!r} -> set it to null")
        self.patch_size = tuple(patch_size) if patch_size is not None else None
        self.cohort_options = dict(cohort_options or {})
        self.synthetic = synthetic
        self.on_error = on_error
        self.skipped: dict[str, str] = {}
        self.splits: dict[str, Any] | None = None
        self.train_cases: list[Case] = []
        self.val_cases: list[Case] = []
        self.test_cases: list[Case] = []

    @property
    def num_channels(self) -> int:
        return len(self.sequences)

    def _cohort(self, split: str) -> list[Case]:
        # on_error=skip also skips (and reports) patients with missing folders or labels
        options = {"on_missing": self.on_error, **self.cohort_options}
        loader = COHORTS.get(self.layout)
        if loader is not None and "sequences" in inspect.signature(loader).parameters:
            # only the series the model reads must exist (a T1wCE model needs no FLAIR folder)
            options.setdefault("sequences", list(self.sequences))
        cohort = load_cohort(self.layout, self.root, split=split, **options)
        for patient, reason in cohort.skipped:
            self.skipped[patient] = reason
        return list(cohort.cases)

    def _has_test_split(self) -> bool:
        return self.test_split == "test"

    def prepare_data(self) -> None:
        """Generate the synthetic cohort if absent, then fill the preprocessing cache.

        Only the ``synthetic`` layout is ever generated: a real cohort's root is never written.
        """
        generate = self.synthetic is not None and self.layout == "synthetic"
        if generate:
            from radiogenomics.data.synthetic import generate_cohort

            if not (self.root / "cohort.json").exists():
                log.info("generating synthetic cohort in %s", self.root)
            # returns at once when the cohort exists with these settings; a cohort generated
            # with other settings is regenerated, any other content of the folder is an error
            generate_cohort(self.root, **{"replace_stale": True, **self.synthetic})
        cases = require_label(self._cohort("train"), self.target, self.layout)
        if self._has_test_split():
            cases += self._cohort("test")
        report = self.cache.prepare(cases, workers=self.prepare_workers)
        if report.prepared:
            log.info("preprocessing cache: %s", report.summary())
        self._handle_failures(report.failed)

    def _handle_failures(self, failed: dict[str, str]) -> None:
        if not failed:
            return
        listing = "\n".join(f"  {why}" for why in failed.values())
        if self.on_error == "raise":
            raise CohortError(
                f"{len(failed)} patient(s) could not be preprocessed:\n{listing}",
                path=self.root,
                hint="fix or exclude them (data.cohort_options.exclude) or set data.on_error=skip",
            )
        log.warning("skipping %d patient(s) that could not be preprocessed:\n%s",
                    len(failed), listing)
        self.skipped.update(failed)

    def _usable(self, cases: list[Case]) -> list[Case]:
        failed = {}
        usable = []
        for case in cases:
            if case["id"] in self.skipped:
                continue
            if not self.cache.has(case):
                failed[case["id"]] = f"[patient {case['id']}] not in the preprocessing cache"
                continue
            usable.append(case)
        self._handle_failures(failed)
        return usable

    def setup(self, stage: str | None = None) -> None:
        if self.train_cases or self.val_cases:
            return
        cases = self._usable(self._cohort("train"))
        if not cases:
            raise CohortError("no usable case in the cohort", path=self.root,
                              hint="check data.root and data.layout")
        labelled = require_label(cases, self.target, self.layout)
        splits_path = Path(self.splits_file) if self.splits_file else (
            self.root / f"splits_{self.target}_{self.n_folds}fold_seed{self.split_seed}.json")
        stratify = None if self.target == SEGMENTATION_TARGET else self.target
        self.splits = load_or_create_splits(splits_path, labelled, stratify, self.n_folds,
                                            self.split_seed)
        fold = self.splits["folds"][self.fold]
        by_id = {c["id"]: c for c in labelled}
        self.train_cases = [by_id[i] for i in fold["train"] if i in by_id]
        self.val_cases = [by_id[i] for i in fold["val"] if i in by_id]
        if self._has_test_split():
            test = self._usable(self._cohort("test"))
            self.test_cases = require_label(test, self.target, self.layout)
        else:
            self.test_cases = list(self.val_cases)
        log.info("fold %d/%d: %d train, %d val, %d test patients", self.fold, self.n_folds,
                 len(self.train_cases), len(self.val_cases), len(self.test_cases))

    def _dataset(self, cases: list[Case], train: bool) -> CachedVolumeDataset:
        transform = augmentation(self.augment, with_seg=self.preprocess.with_seg,
                                 patch_size=self.patch_size) if train else None
        return CachedVolumeDataset(cases, self.cache, self.target, transform)

    def _loader(self, cases: list[Case], train: bool) -> DataLoader:
        dataset = self._dataset(cases, train)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_cases, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_cases, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_cases, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_cases, train=False)
