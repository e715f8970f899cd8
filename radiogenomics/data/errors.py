"""Errors raised for bad input: each names the patient and/or file and says what to do."""

from __future__ import annotations

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
