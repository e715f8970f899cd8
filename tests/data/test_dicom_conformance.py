"""DICOM conformance on real files: our values are pydicom's, our geometry is nibabel's.

Every real MR image the tests can reach (pydicom's test files, pydicom-data's, nibabel's
own test DICOMs, never downloaded) is read by our reader and compared with pydicom's
rescaled ``pixel_array`` and, where nibabel's DICOM wrapper gives one, with nibabel's voxel
grid. Files written here with pydicom cover what no real file at hand shows: a mosaic built
from a known volume, 12-bit data with set high bits, objects without pixel data beside the
images, multi-volume series.
"""

from __future__ import annotations

import gzip
import importlib.util
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import external_data_sources
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, RawDataStorage

from radiogenomics.data import dicom
from radiogenomics.data.dicom import read_dicom, read_dicom_series, read_frames
from radiogenomics.data.dicom_write import write_enhanced, write_series
from radiogenomics.errors import DicomError

with warnings.catch_warnings():  # nibabel warns that its DICOM readers are experimental
    warnings.simplefilter("ignore", UserWarning)
    from nibabel.nicom import dicomwrappers

NIBABEL_DATA = Path(dicomwrappers.__file__).parent / "tests" / "data"


def _folders() -> list[Path]:
    folders = [Path(pydicom.data.__file__).parent / "test_files"]
    for source in external_data_sources().values():  # pydicom-data, when installed
        folders.append(Path(source.data_path))
    return folders + [NIBABEL_DATA]


def _real_mr_files() -> list[Path]:
    """Local real MR files with pixel data that pydicom decodes (no download, no network)."""
    found = []
    for folder in _folders():
        for path in sorted(folder.glob("*.dcm*")) if folder.is_dir() else []:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = _dcmread(path)
                    if ds.get("Modality") == "MR" and "PixelData" in ds:
                        ds.pixel_array  # noqa: B018 -- skips files pydicom cannot decode
                        found.append(path)
            except Exception:
                continue
    return found


def _dcmread(path: Path, **options: object) -> Dataset:
    if path.suffix == ".gz":
        with gzip.open(path) as handle:
            return pydicom.dcmread(handle, **options)
    return pydicom.dcmread(path, **options)


REAL_MR = _real_mr_files()


@pytest.fixture
def real_file(request, tmp_path) -> Path:
    """The real file of the parameter, unpacked when gzipped."""
    path = request.param
    if path.suffix != ".gz":
        return path
    target = tmp_path / path.stem
    with gzip.open(path) as handle:
        target.write_bytes(handle.read())
    return target


