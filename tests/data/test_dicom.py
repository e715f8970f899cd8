"""DICOM reader: geometry round trips, real test files, compressed syntaxes and bad series."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from radiogenomics.data import dicom
from radiogenomics.data.dicom import read_dicom
from radiogenomics.data.dicom_write import write_enhanced, write_series
from radiogenomics.data.readers import load_volume
from radiogenomics.data.volume import Volume
from radiogenomics.errors import DataError, DicomError

PLANES = ("axial", "coronal", "sagittal")


def pydicom_file(name: str) -> Path:
    """A file of pydicom's or pydicom-data's test set, found locally (never downloaded)."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(path)


@pytest.fixture(scope="module")
def phantom() -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric volume (distinct sizes and random values) with an oblique RAS affine."""
    rng = np.random.default_rng(7)
    volume = rng.integers(-200, 1200, size=(9, 11, 7)).astype(np.float32)
    angle = np.deg2rad(8.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.2, 3.0])
    affine[:3, 3] = [-40.0, 25.0, -12.0]
    return volume, affine


@pytest.mark.parametrize("plane", PLANES)
def test_each_plane_reads_back_the_same_ras_volume(tmp_path, phantom, plane):
    volume, affine = phantom
    write_series(volume, affine, tmp_path, plane=plane, series_description=f"T1 {plane}")
    result = read_dicom(tmp_path)
    assert result.plane == plane
    assert result.array.dtype == np.float32
    np.testing.assert_array_equal(result.array, volume)
    np.testing.assert_allclose(result.affine, affine, atol=1e-4)
    np.testing.assert_allclose(result.spacing, (0.9, 1.2, 3.0), atol=1e-4)
    assert result.meta["series_description"] == f"T1 {plane}"
    assert result.meta["n_slices"] == volume.shape[{"axial": 2, "coronal": 1, "sagittal": 0}[plane]]
    assert not {"PatientID", "PatientName", "patient_id"} & set(result.meta)


def test_shuffled_and_renamed_files_give_the_same_volume(tmp_path, phantom):
    volume, affine = phantom
    paths = write_series(volume, affine, tmp_path / "a", first_number=57)
    reference = read_dicom(tmp_path / "a")
    names = [p.name for p in paths]
    random.Random(3).shuffle(names)
    (tmp_path / "b").mkdir()
    for path, name in zip(paths, names):
        path.rename(tmp_path / "b" / name)
    shuffled = read_dicom(tmp_path / "b", workers=1)
    np.testing.assert_array_equal(shuffled.array, reference.array)
    np.testing.assert_array_equal(shuffled.affine, reference.affine)


def test_rescale_slope_and_intercept_are_applied(tmp_path, phantom):
    volume, affine = phantom
    values = volume * 0.25 + 3.5
    write_series(values, affine, tmp_path, rescale_slope=0.25, rescale_intercept=3.5)
    assert pydicom.dcmread(tmp_path / "Image-1.dcm").pixel_array.max() == volume.max()
    np.testing.assert_allclose(read_dicom(tmp_path).array, values, atol=1e-5)


def test_writer_is_deterministic(tmp_path, phantom):
    volume, affine = phantom
    first = write_series(volume, affine, tmp_path / "a", patient_id="00012", seed=3)
    second = write_series(volume, affine, tmp_path / "b", patient_id="00012", seed=3)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


@pytest.mark.parametrize("plane", PLANES)
def test_enhanced_multiframe_reads_back(tmp_path, phantom, plane):
    volume, affine = phantom
    path = write_enhanced(volume, affine, tmp_path / "enhanced.dcm", plane=plane,
                          rescale_slope=2.0, rescale_intercept=-1.0)
    for result in (read_dicom(path), load_volume(path)):
        np.testing.assert_allclose(result.array, volume, atol=1.0)
        np.testing.assert_allclose(result.affine, affine, atol=1e-4)
        assert result.plane == plane


def test_enhanced_frames_in_reverse_order_are_sorted(tmp_path, phantom):
    volume, affine = phantom
    flipped = affine.copy()
    flipped[:3, 2] *= -1
    flipped[:3, 3] = affine[:3, :3] @ [0, 0, volume.shape[2] - 1] + affine[:3, 3]
    result = read_dicom(write_enhanced(volume[:, :, ::-1], flipped, tmp_path / "r.dcm"))
    np.testing.assert_array_equal(result.array, volume)
    np.testing.assert_allclose(result.affine, affine, atol=1e-4)


def test_compressed_series_equals_uncompressed(tmp_path, phantom):
    volume, affine = phantom
    write_series(volume, affine, tmp_path / "raw")
    write_series(volume, affine, tmp_path / "rle", transfer_syntax=RLELossless)
    write_enhanced(volume, affine, tmp_path / "enh_rle.dcm", transfer_syntax=RLELossless)
    raw = read_dicom(tmp_path / "raw")
    for result in (read_dicom(tmp_path / "rle"), read_dicom(tmp_path / "enh_rle.dcm")):
        assert result.meta["transfer_syntax"] == RLELossless
        np.testing.assert_array_equal(result.array, raw.array)
        np.testing.assert_allclose(result.affine, raw.affine, atol=1e-6)


def undefined_length_sequence(*items: Dataset) -> Sequence:
    """A sequence whose items are written with undefined lengths and delimiters."""
    for item in items:
        item.is_undefined_length_sequence_item = True
    return Sequence(items)


@pytest.mark.parametrize("implicit", [False, True])
def test_fast_path_reads_implicit_vr_and_undefined_length_sequences(
    tmp_path, phantom, monkeypatch, implicit
):
    volume, affine = phantom
    paths = write_series(volume, affine, tmp_path, rescale_slope=0.5)
    reference = read_dicom(tmp_path)
    for path in paths:
        ds = pydicom.dcmread(path)
        item = Dataset()
        item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        item.ReferencedImageSequence = undefined_length_sequence(Dataset(), Dataset())
        item["ReferencedImageSequence"].is_undefined_length = True
        ds.ReferencedImageSequence = undefined_length_sequence(item)
        ds["ReferencedImageSequence"].is_undefined_length = True
        if implicit:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    assert b"\xfe\xff\xdd\xe0" in paths[0].read_bytes()  # a sequence delimiter was written

    def no_pydicom(*args, **kwargs):
        raise AssertionError("uncompressed slices must not need pydicom")

    monkeypatch.setattr(dicom, "_read_pydicom", no_pydicom)
    result = read_dicom(tmp_path)
    np.testing.assert_array_equal(result.array, reference.array)
    np.testing.assert_array_equal(result.affine, reference.affine)


def test_mr_small_single_slice_uses_slice_thickness():
    result = load_volume(pydicom_file("MR_small.dcm"))
    ds = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    assert result.array.shape == (64, 64, 1)
    assert result.plane == "axial"
    np.testing.assert_allclose(result.spacing, (0.3125, 0.3125, float(ds.SliceThickness)))
    # Rows run to +y (posterior) and columns to +x (left) in LPS: both flip in RAS.
    np.testing.assert_array_equal(result.array[:, :, 0], ds.pixel_array.T[::-1, ::-1])
    first_pixel = np.array([*ds.ImagePositionPatient, 1.0]) * [-1, -1, 1, 1]
    np.testing.assert_allclose(np.linalg.inv(result.affine) @ first_pixel, [63, 63, 0, 1],
                               atol=1e-6)


@pytest.mark.parametrize(
    ("compressed", "uncompressed"),
    [
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_jp2klossless.dcm", "MR_small.dcm"),
        ("emri_small_RLE.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm"),
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ],
)
def test_compressed_test_files_equal_their_uncompressed_twin(compressed, uncompressed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        left = load_volume(pydicom_file(compressed))
        right = load_volume(pydicom_file(uncompressed))
    np.testing.assert_array_equal(left.array, right.array)
    np.testing.assert_allclose(left.affine, right.affine)
    assert np.ptp(left.array) > 0


def test_enhanced_mr_without_geometry_loads_with_a_warning():
    with pytest.warns(UserWarning, match="no slice geometry"):
        result = load_volume(pydicom_file("emri_small.dcm"))
    assert result.array.shape == (64, 64, 10)
    assert result.plane == "unknown"
    assert result.meta["geometry"] == "assumed"


@pytest.mark.parametrize("plane", PLANES)
def test_affine_agrees_with_monai(tmp_path, phantom, plane):
    monai_transforms = pytest.importorskip("monai.transforms")
    volume, affine = phantom
    write_series(volume, affine, tmp_path, plane=plane)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = monai_transforms.LoadImage(
            reader="PydicomReader", image_only=True, ensure_channel_first=True
        )
        theirs = monai_transforms.Orientation(axcodes="RAS")(loader(str(tmp_path)))
    ours = read_dicom(tmp_path)
    np.testing.assert_allclose(theirs.affine.numpy(), ours.affine, atol=1e-4)
    np.testing.assert_array_equal(theirs[0].numpy(), ours.array)


def test_every_pixel_lies_where_nibabel_puts_it(tmp_path, phantom):
    dicomwrappers = pytest.importorskip("nibabel.nicom.dicomwrappers")
    volume, affine = phantom
    paths = write_series(volume, affine, tmp_path, plane="coronal")
    ours = read_dicom(tmp_path)
    to_voxel = np.linalg.inv(ours.affine)
    for path in paths[::3]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wrapper = dicomwrappers.wrapper_from_file(path)
            pixels = wrapper.get_data().reshape(wrapper.get_data().shape[:2])
        i, j = np.meshgrid(*map(np.arange, pixels.shape), indexing="ij")
        lps = wrapper.affine @ np.stack([i.ravel(), j.ravel(), 0 * i.ravel(), 1 + 0 * i.ravel()])
        voxel = np.rint(to_voxel @ (np.diag([-1, -1, 1, 1]) @ lps))[:3].astype(int)
        np.testing.assert_array_equal(ours.array[tuple(voxel)], pixels.ravel())


# ---------------------------------------------------------------- errors


@pytest.fixture
def series(tmp_path, phantom) -> list[Path]:
    volume, affine = phantom
    return write_series(volume, affine, tmp_path / "series")


def assert_names(error: DataError, *parts: str) -> None:
    text = str(error)
    for part in parts:
        assert part in text
    assert error.hint


def test_truncated_file_raises_naming_it(tmp_path):
    path = pydicom_file("MR_truncated.dcm")
    with pytest.raises(DicomError) as caught:
        load_volume(path, patient="00042")
    assert_names(caught.value, "00042", path.name)


def test_truncated_slice_in_series(series):
    data = series[3].read_bytes()
    series[3].write_bytes(data[: len(data) - 100])
    with pytest.raises(DicomError) as caught:
        read_dicom(series[0].parent, patient="00007")
    assert_names(caught.value, "00007", series[3].name)


def test_files_that_are_no_image_are_skipped_with_a_note(series):
    (series[0].parent / "notes.txt").write_text("not an image\n")
    (series[0].parent / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + bytes(600))
    (series[0].parent / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(100))
    result = read_dicom(series[0].parent, patient="00007")
    assert result.meta["n_slices"] == len(series)
    skipped = " ".join(result.meta["skipped"])
    assert "notes.txt: not a DICOM file" in skipped and "Thumbs.db" in skipped
    with pytest.raises(DicomError) as caught:  # given as the file to read, it is an error
        read_dicom(series[0].parent / "notes.txt", patient="00007")
    assert_names(caught.value, "00007", "notes.txt", "not a DICOM file")


def test_corrupt_image_raises_unless_skip_invalid_files(series):
    data = series[0].read_bytes()  # the first slice: without it the grid stays uniform
    series[0].write_bytes(data[: len(data) - 100])
    with pytest.raises(DicomError, match="data.skip_invalid_files=true"):
        read_dicom(series[0].parent)
    result = read_dicom(series[0].parent, skip_invalid_files=True)
    assert len(result.meta["skipped"]) == 1 and series[0].name in result.meta["skipped"][0]
    assert result.meta["n_slices"] == len(series) - 1


def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(DicomError, match="does not exist") as caught:
        load_volume(tmp_path / "nope", patient="00001")
    assert_names(caught.value, "00001", "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomError, match="no DICOM files"):
        load_volume(tmp_path / "empty")


def test_blank_series(tmp_path, phantom):
    _, affine = phantom
    write_series(np.full((5, 6, 4), 7.0), affine, tmp_path)
    with pytest.raises(DicomError, match="blank series") as caught:
        read_dicom(tmp_path, patient="00003")
    assert_names(caught.value, "00003")


def test_mixed_slice_sizes(series, phantom):
    volume, affine = phantom
    other = write_series(volume[:-1], affine, series[0].parent.parent / "x", first_number=99)
    for path in other:
        path.rename(series[0].parent / path.name)
    with pytest.raises(DicomError, match="mixed slice sizes: the folder holds 2 stacks") as caught:
        read_dicom(series[0].parent)
    assert "7 image(s) 11x9" in str(caught.value) and "7 image(s) 11x8" in str(caught.value)


def test_a_lone_odd_slice_is_left_out_and_named(series, phantom):
    volume, affine = phantom
    extra = write_series(volume[:-1], affine, series[0].parent.parent / "x", first_number=99)
    extra[0].rename(series[0].parent / "Image-99.dcm")
    result = read_dicom(series[0].parent)
    assert result.meta["n_slices"] == len(series)
    assert "Image-99.dcm" in result.meta["skipped"][0]
    assert "mixed slice sizes" in result.meta["skipped"][0]


def test_mixed_orientations(series, phantom):
    volume, affine = phantom
    same_size = np.arange(7 * 9 * 11.0).reshape(7, 9, 11)  # sagittal slices of 11 x 9 pixels
    extra = write_series(same_size, affine, series[0].parent.parent / "x", plane="sagittal",
                         first_number=99)
    for path in extra:
        path.rename(series[0].parent / path.name)
    with pytest.raises(DicomError, match="mixed slice orientations"):
        read_dicom(series[0].parent)


def test_a_localizer_beside_the_series_is_left_out_and_named(series, phantom):
    volume, affine = phantom
    localizer = np.arange(9 * 11.0).reshape(1, 9, 11)
    extra = write_series(localizer, affine, series[0].parent.parent / "x", plane="sagittal",
                         first_number=99, series_description="localizer")
    extra[0].rename(series[0].parent / "Image-99.dcm")
    result = read_dicom(series[0].parent)
    np.testing.assert_array_equal(result.array, volume)
    assert "'localizer'" in result.meta["skipped"][0] and "sagittal" in result.meta["skipped"][0]


def test_duplicate_slice_positions(series):
    (series[0].parent / "copy.dcm").write_bytes(series[2].read_bytes())
    with pytest.raises(DicomError, match="duplicate slice position") as caught:
        read_dicom(series[0].parent, patient="00009")
    assert_names(caught.value, "00009", series[2].name)


def test_missing_slice_makes_gaps_non_uniform(series):
    series[3].unlink()
    with pytest.raises(DicomError, match="non-uniform slice positions"):
        read_dicom(series[0].parent)


def test_file_type_is_told_by_content_not_only_by_name(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="unknown image format"):
        load_volume(path)
    uid_named = tmp_path / "1.2.840.113619.7"
    uid_named.write_bytes(pydicom_file("MR_small.dcm").read_bytes())
    assert load_volume(uid_named).array.shape == (64, 64, 1)


def test_volume_from_array_reads_spacing_off_the_affine():
    volume = Volume.from_array(np.zeros((2, 3, 4)), np.diag([2.0, 3.0, 4.0, 1.0]), "axial")
    assert volume.spacing == (2.0, 3.0, 4.0) and volume.array.dtype == np.float32


def shift_slice(path: Path, millimetres: float) -> None:
    """Move one slice along its normal by rewriting ImagePositionPatient."""
    ds = pydicom.dcmread(path)
    cosines = np.array(ds.ImageOrientationPatient, dtype=float).reshape(2, 3)
    position = np.array(ds.ImagePositionPatient, dtype=float) + millimetres * np.cross(*cosines)
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.save_as(path, enforce_file_format=True)


def test_position_jitter_within_tolerance_is_accepted(series):
    shift_slice(series[3], 0.03)  # 1% of the 3 mm spacing
    assert read_dicom(series[0].parent).meta["n_slices"] == len(series)
    shift_slice(series[3], 0.6)
    with pytest.raises(DicomError, match="non-uniform"):
        read_dicom(series[0].parent)


def test_slices_without_positions_cannot_be_ordered(series):
    for path in series:
        ds = pydicom.dcmread(path)
        del ds.ImagePositionPatient
        ds.save_as(path, enforce_file_format=True)
    with pytest.raises(DicomError, match="order is unknown"):
        read_dicom(series[0].parent, patient="00005")


def test_a_permuted_volume_is_copied_to_c_order_unchanged() -> None:
    """The tiled copy the loader uses for arrays with flipped axes (data/volume.py c_order)."""
    from radiogenomics.data.volume import c_order

    stack = np.random.default_rng(0).normal(size=(37, 70, 45)).astype(np.float32)
    for axes in [(2, 1, 0), (2, 0, 1), (0, 2, 1), (1, 2, 0), (0, 1, 2)]:
        view = stack.transpose(axes)
        copied = c_order(view)
        assert copied.flags.c_contiguous and copied.dtype == np.float32
        assert np.array_equal(copied, view)
    assert c_order(stack.astype(np.int16).transpose(2, 1, 0)).dtype == np.float32
