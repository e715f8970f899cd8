"""Explanations and uncertainty: Grad-CAM, attention maps, TTA and MC dropout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai import transforms as mt
from torch import nn

from radiogenomics.errors import RadiogenomicsError
from radiogenomics.interpret.attention import AttentionExplainer
from radiogenomics.interpret.gradcam import GradCAMExplainer
from radiogenomics.interpret.mc_dropout import MCDropoutUncertainty, dropout_layers
from radiogenomics.interpret.tta import TTAUncertainty
from radiogenomics.interpret.uncertainty import (
    VoxelStatistics,
    predictive_entropy,
    summarise,
    voxel_entropy,
)
from radiogenomics.models.nets.attention_vgg import AttentionVGG16
from radiogenomics.models.nets.resnet3d import ResNet3D


def _slice_net(in_channels: int) -> nn.Module:
    """A tiny 2D classifier: one convolution, global pooling, one logit."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))


def _probabilities(net: nn.Module):
    return lambda images: torch.sigmoid(net(images.as_subclass(torch.Tensor)))


@pytest.fixture
def image() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 16, 20, 24)


def test_gradcam_map_has_the_input_shape_for_3d_and_2d_nets(image) -> None:
    net = ResNet3D(in_channels=2).eval()
    volume_map = GradCAMExplainer(layer="backbone.layer2")(net, image)
    assert volume_map.shape == (16, 20, 24)
    assert volume_map.min() >= 0.0 and volume_map.max() <= 1.0 and volume_map.max() > 0
    for axis in (0, 2):
        slice_map = GradCAMExplainer(layer="0")(_slice_net(2).eval(), image, axis=axis)
        assert slice_map.shape == (16, 20, 24)


def test_gradcam_points_at_the_evidence() -> None:
    """A net that sums a convolution of the input: its map peaks on the bright blob."""
    net = nn.Sequential(nn.Conv3d(1, 1, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                        nn.Flatten(), nn.Linear(1, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0 / 27)
        net[0].bias.zero_()
        net[4].weight.fill_(1.0)
    volume = torch.zeros(1, 16, 16, 16)
    volume[0, 10:13, 3:6, 7:10] = 5.0
    heatmap = GradCAMExplainer(layer="0")(net.eval(), volume)
    peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert 9 <= peak[0] <= 13 and 2 <= peak[1] <= 6 and 6 <= peak[2] <= 10


def test_gradcam_uses_the_nets_own_layer_and_names_layers_when_wrong() -> None:
    net = ResNet3D(in_channels=1)
    GradCAMExplainer().check(net)  # backbone.layer4, from ResNet3D.gradcam_layer
    with pytest.raises(RadiogenomicsError, match="no layer 'backbone.layer9'.*interpret.layer"):
        GradCAMExplainer(layer="backbone.layer9").check(net)
    with pytest.raises(RadiogenomicsError, match="interpret.layer"):
        GradCAMExplainer().check(_slice_net(1))


def test_gradcam_leaves_the_predicting_net_without_hooks(image) -> None:
    net = ResNet3D(in_channels=2).eval()
    GradCAMExplainer(layer="backbone.layer2")(net, image)
    layer = net.backbone.layer2
    assert not layer._forward_hooks and not layer._backward_hooks


def test_attention_maps_of_attention_vgg_cover_every_slice() -> None:
    net = AttentionVGG16(in_channels=1).eval()
    volume = torch.randn(1, 32, 32, 3)
    heatmap = AttentionExplainer()(net, volume, axis=2)
    assert heatmap.shape == (32, 32, 3)
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def test_attention_is_refused_for_a_net_without_attention() -> None:
    with pytest.raises(RadiogenomicsError, match="no attention_maps.*interpret=gradcam"):
        AttentionExplainer().check(ResNet3D(in_channels=1))


def test_tta_refuses_a_transform_list_without_a_random_transform() -> None:
    with pytest.raises(RadiogenomicsError, match="no random transform.*RandFlipd"):
        TTAUncertainty([mt.NormalizeIntensityd(keys="image")])
    with pytest.raises(RadiogenomicsError, match="no random transform"):
        TTAUncertainty([])


def test_tta_samples_vary_and_are_reproducible(image) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 16 * 20 * 24, 1)).eval()
    tta = TTAUncertainty([mt.RandFlipd(keys="image", prob=0.5, spatial_axis=0),
                          mt.RandShiftIntensityd(keys="image", offsets=0.5, prob=1.0)],
                         samples=6, seed=3)
    samples = tta(_probabilities(net), net, image)
    assert samples.shape == (6, 1)
    assert samples.std() > 0
    assert torch.equal(samples, tta(_probabilities(net), net, image))


