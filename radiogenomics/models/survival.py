"""Survival grouping (BraTS task 2): short, mid or long survival from the tumour mask and age.

Features follow BraTS practice: the volume of each region (ET, TC, WT) of the ground-truth
mask relative to the brain volume (the nonzero voxels of a skull-stripped image), and age.
A scikit-learn classifier (random forest, SVM, k-NN) is tuned by grid search on the
training patients of the fold, then scored on its validation and test patients.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from lightning.pytorch.loggers import Logger
from sklearn.base import BaseEstimator, clone
from sklearn.metrics import accuracy_score, confusion_matrix
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from radiogenomics.data.case import CLASS_NAMES, Case
from radiogenomics.data.labels import REGIONS
from radiogenomics.data.readers import load_volume
from radiogenomics.data.roi import PREDICTED_MASK_KEY
from radiogenomics.errors import DataError, LabelError
from radiogenomics.evaluation.segmentation_scores import region_volumes

log = logging.getLogger(__name__)

SURVIVAL_CLASSES: tuple[str, ...] = CLASS_NAMES["survival_class"]
"""Survival groups in class order: < 300 days, 300-450 days, > 450 days."""

FEATURES: tuple[str, ...] = tuple(f"{region}_fraction" for region in REGIONS) + ("age",)


def survival_features(case: Case, brain_sequence: str = "T1w") -> dict[str, float]:
    """Each region's volume over the brain volume (nonzero voxels of `brain_sequence`), and age.

    Volumes are measured in ml on each file's own grid, so mask and image may differ in grid.
    The mask is the one a segmenter predicted (``case["predicted_seg"]``, with
    ``data.roi_model``) when the case holds one, else the case's own.
    """
    mask_path = case.get(PREDICTED_MASK_KEY) or case.get("seg")
    if not mask_path:
        raise LabelError("no tumour mask: survival features are measured on it",
                         patient=case["id"], hint="use a cohort with masks (data=brats, "
                         "data=synthetic) or set data.roi_model=<segmenter run dir>")
    if case["labels"].get("age") is None:
        raise LabelError("no age", patient=case["id"],
                         hint="add the age to the cohort's clinical.csv or survival_info.csv")
    if brain_sequence not in case["images"]:
        raise DataError(f"no {brain_sequence} image to measure the brain on "
                        f"(has {sorted(case['images'])})", patient=case["id"],
                        hint="set model.brain_sequence to one of them")
    mask = load_volume(mask_path, patient=case["id"])
    volumes = region_volumes(mask.array, mask.affine, case.get("label_scheme") or "brats2021")
    image = load_volume(case["images"][brain_sequence], patient=case["id"])
    voxel_ml = abs(float(np.linalg.det(image.affine[:3, :3]))) / 1000.0
    brain_ml = float(np.count_nonzero(image.array)) * voxel_ml
    if brain_ml == 0:
        raise DataError(f"the {brain_sequence} image is blank: no brain to measure",
                        patient=case["id"], path=case["images"][brain_sequence],
                        hint="set model.brain_sequence to another sequence")
    fractions = {f"{r}_fraction": volumes[f"{r}_ml"] / brain_ml for r in REGIONS}
    return {**fractions, "age": float(case["labels"]["age"])}


class SurvivalClassifier:
    """A scikit-learn survival-group classifier that trains from a datamodule's fold.

    `estimator` is any scikit-learn classifier; it is standardised-input and tuned over
    `param_grid` by a stratified `cv`-fold grid search on the training patients (fewer
    folds when a class is too small). Values of ``n_neighbors`` (k-NN) larger than the
    smallest grid-search training fold are dropped.
    """

    def __init__(
        self,
        estimator: BaseEstimator,
        param_grid: dict[str, list[Any]] | None = None,
        cv: int = 3,
        brain_sequence: str = "T1w",
        target: str = "survival_class",
        monitor: str = "val/acc",
        seed: int = 0,
    ) -> None:
        if target != "survival_class":
            raise ValueError(f"a survival classifier needs model.target=survival_class, "
                             f"not {target!r}")
        self.estimator = estimator
        self.param_grid = dict(param_grid or {})
        self.cv = cv
        self.brain_sequence = brain_sequence
        self.monitor = monitor
        self.seed = seed
        self.search: GridSearchCV | None = None
        self.confusion_matrices: dict[str, pd.DataFrame] = {}

    def features(self, cases: Iterable[Case]) -> tuple[np.ndarray, np.ndarray]:
        """Feature matrix (order `FEATURES`) and survival classes of `cases`."""
        cases = list(cases)
        rows = [survival_features(case, self.brain_sequence) for case in cases]
        x = np.array([[row[name] for name in FEATURES] for row in rows], dtype=np.float64)
        y = np.array([int(case["labels"]["survival_class"]) for case in cases])
        return x, y

    def _folds(self, y: np.ndarray) -> KFold | StratifiedKFold:
        counts = np.bincount(y)
        smallest = int(counts[counts > 0].min())
        if smallest >= 2:
            return StratifiedKFold(min(self.cv, smallest), shuffle=True, random_state=self.seed)
        return KFold(min(self.cv, len(y)), shuffle=True, random_state=self.seed)

    def _grid(self, n_train: int, folds: KFold | StratifiedKFold) -> dict[str, list[Any]]:
        grid = dict(self.param_grid)
        smallest_fold = n_train - int(np.ceil(n_train / folds.get_n_splits()))
        if "n_neighbors" in grid:
            grid["n_neighbors"] = [k for k in grid["n_neighbors"] if k <= smallest_fold] or [
                max(1, smallest_fold)]
        return {f"classify__{name}": values for name, values in grid.items()}

    def fit(self, datamodule: Any) -> dict[str, float]:
        """Prepare the datamodule's fold, tune on its training patients, score validation."""
        datamodule.prepare_data()
        datamodule.setup("fit")
        log.info("survival features measured on tumour masks %s",
                 getattr(datamodule, "mask_source", None) or "of the cohort (ground truth)")
        x, y = self.features(datamodule.train_cases)
        if len(np.unique(y)) < 2:
            raise LabelError(f"the {len(y)} training patient(s) of fold {datamodule.fold} have "
                             "a single survival class: nothing to tell apart",
                             hint="use a cohort with more survival labels or fewer folds "
                                  "(data.n_folds)")
        folds = self._folds(y)
        pipeline = Pipeline([("scale", StandardScaler()), ("classify", clone(self.estimator))])
        self.search = GridSearchCV(pipeline, self._grid(len(y), folds), cv=folds,
                                   scoring="accuracy")
        self.search.fit(x, y)
        if np.isfinite(self.search.best_score_):
            log.info("survival grid search: best %s (cv accuracy %.3f)",
                     self.search.best_params_, self.search.best_score_)
        else:
            log.warning("survival grid search scored no setting (a class too small for its "
                        "%d folds): fitted %s untuned", folds.get_n_splits(),
                        self.search.best_params_)
        return self.score(datamodule.val_cases, "val")

    def test(self, datamodule: Any) -> dict[str, float]:
        """Accuracy on the datamodule's test patients."""
        return self.score(datamodule.test_cases, "test")

    def predict(self, cases: Iterable[Case]) -> np.ndarray:
        """Survival class (0 short, 1 mid, 2 long) of each case."""
        if self.search is None:
            raise RuntimeError("the survival classifier is not fitted: call fit(datamodule)")
        return self.search.predict(self.features(cases)[0])

    def score(self, cases: Iterable[Case], split: str) -> dict[str, float]:
        """``{split}/acc`` on `cases`; the confusion matrix is kept in `confusion_matrices`."""
        if self.search is None:
            raise RuntimeError("the survival classifier is not fitted: call fit(datamodule)")
        x, truth = self.features(cases)
        predicted = self.search.predict(x)
        matrix = confusion_matrix(truth, predicted, labels=range(len(SURVIVAL_CLASSES)))
        self.confusion_matrices[split] = pd.DataFrame(
            matrix, index=pd.Index([f"true_{c}" for c in SURVIVAL_CLASSES]),
            columns=[f"predicted_{c}" for c in SURVIVAL_CLASSES])
        return {f"{split}/acc": float(accuracy_score(truth, predicted))}


def train_estimator(model: SurvivalClassifier, datamodule: Any, loggers: list[Logger],
                    output_dir: str | Path, test: bool = True) -> dict[str, float]:
    """train.py's path for scikit-learn models: fit, score, log, write confusion matrices.

    Logs ``val/acc``, ``val/acc_best`` (the same: there is one fit) and ``test/acc`` to every
    logger and writes ``confusion_matrix_{val,test}.csv`` (rows: truth) into `output_dir`.
    """
    metrics = model.fit(datamodule)
    metrics["val/acc_best"] = metrics["val/acc"]
    if test:
        metrics.update(model.test(datamodule))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, matrix in model.confusion_matrices.items():
        matrix.to_csv(out / f"confusion_matrix_{split}.csv")
    for logger in loggers:
        logger.log_metrics(metrics, step=0)
        logger.finalize("success")
    log.info("final metrics:\n%s", "\n".join(f"  {k:<16} {v:.4f}" for k, v in
                                                sorted(metrics.items())))
    return metrics
