"""The fused separable resampling gives what MONAI's eager transforms give, records included;
mask codes convert as `to_internal` converts them."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai import transforms as mt
from monai.data import MetaTensor
from monai.transforms.utils import generate_spatial_bounding_box

from radiogenomics.data import transforms as T
from radiogenomics.data.cohorts import load_cohort
from radiogenomics.data.labels import SCHEMES, to_internal
from radiogenomics.data.readers import load_volume
from radiogenomics.data.resample import AxisMap, apply_axis_maps, foreground_box
from radiogenomics.data.transforms import PreprocessConfig, preprocessing
from radiogenomics.errors import LabelError

RAS = (("L", "R"), ("P", "A"), ("I", "S"))


def eager_preprocessing(config: PreprocessConfig) -> mt.Compose:
    """The pipeline as it was before the fused resampling: MONAI's plain eager transforms."""
    sequences = list(config.sequences)
    reference = sequences[0]
    keys = sequences + (["seg"] if config.with_seg else [])
    modes = ["bilinear"] * len(sequences) + (["nearest"] if config.with_seg else [])
    steps: list = [T.LoadVolumed(keys),
                   *([T.CheckMaskGridd("seg", reference)] if config.with_seg else []),
                   T.CheckFinited(sequences),
                   mt.Orientationd(keys=keys, axcodes="RAS", labels=RAS)]
    if config.with_seg:
        steps.append(T.ToInternalLabelsd(["seg"]))
    if config.spacing is not None:
        steps.append(mt.Spacingd(keys=[reference], pixdim=config.spacing, mode="bilinear"))
    if len(keys) > 1:
        steps.append(mt.ResampleToMatchd(keys=keys[1:], key_dst=reference, mode=modes[1:]))
    if config.crop_foreground:
        steps.append(mt.CropForegroundd(keys=keys, source_key=reference, margin=2,
                                        allow_smaller=True))
    if config.slab is not None:
        steps.append(T.CentralSlabd(keys, reference_key=reference, depth=config.slab))
    steps += [mt.Resized(keys=keys, spatial_size=config.spatial_size,
                         mode=[m.replace("nearest", "nearest-exact") for m in modes],
                         anti_aliasing=False),
              T.NormalizeNonzerod(sequences),
              mt.ConcatItemsd(keys=sequences, name="image", dim=0)]
    return mt.Compose(steps)


def _sample(case: dict, config: PreprocessConfig) -> dict:
    sample = {"id": case["id"], "label_scheme": case.get("label_scheme") or "brats2021",
              **{s: case["images"][s] for s in config.sequences}}
    if config.with_seg:
        sample["seg"] = case["seg"]
    return sample


def _assert_same_output(config: PreprocessConfig, sample: dict) -> tuple[dict, dict]:
    eager, fused = eager_preprocessing(config)(sample), preprocessing(config)(sample)
    expected, got = eager["image"].as_tensor(), fused["image"].as_tensor()
    assert got.shape == expected.shape and got.dtype == expected.dtype == torch.float32
    # float32 round-off of a different order of summation, on z-scored values
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)
    assert torch.equal(got != 0, expected != 0)
    for key in [*config.sequences, *(["seg"] if config.with_seg else [])]:
        torch.testing.assert_close(fused[key].affine, eager[key].affine, rtol=0, atol=1e-9)
        assert ([op["class"] for op in fused[key].applied_operations]
                == [op["class"] for op in eager[key].applied_operations])
    if config.with_seg:
        assert torch.equal(fused["seg"].as_tensor(), eager["seg"].as_tensor())
    return eager, fused


CONFIGS = {
    "spaced": PreprocessConfig(sequences=("T1wCE", "FLAIR"), spacing=(5.0, 5.0, 5.0),
                               spatial_size=(16, 16, 16)),
    "anisotropic_seg_nocrop": PreprocessConfig(
        sequences=("FLAIR", "T1w", "T2w"), spacing=(4.0, 6.5, 3.0), spatial_size=(20, 12, 24),
        with_seg=True, crop_foreground=False),
    "native_grid_seg": PreprocessConfig(sequences=("T2w", "T1wCE"), spacing=None,
                                        spatial_size=(24, 20, 16), with_seg=True),
    "slab": PreprocessConfig(sequences=("T1wCE",), spacing=None, spatial_size=(40, 40, 8),
                             slab=8),
}