def test_mc_dropout_refuses_a_net_without_dropout() -> None:
    net = ResNet3D(in_channels=1, dropout=0.0)
    assert not dropout_layers(net)
    with pytest.raises(RadiogenomicsError, match="no dropout layer.*uncertainty=tta"):
        MCDropoutUncertainty().check(net)


@pytest.mark.parametrize("batch_size", [1, 2, 10])
def test_mc_dropout_varies_and_leaves_the_net_in_eval_mode(image, batch_size) -> None:
    net = ResNet3D(in_channels=2, dropout=0.5).eval()
    uncertainty = MCDropoutUncertainty(samples=5, batch_size=batch_size)
    samples = uncertainty(_probabilities(net), net, image)
    assert samples.shape == (5, 1)
    assert len(set(samples.flatten().tolist())) == 5  # every pass its own dropout masks
    assert torch.equal(uncertainty(_probabilities(net), net, image), samples)  # seeded
    assert not any(module.training for module in net.modules())


def test_uncertainty_summary_reports_mean_spread_and_entropy() -> None:
    summary = summarise(torch.tensor([[0.4], [0.6]]), "tta")
    assert summary.mean == pytest.approx([0.5]) and summary.samples == 2
    assert summary.std == pytest.approx([np.std([0.4, 0.6], ddof=1)])
    assert summary.entropy == pytest.approx(1.0)
    assert predictive_entropy(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------- voxel-wise (segmenters)


def test_tta_maps_of_a_segmenter_are_flipped_back_exactly(image) -> None:
    tta = TTAUncertainty([mt.RandFlipd(keys="image", prob=0.5, spatial_axis=axis)
                          for axis in range(3)], samples=8, seed=1)
    maps = tta.voxel_samples(torch.sigmoid, nn.Identity(), image)
    assert maps.shape == (8, *image.shape)
    # a voxel-wise net commutes with flips: every copy, flipped back, is the plain prediction
    for copy in maps:
        torch.testing.assert_close(copy, torch.sigmoid(image))
    # and the copies were flipped (else the test would prove nothing)
    unflipped = TTAUncertainty([mt.RandFlipd(keys="image", prob=1.0, spatial_axis=0)],
                               samples=2)._run(torch.sigmoid, image, inverse=False)
    assert not torch.allclose(unflipped[0], torch.sigmoid(image))


def test_tta_maps_refuse_random_transforms_that_cannot_be_inverted() -> None:
    net = nn.Identity()
    elastic = TTAUncertainty([mt.RandFlipd(keys="image", prob=0.5),
                              mt.Rand3DElasticd(keys="image", sigma_range=(5, 7),
                                                magnitude_range=(1, 2), prob=0.5)])
    elastic.check(net)  # a classifier's probabilities need no inverse
    with pytest.raises(RadiogenomicsError, match="Rand3DElasticd cannot be inverted"):
        elastic.check(net, voxelwise=True)
    # intensity transforms change no position: nothing to invert
    TTAUncertainty([mt.RandFlipd(keys="image", prob=0.5),
                    mt.RandGaussianNoised(keys="image", prob=0.5)]).check(net, voxelwise=True)


def test_mc_dropout_gives_one_map_per_pass() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(2, 3, 1), nn.Dropout(0.5)).eval()
    image = torch.randn(2, 6, 7, 8)
    maps = MCDropoutUncertainty(samples=4).voxel_samples(lambda b: torch.sigmoid(net(b)), net,
                                                          image)
    assert maps.shape == (4, 3, 6, 7, 8) and maps.std(0).max() > 0


def test_voxel_statistics_are_the_mean_spread_and_entropy_of_the_samples() -> None:
    rng = np.random.default_rng(0)
    samples = rng.uniform(size=(7, 3, 4, 5, 6))
    statistics = VoxelStatistics()
    statistics.add(torch.from_numpy(samples[:3]))  # e.g. one ensemble member, then another
    statistics.add(torch.from_numpy(samples[3:]))
    maps = statistics.summary("tta", exclusive=False)
    assert maps.samples == 7 and maps.mean.shape == (3, 4, 5, 6) and maps.entropy.shape == (4, 5, 6)
    np.testing.assert_allclose(maps.mean, samples.mean(0), rtol=1e-5)
    np.testing.assert_allclose(maps.std, samples.std(0, ddof=1), rtol=1e-4, atol=1e-6)
    # sigmoid regions: mean binary entropy; softmax labels: entropy of the distribution
    assert voxel_entropy(np.full((3, 1), 0.5), exclusive=False) == pytest.approx([1.0])
    assert voxel_entropy(np.array([[1.0], [0.0], [0.0]]), exclusive=False) == pytest.approx(
        [0.0], abs=1e-9)
    assert voxel_entropy(np.full((4, 1), 0.25), exclusive=True) == pytest.approx([2.0])
