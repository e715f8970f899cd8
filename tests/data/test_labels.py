"""Label schemes: conversions against hand-made masks, round trips, BraTS regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radiogenomics.data.labels import REGIONS, SCHEMES, from_internal, regions, to_internal
from radiogenomics.errors import LabelError

# Internal codes: 0 background, 1 NCR, 2 ED, 3 ET.
INTERNAL = np.array([[0, 1, 2], [3, 2, 1], [0, 3, 0]], dtype=np.uint8)
ON_DISK = {
    "brats2021": np.array([[0, 1, 2], [4, 2, 1], [0, 4, 0]], dtype=np.uint8),
    "brats2023": np.array([[0, 1, 2], [3, 2, 1], [0, 3, 0]], dtype=np.uint8),
    "msd": np.array([[0, 2, 1], [3, 1, 2], [0, 3, 0]], dtype=np.uint8),
}


@pytest.mark.parametrize("scheme", sorted(ON_DISK))
def test_to_internal_matches_hand_made_mask(scheme: str) -> None:
    np.testing.assert_array_equal(to_internal(ON_DISK[scheme], scheme), INTERNAL)


@pytest.mark.parametrize("scheme", sorted(ON_DISK))
def test_from_internal_matches_hand_made_mask(scheme: str) -> None:
    np.testing.assert_array_equal(from_internal(INTERNAL, scheme), ON_DISK[scheme])


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_round_trip_numpy_and_torch(scheme: str) -> None:
    rng = np.random.default_rng(0)
    disk = rng.choice(sorted(SCHEMES[scheme]), size=(4, 5, 6)).astype(np.int16)
    back = from_internal(to_internal(disk, scheme), scheme)
    np.testing.assert_array_equal(back, disk)
    assert back.dtype == disk.dtype

    tensor = torch.from_numpy(disk).float()
    internal = to_internal(tensor, scheme)
    assert isinstance(internal, torch.Tensor) and internal.dtype == torch.float32
    assert torch.equal(from_internal(internal, scheme), tensor)


def test_torch_conversion_matches_numpy() -> None:
    tensor = torch.from_numpy(ON_DISK["msd"].astype(np.int64))
    assert torch.equal(to_internal(tensor, "msd"), torch.from_numpy(INTERNAL.astype(np.int64)))


def test_unknown_code_names_codes_and_scheme() -> None:
    mask = np.array([[0, 4], [5, 1]])
    with pytest.raises(LabelError, match=r"codes 4, 5 .*'brats2023'") as info:
        to_internal(mask, "brats2023", patient="00012")
    assert "00012" in str(info.value)


def test_brats2023_mask_is_not_taken_for_brats2021() -> None:
    with pytest.raises(LabelError, match="codes 3"):
        to_internal(ON_DISK["brats2023"], "brats2021")


def test_from_internal_rejects_non_internal_codes() -> None:
    with pytest.raises(LabelError, match="codes 4"):
        from_internal(ON_DISK["brats2021"], "msd")


def test_unknown_scheme() -> None:
    with pytest.raises(LabelError, match="unknown label scheme 'brats2099'"):
        to_internal(INTERNAL, "brats2099")


def test_regions_are_exact() -> None:
    et = [[0, 0, 0], [1, 0, 0], [0, 1, 0]]
    tc = [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    wt = [[0, 1, 1], [1, 1, 1], [0, 1, 0]]
    assert REGIONS == ("ET", "TC", "WT")
    np.testing.assert_array_equal(regions(INTERNAL), np.array([et, tc, wt], dtype=np.uint8))


def test_regions_torch_with_channel_axis() -> None:
    mask = torch.from_numpy(INTERNAL).float()[None, :, :, None]
    out = regions(mask)
    assert out.shape == (3, 3, 3, 1) and out.dtype == torch.float32
    np.testing.assert_array_equal(out[..., 0].numpy(), regions(INTERNAL))


def test_regions_reject_disk_codes() -> None:
    with pytest.raises(LabelError, match="to_internal"):
        regions(ON_DISK["brats2021"])
