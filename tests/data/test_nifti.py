"""NIfTI reader and atomic writer."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from radiogenomics.data import nifti
from radiogenomics.data.nifti import read_nifti, write_nifti
from radiogenomics.data.readers import load_volume
from radiogenomics.errors import NiftiError


@pytest.fixture
def image() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    affine = np.array([[1.0, 0, 0, -20], [0, 1.5, 0, 10], [0, 0, 2.0, -5], [0, 0, 0, 1]])
    return rng.normal(size=(5, 6, 4)).astype(np.float32), affine


def test_round_trip(tmp_path, image):
    array, affine = image
    path = write_nifti(array, affine, tmp_path / "a" / "img.nii.gz")
    for volume in (read_nifti(path), load_volume(path)):
        np.testing.assert_array_equal(volume.array, array)
        np.testing.assert_allclose(volume.affine, affine)
        assert volume.spacing == (1.0, 1.5, 2.0)
        assert volume.array.dtype == np.float32
        assert volume.plane == "unknown"
    assert [p.name for p in path.parent.iterdir()] == ["img.nii.gz"]  # no temp file left


def test_non_ras_file_is_reoriented_keeping_world_positions(tmp_path, image):
    array, affine = image
    lps_affine = affine.copy()
    lps_affine[:2] *= -1  # the same voxel grid described in LPS-style voxel axes
    path = write_nifti(array, lps_affine, tmp_path / "lps.nii")
    volume = read_nifti(path)
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(volume.array, array[::-1, ::-1])
    corner = lps_affine @ [4, 5, 0, 1]
    np.testing.assert_allclose(volume.affine @ [0, 0, 0, 1], corner)
    assert all(s > 0 for s in volume.array.strides)


def test_singleton_4d_is_squeezed_and_true_4d_refused(tmp_path, image):
    array, affine = image
    nib.save(nib.Nifti1Image(array[..., None], affine), tmp_path / "one.nii.gz")
    np.testing.assert_array_equal(read_nifti(tmp_path / "one.nii.gz").array, array)
    nib.save(nib.Nifti1Image(np.stack([array, array], -1), affine), tmp_path / "two.nii.gz")
    with pytest.raises(NiftiError, match="3D"):
        read_nifti(tmp_path / "two.nii.gz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_voxels_name_the_file(tmp_path, image, bad):
    array, affine = image
    array = array.copy()
    array[1, 2, 3] = bad
    path = write_nifti(array, affine, tmp_path / "bad.nii.gz")
    with pytest.raises(NiftiError, match="NaN or infinite") as caught:
        read_nifti(path, patient="00012")
    assert "bad.nii.gz" in str(caught.value) and "00012" in str(caught.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(NiftiError, match="does not exist"):
        read_nifti(tmp_path / "nope.nii.gz")
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"this is not gzip")
    with pytest.raises(NiftiError, match="cannot read") as caught:
        load_volume(corrupt, patient="00001")
    assert "corrupt.nii.gz" in str(caught.value)


def test_failed_write_leaves_nothing(tmp_path, image, monkeypatch):
    array, affine = image
    target = write_nifti(array, affine, tmp_path / "img.nii.gz")
    before = target.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nifti.nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_nifti(array * 2, affine, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["img.nii.gz"]


def test_write_refuses_other_suffixes(tmp_path, image):
    with pytest.raises(ValueError, match=".nii"):
        write_nifti(*image, tmp_path / "img.mha")
