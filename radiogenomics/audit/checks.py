"""The cheap leakage checks: pure functions of the parts of a split, one `Verdict` each.

A `Partition` is one split of patients into parts (``train``, ``val`` and, when it is not the
validation set itself, ``test``): a run, or one fold of a cross-validation. Each check looks at
every partition it is given, so a sweep's folds are checked together.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check: ``PASS``, ``FAIL`` or ``SKIP`` (the check does not apply)."""

    status: str
    check: str
    message: str

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def line(self) -> str:
        """``PASS <check>: <message>``: what the audit prints."""
        return f"{self.status} {self.check}: {self.message}"


@dataclass
class Partition:
    """Patients split into parts (``train``, ``val``, ``test``) by one run or fold.

    ``items`` are the 2D items each part serves, as ``(patient, slice)`` pairs (None for
    volumes); ``fold`` is the fold of a cross-validation (None when unknown).
    """

    name: str
    parts: dict[str, set[str]]
    fold: int | None = None
    items: dict[str, list[tuple[str, int]]] | None = None
    notes: list[str] = field(default_factory=list)

    def part_of(self) -> dict[str, list[str]]:
        """Patient id -> the parts it is in (more than one is a leak)."""
        where: dict[str, list[str]] = defaultdict(list)
        for part, ids in self.parts.items():
            for pid in ids:
                where[pid].append(part)
        return where


def _examples(ids: Iterable[str], limit: int = 5) -> str:
    ids = sorted(ids)
    more = f" (+{len(ids) - limit} more)" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def _overlaps(partition: Partition) -> list[str]:
    problems = []
    for (a, ids_a), (b, ids_b) in combinations(partition.parts.items(), 2):
        shared = ids_a & ids_b
        if shared:
            problems.append(f"{partition.name}: {len(shared)} patient(s) in both {a} and {b} "
                            f"({_examples(shared)})")
    return problems


def _cross_fold(partitions: Sequence[Partition]) -> list[str]:
    """Across the folds of a CV: each patient validated in one fold only, test patients in
    no fold's train or val, and runs of one fold with the same validation patients."""
    by_fold: dict[int, set[str]] = {}
    problems = []
    for partition in partitions:
        if partition.fold is None:
            continue
        val = partition.parts.get("val", set())
        if partition.fold in by_fold and by_fold[partition.fold] != val:
            problems.append(f"fold {partition.fold} has different validation patients in "
                            f"different runs ({partition.name}): the runs used other splits")
        by_fold.setdefault(partition.fold, val)
    validated = Counter(pid for val in by_fold.values() for pid in val)
    twice = [pid for pid, n in validated.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} patient(s) validated in more than one fold "
                        f"({_examples(twice)})")
    trained = [p.parts.get("train", set()) | p.parts.get("val", set()) for p in partitions]
    test_seen = {pid for i, partition in enumerate(partitions)
                 for j, seen in enumerate(trained) if i != j
                 for pid in partition.parts.get("test", set()) & seen}
    if test_seen:
        problems.append(f"{len(test_seen)} test patient(s) in another fold's train or val "
                        f"({_examples(test_seen)})")
    return problems


def check_ids(partitions: Sequence[Partition]) -> Verdict:
    """No patient id in two parts of a run; across the folds of a CV, each patient validated
    once and test patients never trained or validated on."""
    if not partitions:
        return Verdict(SKIP, "id-overlap", "no split to check")
    problems = [p for partition in partitions for p in _overlaps(partition)]
    problems += _cross_fold(partitions)
    if problems:
        return Verdict(FAIL, "id-overlap", "; ".join(problems))
    sizes = partitions[0].parts
    counts = ", ".join(f"{len(ids)} {part}" for part, ids in sizes.items())
    folds = {p.fold for p in partitions} - {None}
    scope = f"{len(folds)} folds" if len(folds) > 1 else partitions[0].name
    notes = sorted({note for p in partitions for note in p.notes})
    return Verdict(PASS, "id-overlap", f"no patient in two parts ({scope}: {counts})"
                   + "".join(f"; {note}" for note in notes))


def check_slices(partitions: Sequence[Partition]) -> Verdict:
    """No patient has 2D items (slices) in two parts: a slice-level split puts neighbouring
    slices of one scan on both sides, and the model recognises the patient, not the label."""
    served = [p for p in partitions if p.items is not None]
    if not served:
        return Verdict(SKIP, "slice-overlap", "the data are whole volumes, not slices")
    problems = []
    for partition in served:
        slices: dict[str, dict[str, int]] = defaultdict(Counter)
        for part, items in partition.items.items():
            for patient, _ in items:
                slices[patient][part] += 1
        mixed = {pid: counts for pid, counts in slices.items() if len(counts) > 1}
        if mixed:
            pid = min(mixed)
            shown = ", ".join(f"{n} {part}" for part, n in mixed[pid].items())
            problems.append(f"{partition.name}: {len(mixed)} of {len(slices)} patient(s) have "
                            f"slices in two parts (e.g. {pid}: {shown} slices)")
    if problems:
        return Verdict(FAIL, "slice-overlap", "; ".join(problems)
                       + " -> split by patient (data.split_unit=patient)")
    total = sum(len(items) for items in served[0].items.values())
    return Verdict(PASS, "slice-overlap", f"every patient's slices are in one part "
                   f"({served[0].name}: {total} slices)")


def leaking_pairs(pairs: Iterable[tuple[str, str]], partitions: Sequence[Partition]
                  ) -> list[tuple[str, str, str]]:
    """The pairs (of near-duplicate scans) split between two parts by some partition:
    ``(a, b, where)``."""
    homes = [(p.name, p.part_of()) for p in partitions]
    leaks = []
    for a, b in pairs:
        for name, part_of in homes:
            parts_a, parts_b = set(part_of.get(a, ())), set(part_of.get(b, ()))
            if parts_a and parts_b and parts_a != parts_b:
                leaks.append((a, b, f"{name}: {a} in {'/'.join(sorted(parts_a))}, "
                                    f"{b} in {'/'.join(sorted(parts_b))}"))
                break
    return leaks


def check_unseen(patients: Iterable[str], partitions: Sequence[Partition], note: str = ""
                 ) -> Verdict:
    """The patients to predict were neither trained nor validated on by the run(s); `note`
    is added to a failure (e.g. that the cohorts differ)."""
    if not partitions:
        return Verdict(SKIP, "unseen-patients", "the run records no split (splits.json)")
    seen = set().union(*(p.parts.get("train", set()) | p.parts.get("val", set())
                         for p in partitions))
    known = sorted(set(patients) & seen)
    if known:
        return Verdict(FAIL, "unseen-patients", f"{len(known)} predicted patient(s) were in the "
                       f"training or validation set of the run(s) ({_examples(known)}): their "
                       f"scores are not a test of the model{note}")
    return Verdict(PASS, "unseen-patients", f"no predicted patient id is among the "
                   f"{len(seen)} the run(s) trained or validated on")
