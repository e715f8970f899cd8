"""What an audit looks at: the partitions of patients of a run, of the runs of a sweep, or of
every fold of a data config, and the preprocessed volumes of the cohort.

Served partitions come from the run's own datamodule, rebuilt from its ``config.yaml`` with
its ``splits.json``: the patients (and 2D items) its loaders serve. Recorded partitions come
from ``splits.json`` and ``run_info.json`` alone: cheap enough for the CV summary and predict.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from radiogenomics import config as rc
from radiogenomics.audit.checks import Partition
from radiogenomics.data.datamodule import MRIDataModule
from radiogenomics.errors import RadiogenomicsError
from radiogenomics.runs import RUN_CONFIG, read_config, saved_config, saved_info

log = logging.getLogger(__name__)

SPLITS_RECORD = "splits.json"
"""The patient split a run used, copied into its run directory by train.py."""


@dataclass
class Subject:
    """The partitions to check, the volumes of their patients (loaded when asked), and the
    run directories a label-permutation test can retrain."""

    description: str
    partitions: list[Partition]
    load_volumes: Callable[[], dict[str, np.ndarray]] | None = None
    runs: list[Path] = field(default_factory=list)


def _ids(cases: list[dict[str, Any]]) -> set[str]:
    return {case["id"] for case in cases}


def served_partition(datamodule: MRIDataModule, name: str) -> Partition:
    """The parts a set-up datamodule serves (its 2D items too, when it serves slices)."""
    parts = {"train": _ids(datamodule.train_cases), "val": _ids(datamodule.val_cases)}
    notes = []
    if datamodule.test_split == "test":
        parts["test"] = _ids(datamodule.test_cases)
    else:
        notes.append("test = the validation patients (data.test_split=val)")
    part_items = getattr(datamodule, "part_items", None)
    return Partition(name, parts, datamodule.fold, part_items() if part_items else None, notes)


def cached_volumes(datamodule: MRIDataModule) -> dict[str, np.ndarray]:
    """Patient id -> preprocessed image ``(C, X, Y, Z)`` of every case the datamodule serves."""
    cases = {c["id"]: c for c in datamodule.train_cases + datamodule.val_cases
             + datamodule.test_cases}
    return {pid: datamodule.cache.load(case)["image"] for pid, case in sorted(cases.items())}


def prepared_datamodule(data_cfg: DictConfig, fold: int | None = None,
                        splits_file: Path | None = None, prepare: bool = True) -> MRIDataModule:
    """The datamodule of `data_cfg` (at `fold`, reading `splits_file`), prepared and set up."""
    data_cfg = OmegaConf.create(OmegaConf.to_container(data_cfg, resolve=True))
    with open_dict(data_cfg):
        if fold is not None:
            data_cfg.fold = fold
        if splits_file is not None:
            data_cfg.splits_file = str(splits_file)
    datamodule = rc.instantiate(data_cfg)
    if not isinstance(datamodule, MRIDataModule):
        raise RadiogenomicsError(f"the audit reads MRIDataModule cohorts, not "
                                 f"{type(datamodule).__name__}")
    if prepare:
        datamodule.prepare_data()
    datamodule.setup()
    return datamodule


def _volume_loader(datamodule: MRIDataModule) -> Callable[[], dict[str, np.ndarray]] | None:
    if not hasattr(datamodule.cache, "config"):  # series data cache slices, not volumes
        return None
    return lambda: cached_volumes(datamodule)


def run_subject(run_dir: Path) -> Subject:
    """A training run: the partition its datamodule serves, rebuilt from its config."""
    config = read_config(run_dir)
    record = run_dir / SPLITS_RECORD
    datamodule = prepared_datamodule(config.data, splits_file=record if record.is_file() else None)
    return Subject(f"run {run_dir}", [served_partition(datamodule, run_dir.name)],
                   _volume_loader(datamodule), [run_dir])


def job_runs(sweep_dir: Path) -> list[Path]:
    """The finished runs of a multirun: its job folders holding a config, in job order."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / RUN_CONFIG).is_file()]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit()
                                       else 0, p.name))


def sweep_subject(sweep_dir: Path) -> Subject:
    """The runs of a multirun (the folds of a CV): one served partition per run."""
    runs = job_runs(sweep_dir)
    if not runs:
        raise RadiogenomicsError(f"{sweep_dir} is neither a run directory ({RUN_CONFIG}) nor a "
                                 f"multirun directory (<job>/{RUN_CONFIG}) -> give the folder "
                                 "train.py printed as its run or multirun directory")
    partitions, first = [], None
    for run_dir in runs:
        record = run_dir / SPLITS_RECORD
        datamodule = prepared_datamodule(read_config(run_dir).data,
                                         splits_file=record if record.is_file() else None)
        first = datamodule if first is None else first
        partitions.append(served_partition(datamodule, f"job {run_dir.name}"))
    return Subject(f"multirun {sweep_dir} ({len(runs)} runs)", partitions,
                   _volume_loader(first), runs)


def data_subject(cfg: DictConfig) -> Subject:
    """A data config without a run: every fold of its splits file (made when absent)."""
    first = prepared_datamodule(cfg.data)
    partitions = [served_partition(first, f"fold {first.fold}")]
    partitions += [served_partition(prepared_datamodule(cfg.data, fold, prepare=False),
                                    f"fold {fold}")
                   for fold in range(first.n_folds) if fold != first.fold]
    return Subject(f"cohort {first.root} ({first.layout}, {first.n_folds} folds)",
                   sorted(partitions, key=lambda p: p.fold or 0), _volume_loader(first))


def audit_subject(path: str | Path) -> Subject:
    """The subject of a run directory or of a multirun directory."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise RadiogenomicsError(f"no such folder: {path} -> give a run directory "
                                 "(logs/train/runs/...) or a multirun directory "
                                 "(logs/train/multiruns/...)")
    return run_subject(path) if (path / RUN_CONFIG).is_file() else sweep_subject(path)


def recorded_partition(run_dir: Path) -> Partition | None:
    """The partition a run's ``splits.json`` and fold record, without reading any data; None
    when it records none. A slice-level run serves every patient of its fold in both parts."""
    record, fold = run_dir / SPLITS_RECORD, saved_info(run_dir).get("fold")
    if not record.is_file() or fold is None:
        return None
    splits = json.loads(record.read_text())
    chosen = splits["folds"][int(fold)]
    parts = {"train": set(chosen["train"]), "val": set(chosen["val"])}
    if saved_config(run_dir).get("data", {}).get("split_unit") == "slice":
        parts = {"train": parts["train"] | parts["val"], "val": parts["train"] | parts["val"]}
    if splits.get("test"):
        parts["test"] = set(splits["test"])
    return Partition(run_dir.name, parts, int(fold))


def recorded_partitions(run_dirs: list[Path]) -> list[Partition]:
    """The recorded partitions of the runs that have one."""
    return [p for p in map(recorded_partition, run_dirs) if p is not None]
