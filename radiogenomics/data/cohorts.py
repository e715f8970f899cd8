"""Cohort layouts on disk -> case records (see `case.py`), validated patient by patient.

Every layout returns a `Cohort`: `cases` sorted by id, and `skipped`, the (patient, reason)
of each patient left out. By default (``on_missing="raise"``) one CohortError lists every bad
patient at once; ``on_missing="skip"`` keeps the good ones and reports the rest, so that a
batch job never drops a patient silently; ``on_missing="report"`` does the same and returns
an empty cohort when no patient is usable (a prediction still lists every one of them).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from radiogenomics.data.case import SEQUENCES, Case, canonical_sequence
from radiogenomics.errors import CohortError, Failure, LabelError

log = logging.getLogger(__name__)

RSNA_FLAGGED: tuple[str, ...] = ("00109", "00123", "00709")
"""RSNA-MICCAI 2021 cases the organisers flagged as unusable."""

ON_MISSING: tuple[str, ...] = ("raise", "skip", "report")

_ID_COLUMNS = ("brats21id", "brats20id", "brats19id", "brats18id")
_LABEL_COLUMNS = {
    "mgmt_value": "mgmt", "grade": "grade", "age": "age",
    "survival_days": "survival_days", "survival": "survival_days",
}
_BINARY_LABELS = ("mgmt", "grade")
_CASE_ID_PATTERNS = (re.compile(r"BraTS2021_(\d{5})"), re.compile(r"BraTS-GLI-(\d{5}-\d{3})"))
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


# ---------------------------------------------------------------------------- labels


def survival_class(days: float) -> int:
    """Survival group of the BraTS challenge: 0 short (< 300 days), 1 mid, 2 long (> 450)."""
    if days < 300:
        return 0
    return 1 if days <= 450 else 2


def normalise_id(raw: object) -> str:
    """A patient id as the cases use it: RSNA integers padded to 5 digits, BraTS prefixes cut."""
    text = str(raw).strip()
    if text.isdigit():
        return text.zfill(5)
    for pattern in _CASE_ID_PATTERNS:
        match = pattern.fullmatch(text)
        if match:
            return match.group(1)
    return text


def _parse_column(raw: pd.Series, label: str, required: bool) -> tuple[pd.Series, pd.Series]:
    """Numbers of one label column (NaN = absent) and the mask of invalid cells."""
    text = raw.str.strip()
    text = text.mask(text == "")
    if label == "survival_days":
        # BraTS 2020 writes censored patients as "ALIVE (361 days later)": survival unknown.
        text = text.mask(text.str.upper().str.startswith("ALIVE", na=False))
    values = pd.to_numeric(text, errors="coerce")
    valid = values.isin([0, 1]) if label in _BINARY_LABELS else values >= 0
    invalid = text.notna() & ~valid
    if required:
        invalid |= text.isna()
    return values, invalid


def read_label_table(path: str | Path, required: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Patient id -> {label: value} from a CSV label table; blank cells are absent labels.

    Understood columns (any case): BraTS21ID / Brats20ID / BraTS18ID / BraTS19ID, MGMT_value,
    grade, age, survival_days / Survival_days / Survival. `required` labels must have a
    column and a value on every row.
    """
    path = Path(path)
    hint = "fix the table: one row per patient, ids in BraTS21ID, 0/1 labels, days and ages >= 0"
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CohortError(f"cannot parse label table: {error}", path=path, hint=hint) from error
    columns = {str(c).strip().lower(): c for c in table.columns}
    id_column = next((columns[c] for c in _ID_COLUMNS if c in columns), None)
    found = {label: columns[c] for c, label in _LABEL_COLUMNS.items() if c in columns}
    missing = ([] if id_column else ["BraTS21ID"]) + [
        {"mgmt": "MGMT_value"}.get(label, label) for label in required if label not in found
    ]
    if missing:
        raise CohortError(
            f"label table lacks column(s) {', '.join(missing)}; it has {list(table.columns)}",
            path=path, hint=hint,
        )
    ids = table[id_column].map(normalise_id, na_action="ignore")
    bad = [f"row {row + 2}: no patient id" for row in ids.index[ids.isna()]]
    duplicated = sorted(set(ids[ids.duplicated() & ids.notna()]))
    bad += [f"patient {pid}: more than one row" for pid in duplicated]
    parsed = {}
    for label, column in found.items():
        values, invalid = _parse_column(table[column], label, label in required)
        expected = "0 or 1" if label in _BINARY_LABELS else "a number >= 0"
        bad += [
            f"patient {ids[row]}: {column} is {table[column][row]!r}, expected {expected}"
            for row in values.index[invalid]
        ]
        parsed[label] = values
    if bad:
        raise LabelError(
            f"invalid label table ({len(bad)} problem(s)):\n  " + "\n  ".join(bad),
            path=path, hint=hint,
        )
    rows: dict[str, dict[str, Any]] = {}
    for row, pid in ids.items():
        labels = {label: values[row] for label, values in parsed.items() if pd.notna(values[row])}
        rows[pid] = {k: int(v) if k in _BINARY_LABELS else float(v) for k, v in labels.items()}
    return rows


