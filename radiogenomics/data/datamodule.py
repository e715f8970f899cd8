"""One LightningDataModule for every volumetric cohort (synthetic, RSNA, BraTS)."""

from __future__ import annotations

import hashlib
import logging
import numbers
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
from radiogenomics.data.batch_augment import BatchAugment
from radiogenomics.data.cache import PreprocessCache
from radiogenomics.data.case import SEQUENCES, Case, canonical_sequence
from radiogenomics.data.cohorts import load_cohort, masks_in_template_space, require_label
from radiogenomics.data.roi import check_roi
from radiogenomics.data.splits import load_or_create_splits
from radiogenomics.data.transforms import PreprocessConfig
from radiogenomics.errors import CohortError, ConfigError, Failure
from radiogenomics.extras import require

log = logging.getLogger(__name__)

SEGMENTATION_TARGET = "seg"
AUGMENT_ON = ("workers", "device")
"""Where training batches are augmented: in the DataLoader workers (MONAI, per sample) or
on the model's device after the batch is moved there (data/batch_augment.py)."""


def default_data_dir() -> Path:
    """``$RADIOGENOMICS_HOME/data``, else ``./data``: where derived files go when no config
    names a folder (the configs always do: ``paths.data_dir``)."""
    return Path(os.environ.get("RADIOGENOMICS_HOME") or ".") / "data"


def cohort_key(root: str | Path) -> str:
    """A folder name for the derived files of the cohort at `root`: its name and a short hash
    of its absolute path (two cohorts of one name never share their splits)."""
    path = Path(root).expanduser().absolute()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"{path.name or 'root'}-{digest}"


def _integer(value: Any, key: str, minimum: int | None = None) -> int:
    """`value` as an int (a whole float such as 2.0 too); ConfigError otherwise."""
    whole = (isinstance(value, numbers.Integral) and not isinstance(value, bool)
             or isinstance(value, float) and value.is_integer())
    if not whole:
        raise ConfigError(f"must be a whole number, not {value!r}", key=key)
    number = int(value)
    if minimum is not None and number < minimum:
        raise ConfigError(f"must be at least {minimum}, not {number}", key=key)
    return number


