"""Patient-level k-fold splits, stored as a JSON file (beside the cache, never under the data
root) that users may edit.

File format (ids only, never names)::

    {"n_folds": 5, "seed": 42, "stratify": "mgmt", "stratified": true,
     "folds": [{"train": ["00000", ...], "val": ["00002", ...]}, ...], "test": []}

A file that exists is read back as it is (user edits respected) when it was made for the same
ids, n_folds, seed and stratify label; otherwise loading stops with an error, never mixing.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from radiogenomics.data.case import LABELS, Case
from radiogenomics.errors import CohortError, LabelError
from radiogenomics.files import atomic_write

_REGENERATE = "delete {path} to make new splits, or set data.splits_file to another path"


def _splitter(
    strata: list[Any] | None, grouped: bool, n_folds: int, seed: int
) -> tuple[Any, np.ndarray | None]:
    """The scikit-learn splitter to use and its class codes (None when unstratified)."""
    reason = None
    if strata is not None and any(pd.isna(s) for s in strata):
        reason = f"the label is missing for {sum(pd.isna(s) for s in strata)} case(s)"
    elif strata is not None:
        smallest = min(Counter(strata).values())
        if smallest < n_folds:
            reason = f"a class has {smallest} member(s), fewer than n_folds={n_folds}"
    if reason:
        warnings.warn(f"splits are not stratified: {reason}", UserWarning, stacklevel=3)
    if strata is None or reason:
        return (GroupKFold(n_folds, shuffle=True, random_state=seed) if grouped
                else KFold(n_folds, shuffle=True, random_state=seed)), None
    codes = pd.factorize(pd.Series([str(s) for s in strata]))[0]
    if grouped:
        return StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed), codes
    return StratifiedKFold(n_folds, shuffle=True, random_state=seed), codes


def make_splits(
    case_ids: Sequence[str],
    strata: Sequence[Any] | None = None,
    n_folds: int = 5,
    seed: int = 42,
    test_ids: Iterable[str] = (),
    *,
    groups: Sequence[str] | None = None,
    stratify: str | None = None,
) -> dict[str, Any]:
    """K folds over `case_ids` (minus `test_ids`), stratified by `strata` when it can be.

    `groups` (e.g. the patient of each case) keeps a group's cases in one part of every
    fold. Falls back to unstratified folds, with a warning, when a stratum is missing or a
    class has fewer members than folds. The result does not depend on the order of the ids.
    `stratify` is the label's name, recorded in the result.
    """
    ids = [str(pid) for pid in case_ids]
    duplicated = sorted(pid for pid, n in Counter(ids).items() if n > 1)
    if duplicated:
        raise CohortError(f"case ids are not unique: {', '.join(duplicated)}",
                          hint="each case must appear once in the cohort")
    test = {str(pid) for pid in test_ids}
    unknown = sorted(test - set(ids))
    if unknown:
        raise CohortError(f"test ids are not cases of the cohort: {', '.join(unknown)}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    order = [i for i in sorted(range(len(ids)), key=ids.__getitem__) if ids[i] not in test]
    cv_ids = [ids[i] for i in order]
    if len(cv_ids) < n_folds:
        raise CohortError(f"{len(cv_ids)} case(s) cannot make {n_folds} folds",
                          hint="lower data.n_folds or add cases")
    cv_groups = [str(groups[i]) for i in order] if groups is not None else cv_ids
    cv_strata = [strata[i] for i in order] if strata is not None else None
    classes = {str(s) for s in cv_strata if not pd.isna(s)} if cv_strata is not None else set()
    if len(classes) == 1:
        raise LabelError(f"every labelled case has {stratify or 'the label'} = {classes.pop()}: "
                         "a model cannot learn (and AUC is undefined) from one class",
                         hint="check the label table (its column and values) and data.target")
    grouped = len(set(cv_groups)) < len(cv_groups)
    splitter, codes = _splitter(cv_strata, grouped, n_folds, seed)
    parts = splitter.split(np.zeros(len(cv_ids)), codes, cv_groups if grouped else None)
    folds = [
        {"train": sorted(cv_ids[i] for i in train), "val": sorted(cv_ids[i] for i in val)}
        for train, val in parts
    ]
    return {
        "n_folds": n_folds, "seed": seed, "stratify": stratify, "stratified": codes is not None,
        "folds": folds, "test": sorted(test),
    }


def validate_splits(splits: dict[str, Any], path: str | Path | None = None) -> None:
    """Check a splits dict: no id in two parts of a fold, each id validated exactly once."""
    hint = "correct the file, or " + _REGENERATE.format(path=path or "it")
    folds = splits.get("folds") if isinstance(splits, dict) else None
    if not isinstance(folds, list) or not all(
        isinstance(f, dict) and isinstance(f.get("train"), list) and isinstance(f.get("val"), list)
        for f in folds
    ):
        raise CohortError('splits need "folds": a list of {"train": [...], "val": [...]}',
                          path=path, hint=hint)
    if splits.get("n_folds") != len(folds):
        raise CohortError(f"n_folds is {splits.get('n_folds')} but there are {len(folds)} folds",
                          path=path, hint=hint)
    every = {pid for fold in folds for pid in fold["train"] + fold["val"]}
    test = set(splits.get("test", []))
    problems = [f"{pid}: in the test set and in the folds" for pid in sorted(test & every)]
    validated = Counter(pid for fold in folds for pid in fold["val"])
    problems += [f"{pid}: validated in {n} folds" for pid, n in sorted(validated.items()) if n > 1]
    problems += [f"{pid}: never validated" for pid in sorted(every - set(validated))]
    for k, fold in enumerate(folds):
        train, val = fold["train"], fold["val"]
        problems += [f"{pid}: listed twice in fold {k}"
                     for pid, n in sorted(Counter(train + val).items())
                     if n > 1 and not (pid in train and pid in val)]
        problems += [f"{pid}: in both train and val of fold {k}"
                     for pid in sorted(set(train) & set(val))]
        problems += [f"{pid}: in neither train nor val of fold {k}"
                     for pid in sorted(every - set(train) - set(val))]
    if problems:
        raise CohortError("invalid splits:\n  " + "\n  ".join(problems), path=path, hint=hint)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write `data` to `path` through a temporary file, so readers never see half a file."""
    with atomic_write(path) as temporary, open(temporary, "w") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CohortError(f"splits file is not valid JSON: {error}", path=path,
                          hint="fix it, or " + _REGENERATE.format(path=path)) from error


