"""The generated synthetic cohort (see `radiogenomics.data.synthetic`): RSNA DICOM and/or
BraTS NIfTI images of one set of patients, every label and the BraTS mask on each case."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from radiogenomics.data.case import Case
from radiogenomics.errors import CohortError

from .brats import brats2021_cohort
from .names import brats2021_case, normalise_id
from .record import Cohort, Options, existing_dir, finish, make_case, subfolders
from .rsna import rsna_cohort
from .tables import merge_label_tables, read_label_table

log = logging.getLogger(__name__)


def _split_ids(root: Path, split: str) -> set[str]:
    """Ids of a synthetic split: its DICOM folders, its label table or the generator's manifest."""
    rsna = root / "rsna"
    if (rsna / split).is_dir():
        return {normalise_id(p.name) for p in subfolders(rsna / split)}
    if (rsna / f"{split}_labels.csv").is_file():
        return set(read_label_table(rsna / f"{split}_labels.csv"))
    if (root / "cohort.json").is_file():
        rows = json.loads((root / "cohort.json").read_text()).get("cases", [])
        return {normalise_id(row["id"]) for row in rows if row.get("split") == split}
    raise CohortError(f"synthetic cohort has no {split!r} split", path=root,
                      hint=f"expected rsna/{split}/, rsna/{split}_labels.csv or cohort.json; "
                           "regenerate it with python -m radiogenomics.data.synthetic")


def masks_in_template_space(root: str | Path) -> bool:
    """Whether the synthetic cohort at `root` is moved (``realistic`` preset): its DICOM
    series lie in the scanner's world, its BraTS-layout NIfTI and tumour masks in template
    space (the ground truth of each series is ``native_from_template`` in cohort.json)."""
    manifest = Path(root) / "cohort.json"
    if not manifest.is_file():
        return False
    rows = json.loads(manifest.read_text()).get("cases", [])
    return any(row.get("native_from_template") for row in rows)


def synthetic_cohort(root: str | Path, **options: Any) -> Cohort:
    """The generated synthetic cohort, every label and the BraTS mask on each case.

    Images are the DICOM series of ``root/rsna/<split>`` or the NIfTI files of ``root/brats``
    (`image_format`); ``seg`` is the NIfTI mask of ``root/brats`` in both cases (absent only
    when the cohort was generated as DICOM alone); labels come from every table.
    `options`: see `Options`; every case has all four sequences and a mask where the cohort
    has them (`sequences`, `require_all_sequences`, `require_seg` and `allow_unlabelled` do
    not apply).
    """
    opts = Options.of(options)
    if opts.image_format not in ("dicom", "nifti"):
        raise ValueError(f"image_format must be 'dicom' or 'nifti', got {opts.image_format!r}")
    root = existing_dir(root, "synthetic cohort root",
                        "generate it with python -m radiogenomics.data.synthetic --out DIR")
    rsna_root, brats_root = root / "rsna", root / "brats"
    found = _split_ids(root, opts.split)
    ids = found - opts.excluded
    labels = merge_label_tables([rsna_root / f"{opts.split}_labels.csv",
                                 rsna_root / "clinical.csv", brats_root / "clinical.csv"])
    problems: list[tuple[str, str]] = []
    masks: dict[str, Case] | None = None
    if brats_root.is_dir() or opts.image_format == "nifti":
        brats = brats2021_cohort(brats_root, require_seg=True, on_missing=opts.on_missing)
        masks = {case["id"]: case for case in brats}
        problems += [(f.patient, f.reason) for f in brats.skipped if f.patient in ids]
    else:
        log.warning("synthetic cohort %s has no brats/ folder: its cases carry no mask", root)
    if opts.image_format == "dicom":
        dicom = rsna_cohort(rsna_root, split=opts.split, exclude=opts.exclude,
                            on_missing=opts.on_missing)
        problems += [(f.patient, f.reason) for f in dicom.skipped]
        images = {case["id"]: case["images"] for case in dicom}
    else:
        images = {pid: case["images"] for pid, case in masks.items()}
    reported = {pid for pid, _ in problems}
    cases = {}
    for pid in sorted(ids - reported):
        if masks is not None and pid not in masks:
            problems.append((pid, f"no {brats2021_case(pid)} folder in {brats_root}"))
            continue
        seg = masks[pid]["seg"] if masks is not None else None
        cases[pid] = make_case(pid, images[pid], labels.get(pid, {}), "synthetic", seg,
                               "brats2021")
    return finish("synthetic", root, cases, problems, opts.on_missing, found & opts.excluded)
