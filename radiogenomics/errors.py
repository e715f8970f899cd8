"""Errors raised on purpose, each naming the patient, file or key and what to do, and the
`Failure` record of a patient or series that could not be used.

The ground floor of the package: it imports nothing of radiogenomics.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class RadiogenomicsError(Exception):
    """Base class of every error this project raises on purpose."""


class DataError(RadiogenomicsError):
    """Input data that cannot be used, with the patient, the file and a hint to fix it."""

    def __init__(
        self,
        message: str,
        *,
        patient: str | None = None,
        path: str | Path | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = message
        self.patient = patient
        self.path = str(path) if path is not None else None
        self.hint = hint
        parts = []
        if patient is not None:
            parts.append(f"patient {patient}")
        if self.path is not None:
            parts.append(f"file {self.path}")
        where = f"[{', '.join(parts)}] " if parts else ""
        text = f"{where}{message}"
        if hint:
            text += f" -> {hint}"
        super().__init__(text)


class DicomError(DataError):
    """A DICOM file or series that cannot be read into a correct volume."""


class NiftiError(DataError):
    """A NIfTI file that cannot be read or is inconsistent (shape, NaN, affine)."""


class CohortError(DataError):
    """A cohort folder or label table that does not match its declared layout."""


class LabelError(DataError):
    """A label that is missing, unknown, or not provided by the chosen cohort."""


class ConfigError(RadiogenomicsError, ValueError):
    """A config value that cannot work (named by its key), found before any work is done."""

    def __init__(self, message: str, *, key: str | None = None, hint: str | None = None) -> None:
        self.reason = message
        self.key = key
        self.hint = hint
        text = f"{key}: {message}" if key else message
        if hint:
            text += f" -> {hint}"
        super().__init__(text)


class TrainingError(RadiogenomicsError):
    """Training that cannot go on (a NaN or infinite loss, metric or weight), with what to try."""


class CheckpointError(RadiogenomicsError):
    """A checkpoint or run folder that cannot be used (missing, unreadable, wrong model)."""


@dataclass(frozen=True)
class Failure:
    """A patient (and, when known, its series and file) that could not be used, and why.

    Every batch job (cohort reading, preprocessing, training set-up, conversion, prediction)
    reports what it could not use as a list of these, so no patient is dropped silently.
    """

    patient: str
    reason: str
    series: str = ""
    path: str = ""

    @classmethod
    def from_error(cls, error: Exception, patient: str, series: str = "",
                   path: str | Path = "") -> Failure:
        """The failure an exception stands for (a DataError's own path when it has one)."""
        where = getattr(error, "path", None) or path
        return cls(patient, str(error), series, str(where) if where else "")


class MissingExtraError(RadiogenomicsError):
    """A feature that needs an optional dependency group ("extra") that is not installed."""

    def __init__(self, feature: str, module: str, extra: str) -> None:
        self.feature, self.module, self.extra = feature, module, extra
        super().__init__(
            f"{feature} needs the optional package {module!r}, which is not installed -> "
            f"pip install 'radiogenomics[{extra}]' (or 'radiogenomics[all]')")


def error_chain(err: BaseException) -> Iterator[BaseException]:
    """`err`, then what caused it (``__cause__``, else ``__context__``), and so on: each
    exception once, as a chain may loop back on itself."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__