def _rescaled(ds: Dataset, index: int | None) -> np.ndarray:
    """pydicom's pixel_array of frame `index`, with the modality LUT (rescale) applied."""
    pixels = ds.pixel_array if index is None else ds.pixel_array[index]
    slope = dicom._functional(ds, index or 0, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = dicom._functional(ds, index or 0, "PixelValueTransformationSequence",
                                  "RescaleIntercept")
    return pixels * float(slope if slope not in (None, "") else 1) + float(intercept or 0)


def _nibabel_canonical(path: Path) -> nib.Nifti1Image | None:
    """nibabel's DICOM wrapper's image in RAS+ voxel order, or None where it gives none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wrapper = dicomwrappers.wrapper_from_file(str(path))
            affine, data = wrapper.affine, wrapper.get_data()
        except Exception:
            return None
    if affine is None or data.ndim not in (2, 3):
        return None
    data = data[..., None] if data.ndim == 2 else data
    return nib.as_closest_canonical(nib.Nifti1Image(data.astype(np.float64),
                                                    dicom.LPS_TO_RAS @ affine))


def test_the_tests_reach_real_files_of_each_source():
    names = {path.name for path in REAL_MR}
    assert {"MR_small.dcm", "emri_small.dcm", "MR2_UNCR.dcm"} <= names
    assert {"siemens_dwi_0.dcm.gz", "philips_mprage.dcm.gz"} <= names
    assert len(REAL_MR) >= 15


@pytest.mark.parametrize("real_file", REAL_MR, ids=[p.name for p in REAL_MR], indirect=True)
def test_values_equal_pydicom_rescaled_pixel_array(real_file):
    ds = _dcmread(real_file)
    if "MOSAIC" in [str(v) for v in ds.get("ImageType", [])]:
        check_mosaic_tiles(real_file, ds)
        return
    frames = read_frames(real_file)
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    assert len(frames) == n_frames
    for index, frame in enumerate(frames):
        expected = _rescaled(ds, index if n_frames > 1 else None)
        np.testing.assert_array_equal(frame.pixels * frame.slope + frame.intercept, expected)


def check_mosaic_tiles(path: Path, ds: Dataset) -> None:
    """Tile k of a mosaic (row-major in a ceil(sqrt(N)) grid) is slice k, or a clear refusal."""
    count = int(dicomwrappers.csar.get_n_mosaic(dicomwrappers.csar.get_csa_header(ds)))
    size = int(np.ceil(np.sqrt(count)))
    if ds.Rows % size or ds.Columns % size:  # nibabel's 0.dcm and 1.dcm were cut down
        with pytest.raises(DicomError, match="cannot hold"):
            read_frames(path)
        return
    frames = read_frames(path)
    assert len(frames) == count
    rows, cols = ds.Rows // size, ds.Columns // size
    expected = _rescaled(ds, None)
    for k, frame in enumerate(frames):
        top, left = k // size * rows, k % size * cols
        tile = expected[top:top + rows, left:left + cols]
        np.testing.assert_array_equal(frame.pixels * frame.slope + frame.intercept, tile)


def with_ramp(path: Path, target: Path) -> Path:
    """A copy of a real file whose (blanked) pixel data is replaced by a ramp of 12-bit values."""
    ds = _dcmread(path)
    count = int(ds.get("NumberOfFrames", 1) or 1) * ds.Rows * ds.Columns
    ds.PixelData = (np.arange(count) * 7 % 4001).astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.mark.parametrize("real_file", REAL_MR, ids=[p.name for p in REAL_MR], indirect=True)
def test_volume_and_affine_equal_nibabel(real_file, tmp_path):
    """Same affine as nibabel's DICOM wrapper, and every voxel where nibabel puts it."""
    if _nibabel_canonical(real_file) is None:
        pytest.skip("nibabel gives no affine for this file")
    try:
        volume = read_dicom(real_file)
    except DicomError as error:
        if "cannot hold" in str(error):  # a cut-down mosaic: refused, never misread
            return
        assert "blank series" in str(error)  # test data with its pixels blanked out
        real_file = with_ramp(real_file, tmp_path / "ramp.dcm")
        volume = read_dicom(real_file)
    expected = _nibabel_canonical(real_file)
    # nibabel takes the slice step from the header's spacing, we from the first and last
    # positions: over Philips' 176 slices they differ by about a micrometre
    np.testing.assert_allclose(volume.affine, expected.affine, atol=1e-2)
    # nibabel scales values its own way (e.g. Philips): compare placement up to a linear map
    ours, theirs = volume.array.ravel().astype(np.float64), expected.get_fdata().ravel()
    assert ours.shape == theirs.shape
    slope, intercept = np.polyfit(theirs, ours, 1)
    np.testing.assert_allclose(ours, slope * theirs + intercept, atol=1e-3 * np.ptp(ours))


# ---------------------------------------------------------------- mosaics


def nibabel_file(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name.removesuffix(".gz")
    opener = gzip.open if name.endswith(".gz") else open
    with opener(NIBABEL_DATA / name, "rb") as handle:
        target.write_bytes(handle.read())
    return target


def mosaic_of(volume: np.ndarray, grid: int) -> np.ndarray:
    """Slices volume[..., k] (rows, columns) tiled row-major on a grid x grid mosaic."""
    rows, cols, count = volume.shape
    mosaic = np.zeros((grid * rows, grid * cols), volume.dtype)
    for k in range(count):
        mosaic[k // grid * rows:(k // grid + 1) * rows, k % grid * cols:(k % grid + 1) * cols] = (
            volume[..., k])
    return mosaic


@pytest.mark.parametrize("name", ["siemens_dwi_0.dcm.gz", "csa_slice_norm.dcm"])
def test_mosaic_of_a_known_volume_reads_as_that_volume_at_nibabels_place(name, tmp_path):
    path = nibabel_file(name, tmp_path)
    ds = pydicom.dcmread(path)  # a real Siemens header, CSA included; pixels of a known volume
    count = int(dicomwrappers.csar.get_n_mosaic(dicomwrappers.csar.get_csa_header(ds)))
    grid = int(np.ceil(np.sqrt(count)))
    rng = np.random.default_rng(5)
    known = rng.integers(0, 4096, size=(ds.Rows // grid, ds.Columns // grid, count))
    ds.PixelData = mosaic_of(known.astype("<u2"), grid).tobytes()
    ds["PixelData"].VR = "OW"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.save_as(path)
    volume = read_dicom(path)
    assert volume.meta["n_slices"] == count and volume.array.shape[2] == count
    expected = _nibabel_canonical(path)
    np.testing.assert_allclose(volume.affine, expected.affine, atol=1e-3)
    np.testing.assert_array_equal(volume.array, expected.get_fdata())
    # independent of nibabel: slice k of the known volume lies where the standard puts it
    canonical = nib.as_closest_canonical(nib.Nifti1Image(known.astype(np.float64),
                                                         dicom.LPS_TO_RAS @ _lps(ds, count)))
    np.testing.assert_array_equal(volume.array, canonical.get_fdata())
    np.testing.assert_allclose(volume.affine, canonical.affine, atol=1e-3)


def _lps(ds: Dataset, count: int) -> np.ndarray:
    """Voxel (row, column, tile) -> LPS of a mosaic, from the standard's attributes and the
    CSA slice normal: the tiles' corner is the mosaic's, moved to the first tile's centre."""
    grid = int(np.ceil(np.sqrt(count)))
    row_cos = np.asarray(ds.ImageOrientationPatient[:3], float)
    col_cos = np.asarray(ds.ImageOrientationPatient[3:], float)
    spacing = [float(v) for v in ds.PixelSpacing]
    normal = np.asarray(dicomwrappers.csar.get_slice_normal(
        dicomwrappers.csar.get_csa_header(ds)), float)
    step = float(ds.get("SpacingBetweenSlices") or ds.SliceThickness)
    corner = np.asarray(ds.ImagePositionPatient, float)
    corner = (corner + col_cos * spacing[0] * (ds.Rows - ds.Rows / grid) / 2
              + row_cos * spacing[1] * (ds.Columns - ds.Columns / grid) / 2)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = col_cos * spacing[0], row_cos * spacing[1]
    lps[:3, 2], lps[:3, 3] = normal / np.linalg.norm(normal) * step, corner
    return lps


def test_mosaic_without_csa_header_is_refused_never_read_as_one_slice(tmp_path):
    path = nibabel_file("siemens_dwi_0.dcm.gz", tmp_path)
    ds = pydicom.dcmread(path)
    for tag in [element.tag for element in ds if element.tag.group == 0x0029]:
        del ds[tag]
    ds.save_as(path)
    with pytest.raises(DicomError, match="mosaic.*NumberOfImagesInMosaic") as caught:
        read_dicom(path, patient="00005")
    assert "00005" in str(caught.value) and caught.value.hint


def test_two_real_dwi_mosaics_are_a_4d_series(tmp_path):
    folder = tmp_path / "dwi"
    folder.mkdir()
    for name in ("siemens_dwi_0.dcm.gz", "siemens_dwi_1000.dcm.gz"):
        path = nibabel_file(name, folder)
        with_ramp(path, path)
    with pytest.raises(DicomError, match="4D series: 2 volumes of 48 slices") as caught:
        read_dicom(folder)
    assert "AcquisitionNumber" in str(caught.value)
    volumes = read_dicom_series(folder)
    assert [v.meta["volume_index"] for v in volumes] == [0, 1]
    np.testing.assert_array_equal(volumes[0].affine, volumes[1].affine)


# ---------------------------------------------------------------- stored values


@pytest.fixture
def series(tmp_path) -> tuple[list[Path], np.ndarray]:
    """A 5-slice axial series of known 12-bit values (0..4095) and its RAS volume."""
    volume = np.random.default_rng(11).integers(0, 4096, size=(6, 4, 5)).astype(np.float32)
    volume[0, 0, 0], volume[1, 0, 0] = 0, 4095
    return write_series(volume, np.diag([0.9, 0.9, 3.0, 1.0]), tmp_path / "s"), volume


def rewrite_pixels(path: Path, change: object, **attributes: object) -> None:
    ds = pydicom.dcmread(path)
    stored = np.frombuffer(ds.PixelData, "<u2").reshape(ds.Rows, ds.Columns)
    ds.PixelData = np.asarray(change(stored), "<u2").tobytes()
    for name, value in attributes.items():
        setattr(ds, name, value)
    ds.save_as(path)


def test_bits_above_bits_stored_are_dropped_as_pydicom_does(series):
    paths, volume = series
    for path in paths:  # garbage (e.g. an overlay) in the 4 unused high bits
        rewrite_pixels(path, lambda v: v | 0xF000, BitsStored=12, HighBit=11,
                       PixelRepresentation=0)
    result = read_dicom(paths[0].parent)
    np.testing.assert_array_equal(result.array, volume)
    assert result.array.max() == 4095
    for path in paths:
        frame, = read_frames(path)
        np.testing.assert_array_equal(frame.pixels, pydicom.dcmread(path).pixel_array)


def test_signed_12_bit_values_are_sign_extended(series):
    paths, volume = series
    for path in paths:  # values - 2048 as 12-bit two's complement, high bits set
        rewrite_pixels(path, lambda v: ((v.astype(np.int32) - 2048) & 0xFFF) | 0xF000,
                       BitsStored=12, HighBit=11, PixelRepresentation=1)
    result = read_dicom(paths[0].parent)
    np.testing.assert_array_equal(result.array, volume - 2048)
    for path in paths:
        frame, = read_frames(path)
        np.testing.assert_array_equal(frame.pixels, pydicom.dcmread(path).pixel_array)


def test_high_bit_places_the_stored_bits(series):
    paths, volume = series
    for path in paths:  # 12 stored bits at 2..13 (HighBit 13), garbage in bits 0, 1, 14, 15
        rewrite_pixels(path, lambda v: (v << 2) | 0xC003, BitsStored=12, HighBit=13,
                       PixelRepresentation=0)
    np.testing.assert_array_equal(read_dicom(paths[0].parent).array, volume)


def test_philips_precise_values_are_an_option(tmp_path):
    path = nibabel_file("philips_mprage.dcm.gz", tmp_path)
    ds = pydicom.dcmread(path)
    item = ds.PerFrameFunctionalGroupsSequence[0]
    scale = float(item[0x2005, 0x140F][0][0x2005, 0x100E].value)
    shown, = [f for f in read_frames(path)[:1]]
    precise, = read_frames(path, philips_precise=True)[:1]
    stored = ds.pixel_array[0].astype(np.float64)
    np.testing.assert_allclose(shown.pixels * shown.slope + shown.intercept, stored * shown.slope)
    np.testing.assert_allclose(precise.pixels * precise.slope + precise.intercept,
                               stored * shown.slope / (shown.slope * scale), rtol=1e-6)


# ---------------------------------------------------------------- what is no image of the series


def no_pixel_object(path: Path, sop_class: str, **attributes: object) -> Path:
    """A DICOM object without pixel data (raw data, SR...) with the given attributes."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, pydicom.uid.generate_uid()
    ds.Modality, ds.SeriesInstanceUID = "MR", pydicom.uid.generate_uid()
    for name, value in attributes.items():
        setattr(ds, name, value)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def test_objects_without_pixel_data_beside_the_images_are_skipped_and_named(series):
    paths, volume = series
    folder = paths[0].parent
    no_pixel_object(folder / "XX_raw", RawDataStorage, Rows=256, Columns=256)  # Philips raw data
    no_pixel_object(folder / "XX_philips", "1.3.46.670589.11.0.0.12.1", Rows=1)
    no_pixel_object(folder / "SR0001", pydicom.uid.BasicTextSRStorage)
    result = read_dicom(folder, patient="00001")
    np.testing.assert_array_equal(result.array, volume)
    skipped = "\n".join(result.meta["skipped"])
    assert "XX_raw: DICOM object without pixel data (Raw Data Storage)" in skipped
    assert "XX_philips" in skipped and "SR0001" in skipped


def test_real_dicomdir_and_structured_reports_beside_the_images_are_skipped(series):
    paths, volume = series
    real = Path(pydicom.data.__file__).parent / "test_files"
    for source in (real / "dicomdirtests" / "DICOMDIR", real / "test-SR.dcm",
                   real / "reportsi.dcm"):
        (paths[0].parent / source.name).write_bytes(source.read_bytes())
    result = read_dicom(paths[0].parent)
    np.testing.assert_array_equal(result.array, volume)
    assert sorted(note.split(":")[0] for note in result.meta["skipped"]) == [
        "DICOMDIR", "reportsi.dcm", "test-SR.dcm"]


def test_a_truncated_image_is_still_an_error(series):
    paths, _ = series
    ds = pydicom.dcmread(paths[2])
    del ds.PixelData
    ds.save_as(paths[2])
    with pytest.raises(DicomError, match="truncated") as caught:
        read_dicom(paths[0].parent)
    assert "data.skip_invalid_files=true" in caught.value.hint


# ---------------------------------------------------------------- multi-volume series


def two_volumes(tmp_path: Path, tag: str, values: tuple[object, object]) -> tuple[Path, list]:
    """A series of two volumes at the same positions, told apart by `tag` (if given)."""
    rng = np.random.default_rng(2)
    volumes = [rng.integers(0, 900, size=(5, 6, 4)).astype(np.float32) for _ in range(2)]
    folder = tmp_path / "series"
    for index, volume in enumerate(volumes):
        paths = write_series(volume, np.diag([1.0, 1.0, 2.5, 1.0]), folder,
                             first_number=1 + 100 * index)
        for path in paths:
            ds = pydicom.dcmread(path)
            if tag:
                setattr(ds, tag, values[index])
            ds.InstanceNumber = int(ds.InstanceNumber) + 100 * index
            ds.save_as(path)
    return folder, volumes


@pytest.mark.parametrize(("tag", "values"), [
    ("AcquisitionNumber", (1, 2)), ("TemporalPositionIdentifier", (1, 2)),
    ("EchoNumbers", (1, 2)), ("DiffusionBValue", (0.0, 1000.0)),
    ("ImageType", (["ORIGINAL", "PRIMARY", "M"], ["ORIGINAL", "PRIMARY", "P"])), ("", ()),
])
def test_two_volume_series_is_detected_and_named(tmp_path, tag, values):
    folder, volumes = two_volumes(tmp_path, tag, values)
    with pytest.raises(DicomError, match="4D series: 2 volumes of 4 slices") as caught:
        read_dicom(folder, patient="00002")
    assert (tag or "InstanceNumber") in str(caught.value) and "00002" in str(caught.value)
    result = read_dicom_series(folder)
    for volume, expected in zip(result, volumes):
        np.testing.assert_array_equal(volume.array, expected)
        assert volume.meta["n_volumes"] == 2


def test_enhanced_mr_file_of_two_volumes_is_a_4d_series(tmp_path):
    volumes = np.random.default_rng(4).integers(0, 900, size=(5, 6, 4, 2)).astype(np.float32)
    path = write_enhanced(volumes, np.diag([1.0, 1.2, 2.5, 1.0]), tmp_path / "fmri.dcm")
    with pytest.raises(DicomError, match="4D series: 2 volumes of 4 slices .*TemporalPosition"):
        read_dicom(path)
    for t, volume in enumerate(read_dicom_series(path)):
        np.testing.assert_array_equal(volume.array, volumes[..., t])


def test_skip_invalid_files_is_a_data_config_key():
    from omegaconf import OmegaConf

    config = OmegaConf.load(Path(__file__).parents[2] / "conf" / "data" / "_volume.yaml")
    assert config.skip_invalid_files is False


# ---------------------------------------------------------------------------- decoders
HAS_LIBJPEG = importlib.util.find_spec("libjpeg") is not None


@pytest.mark.parametrize("name", ["JPEG-LL.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm",
                                  "MR2_J2KR.dcm"])
def test_default_install_decodes_lossless_jpeg_jpeg_ls_rle_and_jpeg_2000(name):
    """The permissive decoders of the default install (GDCM, CharLS, OpenJPEG, RLE) cover
    the encodings of scanner MR; the GPL libjpeg is not needed for them."""
    frames = read_frames(Path(get_testdata_file(name)))
    assert frames and all(np.isfinite(f.pixels).all() for f in frames)


@pytest.mark.skipif(HAS_LIBJPEG, reason="the opt-in libjpeg decoder is installed here")
def test_12_bit_jpeg_extended_without_libjpeg_names_the_extra_to_install():
    with pytest.raises(DicomError, match=r"radiogenomics\[libjpeg\]"):
        read_dicom(Path(get_testdata_file("JPGExtended.dcm")), patient="00001")
