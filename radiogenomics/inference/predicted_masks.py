"""Tumour masks predicted by a segmenter run, for the tumour ROI and survival grouping.

``data.roi_model=<run dir>`` names a trained segmenter (a run, or a multirun whose folds are
averaged). `PredictedMasks` predicts each patient's mask once, the way predict.py segments
it (the segmenter's own preprocessing, the mask mapped back onto the grid of the case's
reference image), and caches it as ``<cache_dir>/<id>-<key>/mask.nii.gz``; the key hashes
the segmenter's checkpoints (path, size, mtime), the case's image files and its label scheme.
The data module and the predictor put the file in the case as ``case["predicted_seg"]``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from radiogenomics.data.cache import CaseCache, fingerprint
from radiogenomics.data.case import Case
from radiogenomics.data.cohorts import Cohort
from radiogenomics.data.datamodule import SEGMENTATION_TARGET
from radiogenomics.data.nifti import write_nifti
from radiogenomics.data.roi import PREDICTED_MASK_KEY
from radiogenomics.data.volume import Volume
from radiogenomics.errors import CheckpointError, ConfigError, DataError, Failure
from radiogenomics.inference.masks import predict_mask
from radiogenomics.inference.trained_models import TrainedModel, load_models
from radiogenomics.runs import choose_checkpoint, find_runs, read_config

log = logging.getLogger(__name__)

MASK_FILE = "mask.nii.gz"


class PredictedMaskCache(CaseCache):
    """One ``mask.nii.gz`` per case, predicted by the segmenter of `masks`."""

    VERSION = 1
    DESCRIPTION = "predicting tumour masks"

    def __init__(self, root: str | Path, masks: PredictedMasks) -> None:
        super().__init__(root)
        self.masks = masks

    def sources(self, case: Case) -> dict[str, Any]:
        return dict(case["images"])

    def key_fields(self, case: Case) -> dict[str, Any]:
        return {"segmenter": self.masks.identity, "scheme": case.get("label_scheme")}

    def ready(self, entry: Path) -> bool:
        return (entry / MASK_FILE).is_file()

    def compute(self, case: Case) -> Volume:
        models = self.masks.models()
        return predict_mask([m.module for m in models], case, models[0].preprocess)

    def _save(self, folder: Path, case: Case, result: Volume) -> None:
        write_nifti(np.asarray(result.array, dtype=np.uint8), result.affine, folder / MASK_FILE)

    def _read(self, entry: Path, mmap: bool = True) -> dict[str, Any]:
        return {"path": entry / MASK_FILE}


class PredictedMasks:
    """The masks `run_dir`'s segmenter predicts, computed once per patient (module docstring).

    ``run_dir`` None: inactive (`active` is false), nothing is loaded.
    """

    def __init__(self, run_dir: str | None, cache_dir: str | Path, checkpoint: str = "best",
                 device: str = "cpu") -> None:
        self.run_dir = str(run_dir) if run_dir else None
        self.checkpoint = checkpoint
        self.device = device
        self.cache = PredictedMaskCache(cache_dir, self)
        self._identity: str | None = None
        self._models: list[TrainedModel] | None = None

    @property
    def active(self) -> bool:
        return self.run_dir is not None

    @property
    def source(self) -> str:
        """What the masks are, for logs and run info: ``predicted by <run>``."""
        return f"predicted by {self.run_dir}"

    @property
    def identity(self) -> str:
        """The segmenter's checkpoints as files (path, size, mtime): a retrained segmenter is
        another identity, so new masks and new cache entries. ConfigError when `run_dir` is
        no finished segmenter run."""
        if self._identity is None:
            try:
                runs = find_runs(self.run_dir)
                targets = {str(read_config(run).data.get("target")) for run, _ in runs}
                checkpoints = [ckpt or choose_checkpoint(run, self.checkpoint)
                               for run, ckpt in runs]
            except CheckpointError as err:
                raise ConfigError(str(err), key="data.roi_model",
                                  hint="name the run directory of a trained segmenter") from None
            if targets != {SEGMENTATION_TARGET}:
                raise ConfigError(f"{self.run_dir} was trained for {', '.join(sorted(targets))}"
                                  ", not tumour masks", key="data.roi_model",
                                  hint="name a segmenter run (model=unet, segresnet, ...)")
            self._identity = ";".join(str(fingerprint(c)) for c in checkpoints)
        return self._identity

    def models(self) -> list[TrainedModel]:
        """The segmenter(s), loaded on first use."""
        if self._models is None:
            self._models = load_models(self.run_dir, self.checkpoint, self.device)
            log.info("tumour masks for the ROI: %s", self.source)
        return self._models

    def __call__(self, case: Case) -> Path:
        """The predicted mask file of a case, predicted now if not cached; DataError if the
        case cannot be segmented."""
        entry = self.cache.entry(case)
        if not self.cache.ready(entry):
            mask = self.cache.compute(case)
            if not np.any(mask.array):
                log.warning("patient %s: %s finds no tumour", case["id"], self.source)
            self.cache.write(case, mask, entry=entry)
        return entry / MASK_FILE

    def attach(self, cases: list[Case]) -> tuple[list[Case], list[Failure]]:
        """Copies of `cases` holding their predicted mask (``case["predicted_seg"]``), and a
        failure for each case that could not be segmented."""
        done, failed = [], []
        for case in cases:
            try:
                done.append({**case, PREDICTED_MASK_KEY: str(self(case))})
            except DataError as err:
                failed.append(Failure.from_error(err, case["id"]))
        return done, failed


def check_roi_masks(model: TrainedModel, cohort: Cohort, roi_model: str | None) -> None:
    """Before predicting: a classifier trained on a tumour ROI needs a mask for every patient,
    its cohort's own or a segmenter's (``data.roi_model``); ``roi_model`` is for such
    classifiers only. ConfigError naming what to set otherwise."""
    preprocess = model.preprocess
    if roi_model and not preprocess.roi:
        raise ConfigError(f"{model.run_dir} was trained on the whole brain (data.roi=null): it "
                          "takes no tumour masks", key="data.roi_model", hint="leave it unset")
    if not preprocess.roi or preprocess.roi_model is not None:
        return
    missing = [case["id"] for case in cohort.cases if not case.get("seg")]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ConfigError(
            f"{model.run_dir} was trained on a tumour ROI (data.roi={preprocess.roi}) cut by "
            f"the cohort's masks, and {len(missing)} patient(s) of {cohort.root} have no tumour "
            f"mask ({shown})", key="data.roi_model",
            hint="set data.roi_model=<run dir of a trained segmenter>: its predicted masks "
                 "give the ROI")
