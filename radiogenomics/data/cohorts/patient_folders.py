"""Folders of patients laid out as ``<id>/<SEQ>/<series files>`` (RSNA DICOM, PNG): the
sequence folders of a patient and the cohort of such a folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from radiogenomics.data.case import canonical_sequence
from radiogenomics.errors import CohortError

from .record import Cohort, Options, finish, make_case, subfolders
from .tables import merge_label_tables, read_label_table


def numeric_patient_folders(folder: Path) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Patient id (5 digits) -> folder, and the folders that are not named by an id."""
    folders: dict[str, Path] = {}
    problems = []
    for child in subfolders(folder):
        if not child.name.isdigit():
            problems.append((child.name, f"folder {child} is not named by a numeric patient id"))
            continue
        pid = child.name.zfill(5)
        if pid in folders:
            problems.append((pid, f"two folders for one id: {folders[pid]} and {child}"))
        folders[pid] = child
    return folders, problems


def sequence_candidates(patient_dir: Path) -> dict[str, list[Path]]:
    """Every sub-folder of a patient that names an MRI sequence, by canonical name (all of
    them: ``T1C/`` beside ``T1wCE/`` gives two folders for T1wCE)."""
    named: dict[str, list[Path]] = {}
    for folder in subfolders(patient_dir):
        try:
            named.setdefault(canonical_sequence(folder.name), []).append(folder)
        except KeyError:
            continue
    return named


def sequence_folders(patient_dir: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """Sub-folders of a patient named after an MRI sequence (any case or alias), by canonical
    name, and the sequences that two or more folders name (``T1C/`` beside ``T1wCE/``,
    ``flair/`` beside ``FLAIR/``): those are never picked from, but reported."""
    named = sequence_candidates(patient_dir)
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


def series_cohort(
    name: str,
    patients_dir: Path,
    suffix: str,
    labels_file: Path | None,
    clinical_files: Sequence[Path],
    options: Options,
) -> Cohort:
    """A cohort laid out as ``<id>/<SEQ>/Image-N.<suffix>``, MGMT labels in `labels_file`."""
    sequences = [canonical_sequence(s) for s in options.sequences]
    folders, problems = numeric_patient_folders(patients_dir)
    if not folders:
        raise CohortError("no patient folder found", path=patients_dir,
                          hint="expected <5-digit id>/<SEQ>/Image-N" + suffix)
    skip = options.excluded
    split_labels = read_label_table(labels_file, required=("mgmt",)) if labels_file else {}
    labels = merge_label_tables([p for p in (labels_file, *clinical_files) if p is not None])
    problems += [
        (pid, f"labelled in {labels_file} but has no folder in {patients_dir}")
        for pid in split_labels
        if pid not in folders and pid not in skip
    ]
    cases = {}
    for pid, folder in folders.items():
        if pid in skip:
            continue
        images, issues = _series_images(folder, suffix, sequences, options.require_all_sequences)
        if labels_file is not None and pid not in split_labels and not options.allow_unlabelled:
            issues.append(f"has no MGMT_value row in {labels_file}")
        problems += [(pid, issue) for issue in issues]
        cases[pid] = make_case(pid, images, labels.get(pid, {}), source=name)
    return finish(name, patients_dir, cases, problems, options.on_missing, skip & set(folders))
