"""Augmenting a whole batch on the model's device (`data.augment_on=device`): the same
geometry as MONAI's transforms, independent draws per sample, and a training run that uses it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai import transforms as mt

from radiogenomics.data.augment import AugmentConfig
from radiogenomics.data.batch_augment import BatchAugment, grid_theta, voxel_affine
from radiogenomics.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
NONE = AugmentConfig(flip_prob=0, rotate_prob=0, intensity_prob=0, noise_std=0)


def smooth_volume(size: tuple[int, int, int]) -> torch.Tensor:
    axes = [torch.linspace(-1, 1, n) for n in size]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    blob = torch.exp(-((x - 0.3) ** 2 + (y + 0.2) ** 2 + z ** 2) * 4)
    return (torch.sin(3 * x) * torch.cos(2 * y) + z * x + blob)[None].float()


@pytest.mark.parametrize("size", [(40, 48, 24), (32, 32, 32)])
def test_a_rotation_and_zoom_resample_as_monai_affine_does(size) -> None:
    """Non-cubic volumes too: the rotation is in voxel space about the centre, as MONAI's."""
    image = smooth_volume(size)
    rotation, scale = (0.15, -0.1, 0.2), (1.08, 0.93, 1.05)
    expected = torch.as_tensor(mt.Affine(rotate_params=rotation, scale_params=scale,
                                         padding_mode="zeros", image_only=True)(image))
    theta = grid_theta(voxel_affine(rotation, scale)[None], size).float()
    grid = F.affine_grid(theta, [1, 1, *size], align_corners=False)
    ours = F.grid_sample(image[None], grid, align_corners=False)[0]
    assert torch.allclose(ours, expected.as_subclass(torch.Tensor), atol=1e-4)
    assert (ours - image).abs().max() > 0.1  # it did move


def test_a_flip_mirrors_the_first_spatial_axis_like_monai() -> None:
    image = smooth_volume((16, 12, 8))[None]
    flipped, _ = BatchAugment(replace(NONE, flip_prob=1.0))(image)
    expected = mt.RandFlip(prob=1.0, spatial_axis=0)(image[0])
    assert torch.equal(flipped[0], torch.as_tensor(expected).as_subclass(torch.Tensor))


def test_each_sample_of_a_batch_gets_its_own_draw_and_a_seed_repeats_them() -> None:
    batch = smooth_volume((16, 16, 16))[None].repeat(6, 2, 1, 1, 1)
    augment = BatchAugment(AugmentConfig(rotate_prob=1.0, noise_std=0.05))
    torch.manual_seed(3)
    first, _ = augment(batch)
    torch.manual_seed(3)
    again, _ = augment(batch)
    assert torch.equal(first, again)
    differences = [(first[i] - first[0]).abs().max().item() for i in range(1, 6)]
    assert min(differences) > 1e-3


def test_nothing_changes_when_every_probability_is_zero() -> None:
    batch = torch.randn(3, 2, 8, 8, 8)
    seg = torch.randint(0, 4, (3, 1, 8, 8, 8))
    image, mask = BatchAugment(NONE)(batch, seg)
    assert torch.equal(image, batch) and torch.equal(mask, seg)


def test_a_mask_moves_with_its_image_and_keeps_its_labels() -> None:
    image = torch.zeros(4, 1, 24, 24, 24)
    image[:, :, 6:12, 8:20, 10:14] = 1.0
    seg = (image > 0).long() * 2
    moved, moved_seg = BatchAugment(replace(NONE, flip_prob=0.5, rotate_prob=1.0,
                                            rotate_range_deg=20.0))(image, seg)
    assert set(moved_seg.unique().tolist()) <= {0, 2} and moved_seg.dtype == seg.dtype
    assert not torch.equal(moved_seg, seg)
    overlap = ((moved > 0.5) == (moved_seg > 0)).float().mean()
    assert overlap > 0.98


# ---------------------------------------------------------------------------- the datamodule
class _Trainer:
    def __init__(self, training: bool) -> None:
        self.training = training


def test_the_datamodule_ships_float16_and_augments_training_batches_on_the_device(
        train_cfg) -> None:
    from radiogenomics import config as rc

    cfg = train_cfg("data.augment_on=device")
    datamodule = rc.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["image"].dtype == torch.float16  # half the bytes to collate and copy
    raw = batch["image"].float()
    datamodule.trainer = _Trainer(training=True)
    torch.manual_seed(0)
    out = datamodule.on_after_batch_transfer(dict(batch), 0)
    assert out["image"].dtype == torch.float32 and not torch.equal(out["image"], raw)
    val = next(iter(datamodule.val_dataloader()))
    assert val["image"].dtype == torch.float32
    datamodule.trainer = _Trainer(training=False)
    assert torch.equal(datamodule.on_after_batch_transfer(dict(val), 0)["image"], val["image"])


def test_an_unknown_augment_place_is_a_config_error(train_cfg) -> None:
    from radiogenomics import config as rc

    with pytest.raises(Exception) as raised:
        rc.instantiate(train_cfg("data.augment_on=gpu").data)
    error = rc.user_error_of(raised.value)  # what train.py prints as its one message
    assert isinstance(error, ConfigError) and "data.augment_on" in str(error)


def test_train_py_trains_with_augmentation_on_the_device(tiny_cohort, tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "train.py", "debug=fdr", "data.augment_on=device",
         f"data.root={tiny_cohort}", f"data.cache_dir={tmp_path / 'cache'}",
         "data.synthetic=null", "data.spatial_size=[16,16,16]", "data.n_folds=2",
         "data.batch_size=2", f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final metrics" in result.stdout + result.stderr