def _check_matches(
    stored: dict[str, Any], settings: dict[str, Any], cv_ids: set[str], test: set[str], path: Path
) -> None:
    """Stop if `stored` was made for other settings or other ids than this run's."""
    hint = _REGENERATE.format(path=path)
    if any(stored.get(key) != value for key, value in settings.items()):
        was = ", ".join(f"{key}={stored.get(key)!r}" for key in settings)
        now = ", ".join(f"{key}={value!r}" for key, value in settings.items())
        raise CohortError(f"splits file was made with {was}, this run asks for {now}",
                          path=path, hint=hint)
    stored_cv = {pid for fold in stored["folds"] for pid in fold["val"]}
    stored_test = set(stored.get("test", []))
    for part, have, want in (("cross-validation", stored_cv, cv_ids), ("test", stored_test, test)):
        if have != want:
            added, removed = sorted(want - have), sorted(have - want)
            raise CohortError(
                f"the cohort's {part} ids changed since the splits file was written: "
                f"{len(added)} new ({', '.join(added[:10])}), "
                f"{len(removed)} gone ({', '.join(removed[:10])})",
                path=path, hint=hint,
            )


def load_or_create_splits(
    path: str | Path,
    cases: Iterable[Case],
    label: str | None = None,
    n_folds: int = 5,
    seed: int = 42,
    *,
    test_ids: Iterable[str] = (),
) -> dict[str, Any]:
    """The splits stored at `path`, or new ones written there; stratified by `label`.

    Cases with a ``patient`` key are grouped by it. ``survival`` stratifies by survival
    class; a label that is not a case-level label (``seg``, ``sequence``) gives plain folds.
    """
    path = Path(path)
    cases = list(cases)
    test = {str(pid) for pid in test_ids}
    stratify = {"survival": "survival_class"}.get(label, label)
    stratify = stratify if stratify in LABELS else None
    ids = [case["id"] for case in cases]
    if path.is_file():
        stored = _read_json(path)
        validate_splits(stored, path)
        settings = {"n_folds": n_folds, "seed": seed, "stratify": stratify}
        _check_matches(stored, settings, set(ids) - test, test, path)
        return stored
    strata = [case["labels"].get(stratify) for case in cases] if stratify else None
    groups = [case.get("patient", case["id"]) for case in cases]
    splits = make_splits(ids, strata, n_folds, seed, test, groups=groups, stratify=stratify)
    _write_json_atomic(path, splits)
    return splits


def fold_ids(splits: dict[str, Any], fold: int) -> tuple[list[str], list[str]]:
    """Train and val ids of fold `fold`."""
    n_folds = len(splits["folds"])
    if not 0 <= fold < n_folds:
        raise CohortError(f"fold {fold} does not exist: the splits have folds 0-{n_folds - 1}",
                          hint=f"set data.fold to a number from 0 to {n_folds - 1}")
    return list(splits["folds"][fold]["train"]), list(splits["folds"][fold]["val"])
