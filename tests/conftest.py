"""Shared fixtures: a tiny synthetic cohort and Hydra configs composed for fast CPU runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from radiogenomics.data.synthetic import generate_cohort

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 synthetic patients (8 train, 2 test) on a 32-voxel grid, RSNA + BraTS layouts."""
    root = tmp_path_factory.mktemp("synthetic") / "cohort"
    return generate_cohort(root, patients=10, test_patients=2, seed=0, format="both", size=32,
                           workers=1)


def compose_train(overrides: list[str] | None = None) -> DictConfig:
    """Compose conf/train.yaml with Hydra's compose API (hydra: interpolations usable)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=overrides or [])
    return cfg


@pytest.fixture
def train_cfg(tiny_cohort: Path, tmp_path: Path):
    """Factory: a train config on the tiny cohort, CPU, tiny inputs, one process, no logger."""

    def make(*overrides: str) -> DictConfig:
        base = [
            f"data.root={tiny_cohort}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.synthetic=null",
            "data.spatial_size=[16,16,16]",
            "data.batch_size=2",
            "data.n_folds=2",
            "data.num_workers=0",
            "data.prepare_workers=0",
            "trainer=cpu",
            "trainer.max_epochs=1",
            "logger=none",
            "callbacks=none",
            f"paths.root_dir={tmp_path}",
        ]
        cfg = compose_train(base + list(overrides))
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        HydraConfig().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # as in a real run: the task never sees the hydra node
        return cfg

    yield make
    GlobalHydra.instance().clear()


def write_png_series(dicom_series: Path, out: Path, first_number: int = 1) -> np.ndarray:
    """A DICOM series as the public PNG conversions store it: ``out/Image-N.png``, 8-bit,
    one axial slice per file in display orientation (rows A->P, columns R->L); returns the
    8-bit volume in RAS, as reading the folder back should give it."""
    from PIL import Image

    from radiogenomics.data.readers import load_volume

    volume = load_volume(dicom_series).array
    grey = (255 * volume / volume.max()).astype(np.uint8)
    out.mkdir(parents=True)
    for number in range(grey.shape[2]):
        Image.fromarray(grey[::-1, ::-1, number].T).save(out / f"Image-{number + first_number}.png")
    return grey
