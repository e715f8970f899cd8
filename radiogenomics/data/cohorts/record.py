"""The `Cohort` record, the `Options` every layout takes, and the steps the layouts share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from radiogenomics.data.case import SEQUENCES, Case
from radiogenomics.errors import CohortError, Failure

from .names import normalise_id
from .tables import survival_class

log = logging.getLogger(__name__)

ON_MISSING: tuple[str, ...] = ("raise", "skip", "report")

_SKIP_HINT = "fix or remove them, or set data.on_error=skip to train without them"


@dataclass
class Cohort:
    """The usable cases of a cohort, with the patients left out and why."""

    name: str
    root: Path
    cases: list[Case]
    skipped: list[Failure] = field(default_factory=list)
    """Each patient dropped by ``on_missing="skip"`` (or ``"report"``), with the reason."""
    excluded: list[str] = field(default_factory=list)
    """Patients found on disk but left out on purpose (the `exclude` list)."""

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __getitem__(self, index: int) -> Case:
        return self.cases[index]

    @property
    def ids(self) -> list[str]:
        """Case ids, in cohort order."""
        return [case["id"] for case in self.cases]


@dataclass(frozen=True)
class Options:
    """The keyword options of every layout function (``layout(root, **options)``).

    A layout ignores the options that do not apply to it (an RSNA cohort has no masks to
    require, a synthetic one reads all four sequences) and refuses a value it cannot honour
    (a split that a one-folder layout does not have).
    """

    split: str = "train"
    """The part of the cohort to read; one-folder layouts only have ``train``."""
    sequences: Sequence[str] = SEQUENCES
    """The sequences each case must have (any case or alias)."""
    exclude: Iterable[str | int] = ()
    """Patients left out on purpose, listed in `Cohort.excluded`."""
    require_all_sequences: bool = True
    """False keeps patients that have some of `sequences` only."""
    require_seg: bool = False
    """A case without a tumour mask is a problem (BraTS layouts)."""
    allow_unlabelled: bool = False
    """Patients without a label row (and a missing label table) are kept (series layouts)."""
    image_format: str = "dicom"
    """Which images of a cohort that has both (synthetic): ``dicom`` or ``nifti``."""
    on_missing: str = "raise"
    """A bad patient raises (``raise``), or is left out and reported (``skip``); ``report``
    is ``skip`` that returns an empty cohort rather than raise when no patient is usable."""

    def __post_init__(self) -> None:
        if self.on_missing not in ON_MISSING:
            raise ValueError(f"on_missing must be one of {ON_MISSING}, got {self.on_missing!r}")

    @classmethod
    def of(cls, options: dict[str, Any], **defaults: Any) -> Options:
        """The `options` a layout was called with, over that layout's `defaults`."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"unknown cohort option(s) {', '.join(unknown)}; "
                            f"a layout takes {', '.join(known)}")
        return cls(**{**defaults, **options})

    @property
    def excluded(self) -> set[str]:
        """The `exclude` patients as normalised ids."""
        return {normalise_id(pid) for pid in self.exclude}


Layout = Callable[..., Cohort]
"""A layout function: ``layout(root, **options)`` -> Cohort, the options those of `Options`."""


def make_case(
    pid: str,
    images: dict[str, str],
    labels: dict[str, Any],
    source: str,
    seg: str | None = None,
    label_scheme: str | None = None,
) -> Case:
    """A case record; `survival_class` is derived whenever `survival_days` is known."""
    labels = dict(labels)
    if "survival_days" in labels:
        labels["survival_class"] = survival_class(labels["survival_days"])
    return {
        "id": pid, "images": images, "seg": seg, "labels": labels,
        "source": source, "label_scheme": label_scheme,
    }


def existing_dir(path: str | Path, what: str, hint: str) -> Path:
    """`path` as a Path, or a CohortError if it is not a folder."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CohortError(f"{what} does not exist or is not a folder", path=path, hint=hint)
    return path


def check_single_split(split: str, name: str, root: str | Path) -> None:
    """Layouts with one folder of cases only have a ``train`` split: the whole folder."""
    if split != "train":
        raise CohortError(
            f"the {name} layout has no {split!r} split: all of its cases are one split",
            path=root, hint="point data.root at that part's own folder, or set data.test_split=val",
        )


def subfolders(path: Path) -> list[Path]:
    """Visible sub-folders of `path`, sorted by name."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def finish(
    name: str,
    root: Path,
    cases: dict[str, Case],
    problems: list[tuple[str, str]],
    on_missing: str,
    excluded: Iterable[str] = (),
) -> Cohort:
    """Raise on problems (default) or drop and report the bad patients; sort cases by id.

    Problems are grouped per patient: one (patient, reasons joined by "; ") each.
    """
    reasons: dict[str, list[str]] = {}
    for pid, reason in sorted(set(problems)):
        reasons.setdefault(pid, []).append(reason)
    problems = [(pid, "; ".join(why)) for pid, why in reasons.items()]
    bad = list(reasons)
    listing = "\n  ".join(f"{pid}: {reason}" for pid, reason in problems)
    if problems and on_missing == "raise":
        raise CohortError(
            f"{len(bad)} patient(s) of the {name} cohort cannot be used:\n  {listing}",
            patient=bad[0] if len(bad) == 1 else None, path=root, hint=_SKIP_HINT,
        )
    if problems:
        log.warning("%s cohort: skipped %d patient(s):\n  %s", name, len(bad), listing)
    kept = [cases[pid] for pid in sorted(cases) if pid not in reasons]
    if not kept and on_missing != "report":
        raise CohortError(f"the {name} cohort has no usable case", path=root,
                          hint="check data.root and the layout of the cohort")
    return Cohort(name=name, root=root, cases=kept, excluded=sorted(excluded),
                  skipped=[Failure(pid, reason) for pid, reason in problems])
