"""Reproducibility: the same config and seed give the same metrics on CPU, and every run
keeps what is needed to redo it (resolved config, package version, git commit, splits)."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import radiogenomics
from radiogenomics.data.datamodule import cohort_key
from radiogenomics.train import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache_dir(tiny_cohort: Path) -> Path:
    return tiny_cohort.parent / "reliability-cache"


def read_metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def run(train_cfg, cache_dir, tmp_path):
    """Factory: a deterministic one-epoch run (augmentation on) in `tmp_path / name`."""

    def make(name: str):
        cfg = train_cfg("trainer.deterministic=true", "logger=csv", f"data.cache_dir={cache_dir}",
                        "model.net.widen_factor=0.25")
        cfg.paths.output_dir = str(tmp_path / name)
        metrics, objects = train(cfg)
        return cfg, Path(cfg.paths.output_dir), metrics, objects

    return make


def test_same_config_and_seed_give_identical_metrics(run) -> None:
    _, first, metrics_a, _ = run("first")
    _, second, metrics_b, _ = run("second")
    assert metrics_a == metrics_b
    rows = read_metrics(first)
    assert rows == read_metrics(second)
    assert any(row.get("train/loss") for row in rows) and any(row.get("test/auc") for row in rows)


def test_run_directory_holds_config_version_commit_and_splits(run, tiny_cohort) -> None:
    cfg, folder, _, objects = run("only")
    saved = OmegaConf.load(folder / "config.yaml")
    assert OmegaConf.to_container(saved) == OmegaConf.to_container(cfg, resolve=True)
    info = json.loads((folder / "run_info.json").read_text())
    assert info["radiogenomics_version"] == radiogenomics.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    if head:
        assert info["git_commit"].removesuffix("-dirty") == head
    splits = json.loads((folder / "splits.json").read_text())
    # written beside the cache (data.splits_dir), never under data.root
    stored = (Path(cfg.data.splits_dir) / cohort_key(tiny_cohort) / "splits_mgmt_2fold_seed42.json")
    assert not (tiny_cohort / stored.name).exists()
    assert splits == json.loads(stored.read_text())
    datamodule = objects["datamodule"]
    assert info["fold"] == cfg.data.fold == 0
    assert sorted(c["id"] for c in datamodule.train_cases) == splits["folds"][0]["train"]
    assert sorted(c["id"] for c in datamodule.val_cases) == splits["folds"][0]["val"]