def _sizes(value: Any, key: str, count: int = 3) -> tuple[int, ...]:
    """`count` positive whole numbers."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != count:
        raise ConfigError(f"must be a list of {count} positive whole numbers, not {value!r}",
                          key=key, hint=f"e.g. {key}=[32,32,32]" if count == 3 else None)
    sizes = []
    for item in value:
        try:
            sizes.append(_integer(item, key, minimum=1))
        except ConfigError:
            raise ConfigError(f"must be a list of {count} positive whole numbers, not "
                              f"{list(value)!r}", key=key) from None
    return tuple(sizes)


def _spacing(value: Any) -> tuple[float, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise ConfigError(f"must be 3 voxel sizes in mm (or null), not {value!r}",
                          key="data.spacing")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)
               and v > 0 for v in value):
        raise ConfigError(f"voxel sizes must be positive numbers, not {list(value)!r}",
                          key="data.spacing")
    return tuple(float(v) for v in value)


def canonical_sequences(sequences: Any) -> tuple[str, ...]:
    """Sequence names as the cohorts name them, whatever their case or alias
    (``[t1wce, flair]`` -> ``(T1wCE, FLAIR)``); ConfigError naming those that exist."""
    if isinstance(sequences, str):
        sequences = [sequences]
    if not isinstance(sequences, Sequence) or not sequences:
        raise ConfigError(f"must name at least one sequence, not {sequences!r}",
                          key="data.sequences", hint=f"choose among {list(SEQUENCES)}")
    names = []
    for name in sequences:
        try:
            names.append(canonical_sequence(str(name)))
        except KeyError:
            raise ConfigError(f"unknown MRI sequence {name!r}", key="data.sequences",
                              hint=f"the sequences are {', '.join(SEQUENCES)} (any case; "
                                   "aliases such as t1ce, t1c, t2f are accepted)") from None
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{list(sequences)} names {', '.join(repeated)} more than once",
                          key="data.sequences", hint="list each sequence once")
    return tuple(names)


class CachedVolumeDataset(Dataset):
    """Cases served from the preprocessing cache, with random augmentation on each draw."""

    def __init__(self, cases: list[Case], cache: PreprocessCache, target: str | None,
                 transform: Any = None, half: bool = False) -> None:
        self.cases = cases
        self.cache = cache
        self.target = target
        self.transform = transform
        self.half = half
        """Serve the cache's float16 image as is (widened on the model's device)."""

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        arrays = self.cache.load(case)
        image = torch.from_numpy(np.array(arrays["image"]))
        item: dict[str, Any] = {
            "id": case["id"],
            # copy the float16 bytes, then let torch widen them: ~7x faster than numpy's cast
            "image": image if self.half and image.dtype == torch.float16 else image.float(),
        }
        if "seg" in arrays:
            item["seg"] = torch.from_numpy(np.array(arrays["seg"])).long()
        if self.cache.config.seg_optional:
            # a case without a mask gets an empty one, so batches collate; has_seg tells apart
            item["has_seg"] = "seg" in item
            if not item["has_seg"]:
                item["seg"] = torch.zeros((1, *image.shape[1:]), dtype=torch.long)
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
    that has it. ``with_seg`` serves each case's tumour mask beside another target (multi-task
    models); with ``seg_optional`` a case without one is kept, served with an empty ``seg``
    and ``has_seg`` false (every item then has ``has_seg``). ``roi="tumour"`` crops each case
    around its tumour mask (`radiogenomics.data.roi`): the cohort's own, or the one predicted
    by the segmenter run ``roi_model`` (``roi_masks``, from the config, predicts and caches
    them). In DDP, the process that runs ``prepare_data``
    (global rank 0 with ``shared_cache``, else local rank 0 of each machine) fills the cache
    and writes the splits; the others only read both. The test set is the cohort's labelled
    ``test`` split when ``test_split="test"``, or the fold's validation patients when
    ``test_split="val"``.
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
        splits_dir: str | None = None,
        test_split: str = "val",
        batch_size: int = 8,
        num_workers: int | None = None,
        prepare_workers: int | None = None,
        pin_memory: bool | None = None,
        cache_dir: str | None = None,
        shared_cache: bool = True,
        augment: dict[str, Any] | None = None,
        augment_on: str = "workers",
        patch_size: Sequence[int] | None = None,
        cohort_options: dict[str, Any] | None = None,
        synthetic: dict[str, Any] | None = None,
        on_error: str = "raise",
        skip_invalid_files: bool = False,
        with_seg: bool = False,
        seg_optional: bool = False,
        register: bool = False,
        roi: str | None = None,
        roi_margin_mm: float = 10.0,
        roi_model: str | None = None,
        roi_masks: Any = None,
    ) -> None:
        super().__init__()
        if on_error not in ("raise", "skip"):
            raise ConfigError(f"must be 'raise' or 'skip', not {on_error!r}", key="data.on_error")
        n_folds = _integer(n_folds, "data.n_folds", minimum=2)
        fold = _integer(fold, "data.fold", minimum=0)
        if fold >= n_folds:
            raise ConfigError(f"{fold} is outside 0..{n_folds - 1} (data.n_folds={n_folds})",
                              key="data.fold", hint=f"choose a fold from 0 to {n_folds - 1}")
        split_seed = _integer(split_seed, "data.split_seed")
        batch_size = _integer(batch_size, "data.batch_size", minimum=1)
        if slab is not None:
            slab = _integer(slab, "data.slab", minimum=1)
        self.layout = layout
        self.root = Path(root)
        self.target = target
        self.sequences = canonical_sequences(sequences)
        self.preprocess = PreprocessConfig(
            sequences=self.sequences,
            spacing=_spacing(spacing),
            spatial_size=_sizes(spatial_size, "data.spatial_size"),
            with_seg=target == SEGMENTATION_TARGET or bool(with_seg),
            seg_optional=self._seg_optional(seg_optional, target),
            slab=slab,
            skip_invalid_files=bool(skip_invalid_files),
            register=bool(register),
            **self._roi_settings(roi, roi_margin_mm, roi_model, roi_masks, slab),
        )
        if register:
            require("SimpleITK")
        if register and self.preprocess.roi_model:
            raise ConfigError("predicted masks lie on each patient's native series, not on the "
                              "template grid data.register=true puts the images on",
                              key="data.roi_model", hint="crop by the cohort's own masks "
                              "(unset data.roi_model) or predict without registration")
        self.fold, self.n_folds, self.split_seed = fold, n_folds, split_seed
        self.splits_file = splits_file
        self.test_split = test_split
        self.batch_size = batch_size
        cpus = os.cpu_count() or 1
        self.num_workers = num_workers if num_workers is not None else min(4, cpus // 2)
        self.prepare_workers = prepare_workers if prepare_workers is not None else cpus
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        # derived files never go under data.root (it may be read-only, and it is the user's)
        cache_root = Path(cache_dir) if cache_dir else default_data_dir() / "cache" / layout
        self.splits_dir = Path(splits_dir) if splits_dir else cache_root / "splits"
        self.cache = PreprocessCache(cache_root, self.preprocess)
        # a cache on a file system all machines share is filled by global rank 0 alone (and
        # read by the others); a node-local one by local rank 0 of each machine
        self.prepare_data_per_node = not shared_cache
        self.augment = AugmentConfig(**augment) if augment else None
        if augment_on not in AUGMENT_ON:
            raise ConfigError(f"must be one of {', '.join(AUGMENT_ON)}, not {augment_on!r}",
                              key="data.augment_on")
        self.augment_on = augment_on
        self.batch_augment = (BatchAugment(self.augment)
                              if augment_on == "device" and self.augment else None)
        if patch_size is not None and target != SEGMENTATION_TARGET:
            raise ConfigError("crops training patches around the tumour mask: it needs target "
                              f"seg, not {target!r}", key="data.patch_size", hint="set it to null")
        self.patch_size = (_sizes(patch_size, "data.patch_size") if patch_size is not None
                           else None)
        self.cohort_options = dict(cohort_options or {})
        self.synthetic = synthetic
        self.on_error = on_error
        self.skipped: list[Failure] = []
        """Every patient left out (missing folders or labels, failed preprocessing), and why."""
        self.splits: dict[str, Any] | None = None
        self.train_cases: list[Case] = []
        self.val_cases: list[Case] = []
        self.test_cases: list[Case] = []

    @staticmethod
    def _seg_optional(seg_optional: Any, target: str) -> bool:
        """Whether cases without a mask are served (multi-task models); never to segmenters."""
        if seg_optional and target == SEGMENTATION_TARGET:
            raise ConfigError("a segmenter learns from masks only: a case without one cannot "
                              "train it", key="data.seg_optional",
                              hint="set data.seg_optional=false (a segmenter leaves the cases "
                                   "without masks out, naming them)")
        return bool(seg_optional)

    @property
    def num_channels(self) -> int:
        return len(self.sequences)

    def _cohort(self, split: str) -> list[Case]:
        # on_error=skip also skips (and reports) patients with missing folders or labels
        # only the series the model reads must exist (a T1wCE model needs no FLAIR folder)
        options = {"on_missing": self.on_error, "sequences": list(self.sequences),
                   **self.cohort_options}
        self._check_mask_space()
        cohort = load_cohort(self.layout, self.root, split=split, **options)
        self.skipped += cohort.skipped
        if self.roi_masks is None:
            return list(cohort.cases)
        cases, failed = self.roi_masks.attach(list(cohort.cases))
        self._handle_failures(failed)
        return cases

    def _roi_settings(self, roi: Any, margin_mm: Any, roi_model: str | None, roi_masks: Any,
                      slab: int | None) -> dict[str, Any]:
        """The tumour ROI's part of the preprocessing (`radiogenomics.data.roi`); keeps the
        provider of predicted masks (``roi_masks``, from the config) when ``roi_model`` is set."""
        roi = check_roi(roi)
        if roi and slab is not None:
            raise ConfigError("a tumour ROI and a slab both choose the field of view",
                              key="data.roi", hint="set data.slab=null or data.roi=null")
        if not (isinstance(margin_mm, numbers.Real) and not isinstance(margin_mm, bool)
                and np.isfinite(margin_mm) and margin_mm >= 0):
            raise ConfigError(f"must be a margin in mm >= 0, not {margin_mm!r}",
                              key="data.roi_margin_mm")
        self.roi_masks = None
        identity = None
        if roi_model:
            if roi_masks is None or not getattr(roi_masks, "active", False):
                raise ConfigError("is set but no provider of predicted masks was given",
                                  key="data.roi_model", hint="keep data.roi_masks of "
                                  "conf/data/_volume.yaml in the data config")
            self.roi_masks = roi_masks
            identity = roi_masks.identity  # checks the run now, before any work
            log.info("tumour masks: %s", roi_masks.source)
        if not roi:
            return {}
        return {"roi": roi, "roi_margin_mm": float(margin_mm),
                "roi_model": identity}

    @property
    def mask_source(self) -> str | None:
        """Where the tumour masks of a tumour ROI (or survival features) come from: ``predicted
        by <run>`` with ``data.roi_model``, ``ground truth`` with ``data.roi`` alone, else None."""
        if self.roi_masks is not None:
            return self.roi_masks.source
        return "ground truth" if self.preprocess.roi else None

    def _check_mask_space(self) -> None:
        """Refuse template-space masks over unregistered DICOM series of a moved synthetic
        cohort: resampled by world position, they would miss the tumour."""
        dicom = self.cohort_options.get("image_format", "dicom") == "dicom"
        ground_truth = self.preprocess.with_seg or self.mask_source == "ground truth"
        if not (self.layout == "synthetic" and dicom and ground_truth
                and not self.preprocess.register):
            return
        moved = masks_in_template_space(self.root)
        if not moved and self.synthetic is not None and not self.root.exists():
            from radiogenomics.data.synthetic.settings import make_settings

            moved = make_settings(self.synthetic.get("preset", "default")).moved  # to generate
        if moved:
            raise ConfigError(
                f"the synthetic cohort at {self.root} is moved (realistic preset): its DICOM "
                "series lie in the scanner's world and its tumour masks in template space, so "
                "the masks would not lie on the tumour of the series", key="data.register",
                hint="set data.register=true (register the series to template space) or "
                     "data.cohort_options.image_format=nifti (train on the NIfTI)")

    def _has_test_split(self) -> bool:
        return self.test_split == "test"

    def prepare_data(self) -> None:
        """Generate the synthetic cohort if absent, fill the preprocessing cache, then write
        the splits when absent (so that they too are written by this process alone).

        Only a ``synthetic`` root that does not exist yet is ever generated (into a temporary
        sibling folder renamed into place); an existing root is read as it is, never written:
        one whose cohort was generated with other settings than ``data.synthetic`` is an error.
        """
        self._check_mask_space()  # before generating a cohort it would refuse
        self.ensure_synthetic()
        train = require_label(self._cohort("train"), self.target, self.layout)
        cases = train + (self._cohort("test") if self._has_test_split() else [])
        report = self.cache.prepare(cases, workers=self.prepare_workers)
        if report.prepared:
            log.info("preprocessing cache: %s", report.summary())
        self._handle_failures(report.failed)
        skipped = {failure.patient for failure in self.skipped}
        self._load_splits([case for case in train if case["id"] not in skipped])

    def ensure_synthetic(self) -> None:
        """Generate the configured synthetic cohort at ``root`` when absent; check it when not."""
        if self.synthetic is None or self.layout != "synthetic":
            return
        from radiogenomics.data.synthetic import ensure_cohort

        ensure_cohort(self.root, **dict(self.synthetic))

    def _handle_failures(self, failed: list[Failure]) -> None:
        if not failed:
            return
        listing = "\n".join(f"  {f.reason}" for f in failed)
        if self.on_error == "raise":
            raise CohortError(
                f"{len(failed)} patient(s) could not be preprocessed:\n{listing}",
                path=self.root,
                hint="fix or exclude them (data.cohort_options.exclude) or set data.on_error=skip",
            )
        log.warning("skipping %d patient(s) that could not be preprocessed:\n%s",
                    len(failed), listing)
        self.skipped += failed

    def _usable(self, cases: list[Case]) -> list[Case]:
        failed = []
        usable = []
        skipped = {f.patient for f in self.skipped}
        for case in cases:
            if case["id"] in skipped:
                continue
            if not self.cache.has(case):
                failed.append(Failure(case["id"],
                                      f"[patient {case['id']}] not in the preprocessing cache"))
                continue
            usable.append(case)
        self._handle_failures(failed)
        return usable

    def _prepares_here(self) -> bool:
        """Whether this process runs ``prepare_data`` under its trainer (Lightning's rule)."""
        trainer = self.trainer
        return trainer is None or trainer.local_rank == 0 and (
            self.prepare_data_per_node or trainer.node_rank == 0)

    def _load_splits(self, labelled: list[Case]) -> dict[str, Any]:
        splits_path = self.splits_path()
        stratify = None if self.target == SEGMENTATION_TARGET else self.target
        splits = load_or_create_splits(splits_path, labelled, stratify, self.n_folds,
                                       self.split_seed)
        log.info("splits: %s", splits_path)
        return splits

    def setup(self, stage: str | None = None) -> None:
        if self.train_cases or self.val_cases:
            return
        self.cache.read_only = not self._prepares_here()
        # as prepare_data: the cases without the target (a segmenter's without a mask) are
        # left out, with require_label's warning, before the cache is asked for them
        labelled = self._usable(require_label(self._cohort("train"), self.target, self.layout))
        if not labelled:
            raise CohortError("no usable case in the cohort", path=self.root,
                              hint="check data.root and data.layout")
        self.splits = self._load_splits(labelled)
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

    def splits_path(self) -> Path:
        """Where the splits are read from, or written to when absent.

        ``data.splits_file`` when set; else a file made earlier beside the data
        (``ROOT/splits_<target>_<k>fold_seed<seed>.json``, read as it is); else
        ``<splits_dir>/<cohort name>-<hash of its path>/splits_<target>_<k>fold_seed<seed>.json``:
        nothing is ever written under ``data.root``.
        """
        if self.splits_file:
            return Path(self.splits_file)
        name = f"splits_{self.target}_{self.n_folds}fold_seed{self.split_seed}.json"
        beside_data = self.root / name
        if beside_data.is_file():
            return beside_data
        return self.splits_dir / cohort_key(self.root) / name

    def _dataset(self, cases: list[Case], train: bool) -> CachedVolumeDataset:
        on_device = self.augment_on == "device"
        transform = augmentation(None if on_device else self.augment,
                                 with_seg=self.preprocess.with_seg,
                                 patch_size=self.patch_size) if train else None
        # on the device path the training batches travel as float16 (half the bytes to
        # collate, pin and copy) and are widened by on_after_batch_transfer
        return CachedVolumeDataset(cases, self.cache, self.target, transform,
                                   half=train and on_device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the model's device: widen a float16 image, and with ``augment_on=device``
        augment each training batch (data/batch_augment.py)."""
        if not isinstance(batch, dict) or not torch.is_tensor(batch.get("image")):
            return batch
        if batch["image"].dtype == torch.float16:
            batch["image"] = batch["image"].float()
        trainer = self.trainer
        if self.batch_augment is not None and trainer is not None and trainer.training:
            batch["image"], seg = self.batch_augment(batch["image"], batch.get("seg"))
            if seg is not None:
                batch["seg"] = seg
        return batch

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
