"""Label tables (CSV): per-patient MGMT, grade, age and survival, read, checked and merged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from radiogenomics.errors import CohortError, LabelError

from .names import normalise_id

_ID_COLUMNS = ("brats21id", "brats20id", "brats19id", "brats18id")
_LABEL_COLUMNS = {
    "mgmt_value": "mgmt", "grade": "grade", "age": "age",
    "survival_days": "survival_days", "survival": "survival_days",
}
_BINARY_LABELS = ("mgmt", "grade")


def survival_class(days: float) -> int:
    """Survival group of the BraTS challenge: 0 short (< 300 days), 1 mid, 2 long (> 450)."""
    if days < 300:
        return 0
    return 1 if days <= 450 else 2


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


def merge_label_tables(paths: Iterable[Path]) -> dict[str, dict[str, Any]]:
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