@pytest.mark.parametrize("image_format", ["dicom", "nifti"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_pipeline_matches_monai_eager_transforms(tiny_cohort: Path, image_format: str,
                                                       name: str) -> None:
    config = CONFIGS[name]
    for case in load_cohort("synthetic", tiny_cohort, image_format=image_format)[:2]:
        _assert_same_output(config, _sample(case, config))


@pytest.mark.parametrize("nearest", [False, True])
def test_invertd_maps_back_exactly_as_through_the_eager_transforms(tiny_cohort: Path,
                                                                   nearest: bool) -> None:
    case = load_cohort("synthetic", tiny_cohort, image_format="dicom")[0]
    config = PreprocessConfig(sequences=("FLAIR", "T1wCE"), spacing=(5.0, 6.0, 4.0),
                              spatial_size=(16, 12, 20))
    values = torch.rand(2, *config.spatial_size, generator=torch.Generator().manual_seed(0))
    inverted = []
    for pipeline in (eager_preprocessing(config), preprocessing(config)):
        result = pipeline(_sample(case, config))
        reference = result["FLAIR"]
        maps = MetaTensor(values.clone(), meta=dict(reference.meta),
                          applied_operations=list(reference.applied_operations))
        invert = mt.Invertd(keys="maps", transform=pipeline, orig_keys="FLAIR",
                            nearest_interp=nearest)
        inverted.append(invert({**result, "maps": maps})["maps"])
    (expected, got) = inverted
    assert got.shape[1:] == load_volume(case["images"]["FLAIR"]).array.shape
    torch.testing.assert_close(got.affine, expected.affine, rtol=0, atol=0)
    torch.testing.assert_close(got.as_tensor(), expected.as_tensor(), rtol=0, atol=1e-6)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def test_oblique_series_is_resampled_by_grid_sample_with_the_same_result(tmp_path: Path) -> None:
    """An image whose axes are not parallel to the reference's takes MONAI's path."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in (30, 34, 26)], indexing="ij"))
    head = np.clip(1.0 - (grid ** 2).sum(0), 0, None).astype(np.float32)
    blob = (head * 400 * (1.2 + grid[0])).astype(np.float32)
    seg = ((grid[0] - 0.2) ** 2 + grid[1] ** 2 + grid[2] ** 2 < 0.1).astype(np.uint8) * 2
    ref_affine = np.eye(4)
    ref_affine[:3, :3] = _rotation(0, 7) @ np.diag([2.0, 1.8, 2.4])  # oblique, but its own grid
    ref_affine[:3, 3] = [-30, -30, -30]
    other_affine = ref_affine.copy()
    other_affine[:3, :3] = _rotation(2, 12) @ ref_affine[:3, :3]
    paths = {"T1wCE": tmp_path / "t1ce.nii.gz", "FLAIR": tmp_path / "flair.nii.gz",
             "seg": tmp_path / "seg.nii.gz"}
    nib.save(nib.Nifti1Image(head * 300, ref_affine), paths["T1wCE"])
    nib.save(nib.Nifti1Image(blob, other_affine), paths["FLAIR"])
    nib.save(nib.Nifti1Image(seg, ref_affine), paths["seg"])
    case = {"id": "00001", "label_scheme": "brats2021", "seg": str(paths["seg"]),
            "images": {"T1wCE": str(paths["T1wCE"]), "FLAIR": str(paths["FLAIR"])}}
    config = PreprocessConfig(sequences=("T1wCE", "FLAIR"), spacing=(3.0, 3.0, 3.0),
                              spatial_size=(18, 16, 14), with_seg=True)
    _, fused = _assert_same_output(config, _sample(case, config))
    assert fused["seg"].max() == 2 and fused["image"][1].abs().max() > 1


@pytest.mark.parametrize("n_in,n_out", [(7, 16), (16, 7), (50, 33), (33, 50), (5, 5), (1, 4),
                                        (64, 256)])
@pytest.mark.parametrize("mode", ["linear", "nearest-exact"])
def test_axis_resize_is_torch_interpolate(n_in: int, n_out: int, mode: str) -> None:
    volume = torch.rand(2, n_in, 3, 4, generator=torch.Generator().manual_seed(n_in + n_out))
    size = (n_out, 3, 4)
    expected = torch.nn.functional.interpolate(
        volume[None], size=size, mode="trilinear" if mode == "linear" else mode,
        **({"align_corners": False} if mode == "linear" else {}))[0]
    got = apply_axis_maps(volume, [AxisMap.resize(n_in, n_out, mode), None, None])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("axes", [(0, 1, 2), (2, 1, 0), (2, 0, 1), (0, 2, 1), (1, 2, 0),
                                  (1, 0, 2)])
def test_a_volume_permuted_in_memory_resamples_to_the_same_voxels(axes) -> None:
    """A DICOM series in RAS order is a permuted view of its slice stack, a NIfTI array is in
    Fortran order: both are resampled in their own memory order, bit for bit the result of
    the same volume copied to C order (crop, shrink, grow and resize on different axes)."""
    stack = torch.rand(37, 70, 45, generator=torch.Generator().manual_seed(1))
    view = stack.permute(axes)[None]
    ordered = view.contiguous()
    shape = view.shape[1:]
    maps = [AxisMap.sample(torch.linspace(0.3, shape[0] - 1.7, shape[0] // 3).double(),
                           shape[0], "bilinear"),
            AxisMap.crop(shape[1], 2, shape[1] - 5),
            AxisMap.resize(shape[2], shape[2] * 2 + 1, "linear")]
    got = apply_axis_maps(view, maps)
    assert got.is_contiguous() and torch.equal(got, apply_axis_maps(ordered, maps))
    crop_only = [None, maps[1], None]
    assert torch.equal(apply_axis_maps(view, crop_only), apply_axis_maps(ordered, crop_only))


def test_loading_keeps_the_memory_layout_and_copies_only_flipped_arrays() -> None:
    """The loader hands the resampler the reader's array without a copy; an array with a
    flipped axis (negative strides, which torch cannot view) is copied, values unchanged."""
    stack = np.random.default_rng(0).normal(size=(9, 12, 7)).astype(np.float32)
    view = stack.transpose(2, 1, 0)
    tensor = T.as_tensor(view)
    assert np.shares_memory(tensor.numpy(), stack) and torch.equal(tensor, torch.from_numpy(
        np.ascontiguousarray(view)))
    flipped = view[::-1]
    assert np.array_equal(T.as_tensor(flipped).numpy(), flipped)


def test_foreground_box_is_monai_crop_foreground_box() -> None:
    generator = torch.Generator().manual_seed(0)
    for trial in range(20):
        image = torch.zeros(1 + trial % 2, 11, 9, 13)
        for _ in range(1 + trial % 3):
            x, y, z = (int(torch.randint(0, n, (1,), generator=generator)) for n in (11, 9, 13))
            image[trial % image.shape[0], x, y, z] = float(torch.rand(1, generator=generator)) + 0.1
        image[:, 0, 0, 0] -= 1.0  # negative values are background
        start, end = generate_spatial_bounding_box(image, margin=2, allow_smaller=True)
        assert foreground_box(image, 2) == ([int(s) for s in start], [int(e) for e in end])
    assert foreground_box(-torch.ones(1, 4, 4, 4), 2) is None


@pytest.mark.parametrize("scheme", ["brats2021", "brats2023", "msd"])
def test_mask_codes_convert_as_to_internal_does(scheme: str) -> None:
    codes = torch.tensor(sorted(SCHEMES[scheme]), dtype=torch.float32)
    values = codes[torch.randint(0, len(codes), (1, 9, 8, 7),
                                 generator=torch.Generator().manual_seed(1))]
    mask = MetaTensor(values + 0.01, affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    out = T.ToInternalLabelsd(["seg"])({"seg": mask, "label_scheme": scheme})["seg"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    torch.testing.assert_close(out.affine, mask.affine)
    expected = to_internal(torch.round(values).to(torch.int64), scheme)
    assert torch.equal(out.as_tensor(), expected.to(torch.float32))
    plain = T.ToInternalLabelsd(["seg"])({"seg": values, "label_scheme": scheme})["seg"]
    assert plain.dtype == torch.int64 and torch.equal(plain, expected)


@pytest.mark.parametrize("bad", [3.0, 300.0, -1.0])
def test_unknown_mask_codes_are_an_error(bad: float) -> None:
    values = torch.zeros(1, 4, 4, 4)
    values[0, 1, 1, 1] = bad
    values[0, 2, 2, 2] = 4.0
    with pytest.raises(LabelError, match=f"mask has codes {bad:g} that scheme 'brats2021'"):
        T.ToInternalLabelsd(["seg"])({"seg": MetaTensor(values), "label_scheme": "brats2021"})
