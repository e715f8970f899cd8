"""Patient-level k-fold splits: determinism, disjointness, stratification, the editable file."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from radiogenomics.data.splits import (
    fold_ids,
    load_or_create_splits,
    make_splits,
    validate_splits,
)
from radiogenomics.errors import CohortError


def ids_of(n: int) -> list[str]:
    return [f"{i:05d}" for i in range(n)]


def cases_of(n: int, positives: int) -> list[dict]:
    return [{"id": pid, "labels": {"mgmt": int(i < positives)}, "images": {}}
            for i, pid in enumerate(ids_of(n))]


def test_same_seed_same_split_other_seed_other_split() -> None:
    ids, strata = ids_of(40), [i % 2 for i in range(40)]
    assert make_splits(ids, strata, 5, seed=1) == make_splits(ids, strata, 5, seed=1)
    assert make_splits(ids, strata, 5, seed=1)["folds"] != make_splits(ids, strata, 5, 2)["folds"]


def test_split_does_not_depend_on_id_order() -> None:
    ids, strata = ids_of(30), [i % 3 for i in range(30)]
    order = list(range(30))
    random.Random(0).shuffle(order)
    shuffled = make_splits([ids[i] for i in order], [strata[i] for i in order], 5, 7)
    assert shuffled == make_splits(ids, strata, 5, 7)


@settings(max_examples=40, deadline=None)
@given(
    n_folds=st.integers(2, 6),
    extra=st.integers(0, 40),
    seed=st.integers(0, 2**31 - 1),
    stratified=st.booleans(),
)
def test_every_id_validated_once_and_no_leak(
    n_folds: int, extra: int, seed: int, stratified: bool
) -> None:
    ids = ids_of(n_folds * 2 + extra)
    strata = [i % 2 for i in range(len(ids))] if stratified else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splits = make_splits(ids, strata, n_folds, seed)
    validate_splits(splits)
    assert len(splits["folds"]) == n_folds
    validated = [pid for fold in splits["folds"] for pid in fold["val"]]
    assert sorted(validated) == ids
    for fold in splits["folds"]:
        assert not set(fold["train"]) & set(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == ids


def test_stratification_keeps_class_ratio() -> None:
    ids, strata = ids_of(100), [int(i < 30) for i in range(100)]
    splits = make_splits(ids, strata, n_folds=5, seed=3)
    positive = set(ids[:30])
    assert splits["stratified"] is True
    for fold in splits["folds"]:
        assert len(fold["val"]) == 20 and len(positive & set(fold["val"])) == 6


@pytest.mark.parametrize(
    ("strata", "reason"),
    [([int(i < 3) for i in range(20)], "fewer than n_folds"),
     ([None] + [i % 2 for i in range(19)], "missing for 1 case")],
)
def test_unstratified_fallback_warns(strata: list, reason: str) -> None:
    with pytest.warns(UserWarning, match=reason):
        splits = make_splits(ids_of(20), strata, n_folds=5)
    assert splits["stratified"] is False
    validate_splits(splits)


def test_groups_stay_together() -> None:
    ids = [f"{p:05d}-{t:03d}" for p in range(12) for t in range(2)]
    groups = [pid.split("-")[0] for pid in ids]
    for strata in ([i % 2 for i in range(len(ids))], None):
        for fold in make_splits(ids, strata, 4, seed=0, groups=groups)["folds"]:
            train = {pid.split("-")[0] for pid in fold["train"]}
            assert not train & {pid.split("-")[0] for pid in fold["val"]}


def test_test_ids_are_held_out() -> None:
    splits = make_splits(ids_of(12), None, 3, test_ids=["00011", "00000"])
    assert splits["test"] == ["00000", "00011"]
    every = {pid for fold in splits["folds"] for pid in fold["train"] + fold["val"]}
    assert every == set(ids_of(12)) - {"00000", "00011"}


def test_bad_requests() -> None:
    with pytest.raises(CohortError, match="not unique: 00001"):
        make_splits(["00001", "00002", "00001"], None, 2)
    with pytest.raises(CohortError, match="3 case"):
        make_splits(ids_of(3), None, 5)
    with pytest.raises(CohortError, match="not cases of the cohort: 99999"):
        make_splits(ids_of(10), None, 2, test_ids=["99999"])


# --------------------------------------------------------------------------- the file


def test_file_written_with_ids_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "splits.json"
    cases = cases_of(20, 8)
    splits = load_or_create_splits(path, cases, "mgmt", 4, 42)
    stored = json.loads(path.read_text())
    assert stored == splits
    assert {k: stored[k] for k in ("n_folds", "seed", "stratify")} == {
        "n_folds": 4, "seed": 42, "stratify": "mgmt",
    }
    assert set(stored["folds"][0]) == {"train", "val"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["splits.json"]
    assert load_or_create_splits(path, list(reversed(cases)), "mgmt", 4, 42) == splits
    train, val = fold_ids(splits, 3)
    assert sorted(train + val) == ids_of(20)
    with pytest.raises(CohortError, match="folds 0-3"):
        fold_ids(splits, 4)


def test_user_edits_are_respected(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    splits = load_or_create_splits(path, cases_of(20, 8), "mgmt", 4, 42)
    first, second = splits["folds"][0], splits["folds"][1]
    moved = first["val"][0]
    first["val"].remove(moved)
    first["train"].append(moved)
    second["val"].append(moved)
    second["train"].remove(moved)
    path.write_text(json.dumps(splits))
    assert load_or_create_splits(path, cases_of(20, 8), "mgmt", 4, 42) == splits


def test_leak_in_edited_file_names_the_id(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    splits = load_or_create_splits(path, cases_of(20, 8), "mgmt", 4, 42)
    leaked = splits["folds"][2]["val"][0]
    splits["folds"][2]["train"].append(leaked)
    path.write_text(json.dumps(splits))
    with pytest.raises(CohortError, match=f"{leaked}: in both train and val of fold 2"):
        load_or_create_splits(path, cases_of(20, 8), "mgmt", 4, 42)


def test_id_validated_twice_or_never(tmp_path: Path) -> None:
    splits = make_splits(ids_of(12), None, 3)
    twice = splits["folds"][0]["val"][0]
    splits["folds"][1]["val"].append(twice)
    splits["folds"][1]["train"].remove(twice)
    with pytest.raises(CohortError, match=f"{twice}: validated in 2 folds"):
        validate_splits(splits)
    splits = make_splits(ids_of(12), None, 3)
    never = splits["folds"][0]["val"].pop()
    splits["folds"][0]["train"].append(never)
    with pytest.raises(CohortError, match=f"{never}: never validated"):
        validate_splits(splits)


def test_changed_ids_or_settings_stop_with_a_fix(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    load_or_create_splits(path, cases_of(20, 8), "mgmt", 4, 42)
    with pytest.raises(CohortError, match=r"ids changed.*1 new \(00020\)") as info:
        load_or_create_splits(path, cases_of(21, 8), "mgmt", 4, 42)
    assert "delete" in str(info.value) and "data.splits_file" in str(info.value)
    with pytest.raises(CohortError, match=r"0 new \(\), 1 gone \(00019\)"):
        load_or_create_splits(path, cases_of(19, 8), "mgmt", 4, 42)
    with pytest.raises(CohortError, match="n_folds=4.*n_folds=5"):
        load_or_create_splits(path, cases_of(20, 8), "mgmt", 5, 42)
    with pytest.raises(CohortError, match="seed=42.*seed=0"):
        load_or_create_splits(path, cases_of(20, 8), "mgmt", 4, 0)
    with pytest.raises(CohortError, match="stratify='mgmt'.*stratify=None"):
        load_or_create_splits(path, cases_of(20, 8), "seg", 4, 42)


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "splits.json"
    path.write_text('{"n_folds": 5, "folds": [')
    with pytest.raises(CohortError, match="not valid JSON"):
        load_or_create_splits(path, cases_of(20, 8), "mgmt")
    path.write_text('{"n_folds": 5, "folds": {}}')
    with pytest.raises(CohortError, match='"folds"'):
        load_or_create_splits(path, cases_of(20, 8), "mgmt")