def _merge_label_tables(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
    """Labels of every existing table in `paths`, merged; a disagreement is a LabelError."""
    merged: dict[str, dict[str, Any]] = {}
    origin: dict[tuple[str, str], Path] = {}
    conflicts = []
    for path in paths:
        if not path.is_file():
            continue
        for pid, row in read_label_table(path).items():
            labels = merged.setdefault(pid, {})
            for label, value in row.items():
                if label in labels and labels[label] != value:
                    conflicts.append(
                        f"patient {pid}: {label} is {labels[label]} in "
                        f"{origin[pid, label]} but {value} in {path}"
                    )
                    continue
                labels[label] = value
                origin[pid, label] = path
    if conflicts:
        raise LabelError(
            "label tables disagree:\n  " + "\n  ".join(conflicts),
            hint="correct the wrong table, or remove one of them",
        )
    return merged


def _case(
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


# ---------------------------------------------------------------------- shared steps


def _existing_dir(path: str | Path, what: str, hint: str) -> Path:
    """`path` as a Path, or a CohortError if it is not a folder."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CohortError(f"{what} does not exist or is not a folder", path=path, hint=hint)
    return path


def _check_on_missing(on_missing: str) -> None:
    if on_missing not in ON_MISSING:
        raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")


def _check_single_split(split: str, name: str, root: str | Path) -> None:
    """Layouts with one folder of cases only have a ``train`` split: the whole folder."""
    if split != "train":
        raise CohortError(
            f"the {name} layout has no {split!r} split: all of its cases are one split",
            path=root, hint="point data.root at that part's own folder, or set data.test_split=val",
        )


def _subfolders(path: Path) -> list[Path]:
    """Visible sub-folders of `path`, sorted by name."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _finish(
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


def _exclude_set(exclude: Iterable[str | int]) -> set[str]:
    return {normalise_id(pid) for pid in exclude}


# -------------------------------------------------------------- series-folder layouts


def _numeric_patient_folders(split_dir: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Patient id (5 digits) -> folder, and the folders that are not named by an id."""
    folders: dict[str, Path] = {}
    problems = []
    for folder in _subfolders(split_dir):
        if not folder.name.isdigit():
            problems.append((folder.name, f"folder {folder} is not named by a numeric patient id"))
            continue
        pid = folder.name.zfill(5)
        if pid in folders:
            problems.append((pid, f"two folders for one id: {folders[pid]} and {folder}"))
        folders[pid] = folder
    return folders, problems


def sequence_folders(patient_dir: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Sub-folders of a patient named after an MRI sequence (any case or alias), by canonical
    name, and the sequences that two or more folders name (``T1C/`` beside ``T1wCE/``,
    ``flair/`` beside ``FLAIR/``): those are never picked from, but reported."""
    named: dict[str, list[Path]] = {}
    for folder in _subfolders(patient_dir):
        try:
            named.setdefault(canonical_sequence(folder.name), []).append(folder)
        except KeyError:
            continue
    found = {seq: folders[0] for seq, folders in named.items() if len(folders) == 1}
    duplicated = {seq: folders for seq, folders in named.items() if len(folders) > 1}
    return found, duplicated


def duplicate_problem(sequence: str, folders: Sequence[Path]) -> str:
    """The message of a sequence that two folders of one patient name."""
    return (f"{len(folders)} folders are sequence {sequence}: "
            + " and ".join(str(f) for f in folders)
            + " -> keep one (rename or move the other out of the patient folder)")


def _series_images(
    patient_dir: Path, suffix: str, sequences: Sequence[str], require_all: bool
) -> tuple[dict[str, str], list[str]]:
    """Sequence -> series folder of one patient, and what is wrong with it."""
    found, duplicated = sequence_folders(patient_dir)
    images: dict[str, str] = {}
    problems = []
    for sequence in sequences:
        folder = found.get(sequence)
        if sequence in duplicated:
            problems.append(duplicate_problem(sequence, duplicated[sequence]))
            continue
        if folder is None:
            problem = f"missing sequence folder {patient_dir / sequence}"
        elif not any(f.suffix.lower() == suffix for f in folder.iterdir()):
            problem = f"empty sequence folder {folder} (no {suffix} file)"
        else:
            images[sequence] = str(folder)
            continue
        if require_all:
            problems.append(problem)
    if not images and not problems:
        problems.append(f"no series of {', '.join(sequences)} in {patient_dir}")
    return images, problems


def _series_cohort(
    name: str,
    patients_dir: Path,
    suffix: str,
    labels_file: Path | None,
    clinical_files: Sequence[Path],
    *,
    exclude: Iterable[str | int],
    sequences: Sequence[str],
    require_all_sequences: bool,
    allow_unlabelled: bool,
    on_missing: str,
) -> Cohort:
    """A cohort laid out as ``<id>/<SEQ>/Image-N.<suffix>``, MGMT labels in `labels_file`."""
    _check_on_missing(on_missing)
    sequences = [canonical_sequence(s) for s in sequences]
    folders, problems = _numeric_patient_folders(patients_dir)
    if not folders:
        raise CohortError("no patient folder found", path=patients_dir,
                          hint="expected <5-digit id>/<SEQ>/Image-N" + suffix)
    skip = _exclude_set(exclude)
    split_labels = read_label_table(labels_file, required=("mgmt",)) if labels_file else {}
    labels = _merge_label_tables([p for p in (labels_file, *clinical_files) if p is not None])
    problems += [
        (pid, f"labelled in {labels_file} but has no folder in {patients_dir}")
        for pid in split_labels
        if pid not in folders and pid not in skip
    ]
    cases = {}
    for pid, folder in folders.items():
        if pid in skip:
            continue
        images, issues = _series_images(folder, suffix, sequences, require_all_sequences)
        if labels_file is not None and pid not in split_labels and not allow_unlabelled:
            issues.append(f"has no MGMT_value row in {labels_file}")
        problems += [(pid, issue) for issue in issues]
        cases[pid] = _case(pid, images, labels.get(pid, {}), source=name)
    return _finish(name, patients_dir, cases, problems, on_missing, skip & set(folders))


def rsna_cohort(
    root: str | Path,
    split: str = "train",
    exclude: Iterable[str | int] = RSNA_FLAGGED,
    sequences: Sequence[str] = SEQUENCES,
    require_all_sequences: bool = True,
    allow_unlabelled: bool = False,
    on_missing: str = "raise",
) -> Cohort:
    """RSNA-MICCAI 2021: ``root/<split>/<id>/<SEQ>/Image-N.dcm``, image = the series folder.

    MGMT from ``root/<split>_labels.csv`` (required for the train split unless
    `allow_unlabelled`); grade, age and survival from ``root/clinical.csv`` when present.
    """
    root = _existing_dir(root, "RSNA cohort root", "set data.root to the folder holding train/")
    present = [p.name for p in _subfolders(root)]
    split_dir = _existing_dir(root / split, f"split folder {split!r}",
                              f"data.root must hold {split}/; it holds {present}")
    labels_file: Path | None = root / f"{split}_labels.csv"
    if not labels_file.is_file():
        if split == "train" and not allow_unlabelled:
            raise CohortError("MGMT label table is missing", path=labels_file,
                              hint="copy train_labels.csv (BraTS21ID,MGMT_value) into data.root; "
                                   "predict.py reads cohorts without labels")
        labels_file = None
    return _series_cohort(
        "rsna", split_dir, ".dcm", labels_file, [root / "clinical.csv"],
        exclude=exclude, sequences=sequences, require_all_sequences=require_all_sequences,
        allow_unlabelled=allow_unlabelled, on_missing=on_missing,
    )


def png_cohort(
    root: str | Path,
    split: str = "train",
    exclude: Iterable[str | int] = RSNA_FLAGGED,
    sequences: Sequence[str] = SEQUENCES,
    require_all_sequences: bool = True,
    allow_unlabelled: bool = False,
    on_missing: str = "raise",
) -> Cohort:
    """PNG conversions of RSNA: ``root/<id>/<SEQ>/Image-N.png``, image = the series folder.

    MGMT from ``root/train_labels.csv``, else ``root/../train_labels.csv``. The whole folder
    is the ``train`` split.
    """
    _check_single_split(split, "png", root)
    root = _existing_dir(root, "PNG cohort root", "set data.root to the folder of <id>/ folders")
    candidates = [root / "train_labels.csv", root.parent / "train_labels.csv"]
    labels_file = next((p for p in candidates if p.is_file()), None)
    if labels_file is None and not allow_unlabelled:
        raise CohortError("MGMT label table is missing", path=candidates[0],
                          hint=f"put train_labels.csv in {root} or {root.parent}; "
                               "predict.py reads cohorts without labels")
    clinical = [labels_file.parent / "clinical.csv"] if labels_file else []
    return _series_cohort(
        "png", root, ".png", labels_file, clinical,
        exclude=exclude, sequences=sequences, require_all_sequences=require_all_sequences,
        allow_unlabelled=allow_unlabelled, on_missing=on_missing,
    )


# ------------------------------------------------------------------- NIfTI layouts


@dataclass(frozen=True)
class _NiftiLayout:
    """File naming of a BraTS-style release: ``<case>/<case><sep><suffix>.nii.gz``."""

    sep: str
    suffixes: dict[str, str]
    """Canonical sequence -> file suffix."""
    source: str
    label_scheme: str


_BRATS2021 = _NiftiLayout(
    "_", {"FLAIR": "flair", "T1w": "t1", "T1wCE": "t1ce", "T2w": "t2"}, "brats2021", "brats2021"
)
_BRATS2023 = _NiftiLayout(
    "-", {"FLAIR": "t2f", "T1w": "t1n", "T1wCE": "t1c", "T2w": "t2w"}, "brats2023", "brats2023"
)
_BRATS_HGG_LGG = _NiftiLayout("_", _BRATS2021.suffixes, "brats_hgg_lgg", "brats2021")


def _nifti_file(folder: Path, layout: _NiftiLayout, suffix: str) -> Path | None:
    """The ``.nii.gz`` (or ``.nii``) file of `suffix` in a case folder, if present; both
    present is a CohortError naming them (never a silent pick)."""
    stem = f"{folder.name}{layout.sep}{suffix}"
    present = [p for p in (folder / f"{stem}.nii.gz", folder / f"{stem}.nii") if p.is_file()]
    if len(present) > 1:
        raise CohortError(f"two files of one image: {present[0].name} and {present[1].name}",
                          path=folder, hint="keep one of them")
    return present[0] if present else None


def _nifti_case(
    pid: str,
    folder: Path,
    layout: _NiftiLayout,
    labels: dict[str, Any],
    sequences: Sequence[str],
    require_all: bool,
    require_seg: bool,
) -> tuple[Case, list[str]]:
    """A case read from one BraTS-style folder, and what is wrong with it."""
    images: dict[str, str] = {}
    problems = []
    for sequence in sequences:
        try:
            path = _nifti_file(folder, layout, layout.suffixes[sequence])
        except CohortError as error:
            problems.append(str(error))
            continue
        if path is not None:
            images[sequence] = str(path)
        elif require_all:
            problems.append(f"missing {folder.name}{layout.sep}{layout.suffixes[sequence]}.nii.gz")
    if not images and not problems:
        problems.append(f"no image file in {folder}")
    try:
        seg = _nifti_file(folder, layout, "seg")
    except CohortError as error:
        problems.append(str(error))
        seg = None
    if seg is None and require_seg:
        problems.append(f"missing {folder.name}{layout.sep}seg.nii.gz")
    case = _case(pid, images, labels, layout.source,
                 str(seg) if seg else None, layout.label_scheme)
    return case, problems


def _nifti_cohort(
    root: Path,
    layout: _NiftiLayout,
    folders: dict[str, Path],
    labels: dict[str, dict[str, Any]],
    problems: list[tuple[str, str]],
    *,
    exclude: Iterable[str | int],
    sequences: Sequence[str],
    require_all_sequences: bool,
    require_seg: bool,
    on_missing: str,
) -> Cohort:
    """Cases of the BraTS-style `folders` (id -> folder), with their `labels`."""
    sequences = [canonical_sequence(s) for s in sequences]
    skip = _exclude_set(exclude)
    cases = {}
    for pid, folder in folders.items():
        if pid in skip:
            continue
        case, issues = _nifti_case(pid, folder, layout, labels.get(pid, {}), sequences,
                                   require_all_sequences, require_seg)
        cases[pid] = case
        problems = problems + [(pid, issue) for issue in issues]
    unmatched = set(labels) - set(folders)
    if unmatched:
        log.info("%s: %d labelled patient(s) have no case folder in %s",
                 layout.source, len(unmatched), root)
    return _finish(layout.source, root, cases, problems, on_missing, skip & set(folders))


def _case_folders(root: Path, pattern: re.Pattern[str], expected: str) -> dict[str, Path]:
    """Case id -> folder for the sub-folders of `root` whose name matches `pattern`."""
    folders = {}
    for folder in _subfolders(root):
        match = pattern.fullmatch(folder.name)
        if match:
            folders[next(group for group in match.groups() if group)] = folder
    if not folders:
        present = [p.name for p in _subfolders(root)][:5]
        raise CohortError(f"no case folder named like {expected}", path=root,
                          hint=f"set data.root to the folder holding them; it holds {present}")
    return folders


def brats2021_cohort(
    root: str | Path,
    split: str = "train",
    sequences: Sequence[str] = SEQUENCES,
    require_all_sequences: bool = True,
    require_seg: bool = False,
    exclude: Iterable[str | int] = (),
    on_missing: str = "raise",
) -> Cohort:
    """BraTS 2021: ``root/BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``.

    Case id ``XXXXX`` (the RSNA id). BraTS 2020 folders (``BraTS20_Training_001``) are read
    too, under their full name. Labels are merged from whichever of ``clinical.csv``,
    ``train_labels.csv`` (RSNA) and ``survival_info.csv`` (BraTS 2020) are in `root`.
    The whole folder is the ``train`` split.
    """
    _check_on_missing(on_missing)
    _check_single_split(split, "brats2021", root)
    root = _existing_dir(root, "BraTS 2021 cohort root", "set data.root to the training data")
    pattern = re.compile(r"BraTS2021_(\d{5})|(BraTS20_(?:Training|Validation)_\d{3})")
    folders = _case_folders(root, pattern, "BraTS2021_XXXXX")
    tables = [root / n for n in ("clinical.csv", "train_labels.csv", "survival_info.csv")]
    return _nifti_cohort(
        root, _BRATS2021, folders, _merge_label_tables(tables), [],
        exclude=exclude, sequences=sequences, require_all_sequences=require_all_sequences,
        require_seg=require_seg, on_missing=on_missing,
    )


def brats2023_cohort(
    root: str | Path,
    split: str = "train",
    sequences: Sequence[str] = SEQUENCES,
    require_all_sequences: bool = True,
    require_seg: bool = False,
    exclude: Iterable[str | int] = (),
    on_missing: str = "raise",
) -> Cohort:
    """BraTS 2023 glioma: ``root/BraTS-GLI-xxxxx-xxx/BraTS-GLI-xxxxx-xxx-{t1c,..,seg}.nii.gz``.

    Case id ``xxxxx-xxx``; ``patient`` is ``xxxxx``, so that splits keep a patient's
    timepoints together. Labels from ``root/clinical.csv`` when present. The whole folder is
    the ``train`` split.
    """
    _check_on_missing(on_missing)
    _check_single_split(split, "brats2023", root)
    root = _existing_dir(root, "BraTS 2023 cohort root", "set data.root to the training data")
    folders = _case_folders(root, re.compile(r"BraTS-GLI-(\d{5}-\d{3})"), "BraTS-GLI-xxxxx-xxx")
    cohort = _nifti_cohort(
        root, _BRATS2023, folders, _merge_label_tables([root / "clinical.csv"]), [],
        exclude=exclude, sequences=sequences, require_all_sequences=require_all_sequences,
        require_seg=require_seg, on_missing=on_missing,
    )
    for case in cohort.cases:
        case["patient"] = case["id"].split("-")[0]
    return cohort


def brats_hgg_lgg_cohort(
    root: str | Path,
    split: str = "train",
    sequences: Sequence[str] = SEQUENCES,
    require_all_sequences: bool = True,
    require_seg: bool = False,
    exclude: Iterable[str | int] = (),
    on_missing: str = "raise",
) -> Cohort:
    """BraTS 2018/2019: ``root/{HGG,LGG}/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz``.

    Case id = folder name; ``grade`` is 1 for HGG, 0 for LGG. Survival is merged from
    ``survival_data.csv`` or ``survival_info.csv`` in `root` when present. The whole folder
    is the ``train`` split.
    """
    _check_on_missing(on_missing)
    _check_single_split(split, "brats_hgg_lgg", root)
    root = _existing_dir(root, "BraTS 2018/2019 cohort root", "set data.root to the training data")
    folders: dict[str, Path] = {}
    grades: dict[str, dict[str, Any]] = {}
    problems = []
    for grade_name, grade in (("HGG", 1), ("LGG", 0)):
        if not (root / grade_name).is_dir():
            continue
        for folder in _subfolders(root / grade_name):
            if folder.name in folders:
                problems.append((folder.name, "case folder is in both HGG/ and LGG/"))
            folders[folder.name] = folder
            grades[folder.name] = {"grade": grade}
    if not folders:
        raise CohortError("no case folder in HGG/ or LGG/", path=root,
                          hint="set data.root to the folder holding HGG/ and LGG/")
    labels = _merge_label_tables([root / "survival_data.csv", root / "survival_info.csv"])
    for pid, grade in grades.items():
        labels.setdefault(pid, {}).update(grade)
    return _nifti_cohort(
        root, _BRATS_HGG_LGG, folders, labels, problems,
        exclude=exclude, sequences=sequences, require_all_sequences=require_all_sequences,
        require_seg=require_seg, on_missing=on_missing,
    )


# ------------------------------------------------------------------------ synthetic


def _split_ids(root: Path, split: str) -> set[str]:
    """Ids of a synthetic split: its DICOM folders, its label table or the generator's manifest."""
    rsna = root / "rsna"
    if (rsna / split).is_dir():
        return {normalise_id(p.name) for p in _subfolders(rsna / split)}
    if (rsna / f"{split}_labels.csv").is_file():
        return set(read_label_table(rsna / f"{split}_labels.csv"))
    if (root / "cohort.json").is_file():
        rows = json.loads((root / "cohort.json").read_text()).get("cases", [])
        return {normalise_id(row["id"]) for row in rows if row.get("split") == split}
    raise CohortError(f"synthetic cohort has no {split!r} split", path=root,
                      hint=f"expected rsna/{split}/, rsna/{split}_labels.csv or cohort.json; "
                           "regenerate it with python -m radiogenomics.data.synthetic")


def synthetic_cohort(
    root: str | Path,
    split: str = "train",
    image_format: str = "dicom",
    on_missing: str = "raise",
) -> Cohort:
    """The generated synthetic cohort, every label and the BraTS mask on each case.

    Images are the DICOM series of ``root/rsna/<split>`` or the NIfTI files of ``root/brats``
    (`image_format`); ``seg`` is the NIfTI mask of ``root/brats`` in both cases (absent only
    when the cohort was generated as DICOM alone); labels come from every table.
    """
    if image_format not in ("dicom", "nifti"):
        raise ValueError(f"image_format must be 'dicom' or 'nifti', got {image_format!r}")
    _check_on_missing(on_missing)
    root = _existing_dir(root, "synthetic cohort root",
                         "generate it with python -m radiogenomics.data.synthetic --out DIR")
    rsna_root, brats_root = root / "rsna", root / "brats"
    ids = _split_ids(root, split)
    labels = _merge_label_tables(
        [rsna_root / f"{split}_labels.csv", rsna_root / "clinical.csv", brats_root / "clinical.csv"]
    )
    problems: list[tuple[str, str]] = []
    masks: dict[str, Case] | None = None
    if brats_root.is_dir() or image_format == "nifti":
        brats = brats2021_cohort(brats_root, require_seg=True, on_missing=on_missing)
        masks = {case["id"]: case for case in brats}
        problems += [(f.patient, f.reason) for f in brats.skipped if f.patient in ids]
    else:
        log.warning("synthetic cohort %s has no brats/ folder: its cases carry no mask", root)
    if image_format == "dicom":
        dicom = rsna_cohort(rsna_root, split=split, exclude=(), on_missing=on_missing)
        problems += [(f.patient, f.reason) for f in dicom.skipped]
        images = {case["id"]: case["images"] for case in dicom}
    else:
        images = {pid: case["images"] for pid, case in masks.items()}
    reported = {pid for pid, _ in problems}
    cases = {}
    for pid in sorted(ids - reported):
        if masks is not None and pid not in masks:
            problems.append((pid, f"no BraTS2021_{pid} folder in {brats_root}"))
            continue
        seg = masks[pid]["seg"] if masks is not None else None
        cases[pid] = _case(pid, images[pid], labels.get(pid, {}), "synthetic", seg, "brats2021")
    return _finish("synthetic", root, cases, problems, on_missing)


# ------------------------------------------------------------------------- registry

COHORTS: dict[str, Callable[..., Cohort]] = {
    "rsna": rsna_cohort,
    "brats2021": brats2021_cohort,
    "brats2023": brats2023_cohort,
    "brats_hgg_lgg": brats_hgg_lgg_cohort,
    "png": png_cohort,
    "synthetic": synthetic_cohort,
}
"""Layout name (``data.layout``) -> cohort function."""


def load_cohort(layout: str, root: str | Path, **options: Any) -> Cohort:
    """The cohort of `layout` at `root`; `options` go to that layout's function."""
    if layout not in COHORTS:
        raise CohortError(f"unknown cohort layout {layout!r}",
                          hint=f"use one of {', '.join(COHORTS)}")
    return COHORTS[layout](root, **options)


_PROVIDERS = {
    "mgmt": "data=rsna, data=synthetic, or data=brats with a clinical.csv or train_labels.csv",
    "grade": "data=brats_hgg_lgg or data=synthetic",
    "seg": "data=brats or data=synthetic",
    "survival": "data=synthetic, or data=brats with a survival_info.csv",
    "age": "data=synthetic, or data=brats with a survival_info.csv or clinical.csv",
    "sequence": "any cohort",
    "plane": "any cohort",
}
_PROVIDERS["survival_days"] = _PROVIDERS["survival_class"] = _PROVIDERS["survival"]


def _has_label(case: Case, label: str) -> bool:
    if label == "seg":
        return case.get("seg") is not None
    if label in ("sequence", "plane"):
        return bool(case["images"])
    return ("survival_class" if label == "survival" else label) in case["labels"]


def require_label(cases: Iterable[Case], label: str, cohort_name: str) -> list[Case]:
    """The cases that carry `label`; a LabelError naming data configs that have it if none do.

    Cases without it are left out with a logged warning naming them (e.g. BraTS cases that
    are not in the RSNA label table).
    """
    if label not in _PROVIDERS:
        raise LabelError(f"unknown target label {label!r}", hint=f"use one of {list(_PROVIDERS)}")
    cases = list(cases)
    labelled = [case for case in cases if _has_label(case, label)]
    if not labelled:
        raise LabelError(
            f"the {cohort_name} cohort provides no {label!r} label "
            f"(none of its {len(cases)} cases has one)",
            hint=f"choose a data config that has it: {_PROVIDERS[label]}",
        )
    missing = [case["id"] for case in cases if not _has_label(case, label)]
    if missing:
        log.warning("%s cohort: %d of %d cases have no %r label and are left out: %s",
                    cohort_name, len(missing), len(cases), label, ", ".join(missing))
    return labelled
