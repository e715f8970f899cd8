"""The label-permutation test: retrain a run on labels reassigned at random; its validation AUC
must fall to chance.

New labels are drawn independently of the true ones (balanced within each part and true
class), and each patient keeps one label wherever it appears. A model that still scores above
chance on its validation patients can only have recognised them from training (a patient,
scan or slice on both sides) or have been given the label some other way (Ojala & Garriga,
JMLR 2010, for the test; Yagis et al., Sci Rep 2021, for what slice-level splits do).
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from radiogenomics import config as rc
from radiogenomics.audit.checks import FAIL, PASS, SKIP, Verdict
from radiogenomics.audit.subject import SPLITS_RECORD, prepared_datamodule, served_partition
from radiogenomics.data.datamodule import SEGMENTATION_TARGET
from radiogenomics.runs import read_config

log = logging.getLogger(__name__)

CHECK = "label-permutation"
ALPHA = 0.01
"""A permuted-label AUC that random scores reach less often than this fails the check."""
NULL_DRAWS = 10_000


def independent_labels(labels: Mapping[str, int], homes: Mapping[str, str], seed: int
                       ) -> dict[str, int]:
    """Labels at random, balanced within each group of patients of one part (`homes`) and one
    true label: in every part the new labels say nothing of the true ones."""
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels.values()))
    groups: dict[tuple[str, int], list[str]] = defaultdict(list)
    for pid in sorted(labels):
        groups[(homes.get(pid, ""), labels[pid])].append(pid)
    new: dict[str, int] = {}
    for key in sorted(groups):
        start = int(rng.integers(len(classes)))
        for k, pid in enumerate(rng.permutation(groups[key])):
            new[str(pid)] = classes[(start + k) % len(classes)]
    return new


def chance_p_value(aucs: Sequence[float], labels: Sequence[np.ndarray],
                   draws: int = NULL_DRAWS, seed: int = 0) -> float:
    """How often random scores reach the mean of `aucs` on the same validation labels (one
    array of 0/1 per retrained model): the one-sided p-value of a permutation null."""
    rng = np.random.default_rng(seed)
    null = np.zeros(draws)
    for y in labels:
        y = np.asarray(y, dtype=bool)
        positives, negatives = int(y.sum()), int((~y).sum())
        if not positives or not negatives:  # one class: AUC undefined, scored as chance
            null += 0.5
            continue
        ranks = rng.permuted(np.tile(np.arange(1, y.size + 1), (draws, 1)), axis=1)
        rank_sum = ranks[:, y].sum(axis=1)
        null += (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    null /= len(labels)
    observed = float(np.mean(aucs))
    return float((1 + np.sum(null >= observed - 1e-12)) / (draws + 1))


@dataclass
class PermutedScore:
    """The validation AUC of one model retrained on permuted labels, and those labels."""

    auc: float
    labels: np.ndarray


def _relabelled(cases: list[dict[str, Any]], new: Mapping[str, int], target: str
                ) -> list[dict[str, Any]]:
    return [{**case, "labels": {**case["labels"], target: new[case["id"]]}} for case in cases]


class PermutedRetraining:
    """A run, rebuilt from its config and splits, ready to retrain on permuted labels."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.config = read_config(run_dir)
        record = run_dir / SPLITS_RECORD
        self.datamodule = prepared_datamodule(self.config.data,
                                              splits_file=record if record.is_file() else None)
        self.parts = {"train_cases": self.datamodule.train_cases,
                      "val_cases": self.datamodule.val_cases,
                      "test_cases": self.datamodule.test_cases}
        homes = served_partition(self.datamodule, run_dir.name).part_of()
        self.homes = {pid: "/".join(sorted(parts)) for pid, parts in homes.items()}

    def unsupported(self) -> str | None:
        """Why this run cannot be tested (None when it can)."""
        target = self.datamodule.target
        classes = self.config.model.get("num_classes")
        if target in (SEGMENTATION_TARGET, None) or classes != 2:
            return f"needs a binary classifier (this run's target is {target!r})"
        if "net" not in self.config.model:
            return "needs a network trained by Lightning (not a scikit-learn model)"
        return None

    def score(self, seed: int) -> PermutedScore:
        """Retrain from scratch on permuted labels; the AUC of its validation patients."""
        import lightning.pytorch as pl

        from radiogenomics.callbacks import predict

        target = self.datamodule.target
        cases = [c for part in self.parts.values() for c in part]
        new = independent_labels({c["id"]: int(c["labels"][target]) for c in cases},
                                 self.homes, seed)
        for name, part in self.parts.items():
            setattr(self.datamodule, name, _relabelled(part, new, target))
        pl.seed_everything(seed, workers=True, verbose=False)
        model = rc.instantiate(self.config.model)
        with tempfile.TemporaryDirectory() as workdir:
            trainer = rc.instantiate(
                self.config.trainer, callbacks=[], logger=False, enable_checkpointing=False,
                default_root_dir=workdir, devices=1, strategy="auto",
                enable_progress_bar=False, enable_model_summary=False)
            trainer.fit(model, datamodule=self.datamodule)
            ids, labels, probabilities = predict(model, self.datamodule.val_dataloader(), trainer)
        auc = roc_auc_score(labels, probabilities[:, 0]) if len(set(labels)) == 2 else 0.5
        log.info("%s, permutation %d: validation AUC %.3f on %d patients", self.run_dir.name,
                 seed, auc, len(ids))
        return PermutedScore(float(auc), np.asarray(labels))


def check_permutation(runs: Sequence[Path], permutations: int, alpha: float = ALPHA
                      ) -> Verdict:
    """Retrain `permutations` times (the runs in turn) on permuted labels: the mean
    validation AUC must be one that random scores reach at least `alpha` of the time."""
    if permutations <= 0:
        return Verdict(SKIP, CHECK, "--permutations 0")
    if not runs:
        return Verdict(SKIP, CHECK, "needs a trained run: audit a run or multirun directory")
    retrainings: dict[Path, PermutedRetraining] = {}
    scores = []
    for k in range(permutations):
        run_dir = runs[k % len(runs)]
        if run_dir not in retrainings:
            retrainings[run_dir] = PermutedRetraining(run_dir)
            reason = retrainings[run_dir].unsupported()
            if reason:
                return Verdict(SKIP, CHECK, reason)
        log.info("%s: retraining %s on permuted labels (%d of %d)", CHECK, run_dir, k + 1,
                 permutations)
        scores.append(retrainings[run_dir].score(seed=k))
    aucs = [s.auc for s in scores]
    p = chance_p_value(aucs, [s.labels for s in scores])
    text = (f"validation AUC {np.mean(aucs):.3f} after retraining on permuted labels (mean of "
            f"{len(aucs)}: {', '.join(f'{a:.2f}' for a in aucs)}; chance 0.5; random scores "
            f"reach it with p={p:.3g}, fail below {alpha})")
    if p < alpha:
        return Verdict(FAIL, CHECK, text + " -> the model recognises validation patients from "
                       "training, or the label reaches its inputs")
    return Verdict(PASS, CHECK, text)
