"""Published recipes (conf/experiment): each composes, says its source and trains on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.types import RunMode

from radiogenomics import config as rc
from radiogenomics.train import train
from tests.conftest import CONF_DIR, compose_train

RECIPES = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))

# tiny sizes per recipe; 2D recipes are tested on the synthetic cohort's layout (every label)
SLICES = ["data.layout=synthetic", "data.slices_per_case=2",
          "data.spacing=[4,4,4]", "data.batch_size=4"]
TINY = {
    "rsna_winner": ["data.slab=8", "data.spatial_size=[16,16,8]"],
    "vgg16_flair": [*SLICES, "data.spatial_size=[32,32,8]", "~data.cohort_options.exclude"],
    "attention_vgg_grading": [*SLICES, "data.spatial_size=[32,32,8]"],
    "multiscale": [*SLICES, "data.spatial_size=[16,16,8]"],
    "unet2d_brats": ["data.spatial_size=[16,16,8]", "data.spacing=[4,4,4]"],
}
ROOTS = {"rsna_winner": "rsna", "unet2d_brats": "brats"}


def test_every_recipe_has_tiny_settings() -> None:
    assert RECIPES and set(RECIPES) == set(TINY)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_documents_its_source_and_reported_figure(recipe: str) -> None:
    text = (Path(CONF_DIR) / "experiment" / f"{recipe}.yaml").read_text()
    assert text.startswith("# @package _global_")
    cfg = compose_train([f"experiment={recipe}"])
    assert cfg.task_name == recipe
    assert cfg.recipe.source and cfg.recipe.reported


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_with_fast_dev_run(recipe: str, train_cfg, tiny_cohort) -> None:
    root = tiny_cohort / ROOTS.get(recipe, "")
    cfg = train_cfg(f"experiment={recipe}", "debug=fdr", f"data.root={root}", *TINY[recipe])
    metrics, _ = train(cfg)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_rsna_winner_is_the_published_setup_as_a_five_fold_cv() -> None:
    cfg = compose_train(["experiment=rsna_winner"])
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.sweeper.params["data.fold"] == "range(0,5)"
    assert cfg.data._target_.endswith("MRIDataModule") and cfg.data.layout == "rsna"
    assert list(cfg.data.sequences) == ["T1wCE"] and cfg.data.slab == 64
    assert list(cfg.data.spatial_size) == [256, 256, 64] and cfg.data.batch_size == 8
    assert cfg.model.net.depth == 10 and cfg.trainer.max_epochs == 15
    model = rc.instantiate(cfg.model)
    optimizer = model.optimizer_factory(params=model.parameters())
    scheduler = model.scheduler_factory(optimizer=optimizer)
    assert optimizer.defaults["lr"] == pytest.approx(1e-4)
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR)
    assert (scheduler.step_size, scheduler.gamma) == (10, 0.5)
