"""Fuzzing the DICOM reader: whatever the bytes, a valid finite volume or one of our errors.

Random files, truncations, flipped bytes and corrupted geometry tags go through
`load_volume` on a series folder. Anything but a sane `Volume` or a `DataError` (a bare
numpy, struct or pydicom exception, a NaN voxel, a singular affine) fails. The default run
draws a few dozen deterministic examples per test; ``FUZZ_EXAMPLES=5000`` searches longer,
with fresh random examples.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.datadict import tag_for_keyword
from pydicom.uid import RLELossless

from radiogenomics.data.dicom_write import write_enhanced, write_series
from radiogenomics.data.readers import load_volume
from radiogenomics.errors import DataError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
DERANDOMIZED = "FUZZ_EXAMPLES" not in os.environ
"""CI runs the same examples every time and keeps no example database in the tree."""
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZED,
                database=None if DERANDOMIZED else settings.default.database,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

GEOMETRY_TAGS = {
    "ImagePositionPatient": "DS", "ImageOrientationPatient": "DS", "PixelSpacing": "DS",
    "SliceThickness": "DS", "SpacingBetweenSlices": "DS", "RescaleSlope": "DS",
    "RescaleIntercept": "DS", "NumberOfFrames": "IS", "PhotometricInterpretation": "CS",
    "SeriesInstanceUID": "UI",
}
"""Tags whose text value the reader parses, and their VR (all have a 2-byte length)."""
PIXEL_TAGS = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit",
              "PixelRepresentation", "SamplesPerPixel")
"""Unsigned-short tags that describe the pixel data."""


def phantom() -> tuple[np.ndarray, np.ndarray]:
    """A small volume with an oblique affine (rotated 8 degrees about the S axis)."""
    volume = np.random.default_rng(3).integers(0, 900, size=(6, 5, 4)).astype(np.float32)
    angle = np.deg2rad(8.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 3.0])
    affine[:3, 3] = [-20.0, 10.0, 5.0]
    return volume, affine


class Sources(dict):
    """Series name -> bytes of its files; a short repr keeps failure reports readable."""

    def __repr__(self) -> str:
        return f"<valid series {sorted(self)}>"


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Sources:
    """The bytes of each file of three valid series: native, RLE-compressed, Enhanced MR."""
    root = tmp_path_factory.mktemp("fuzz-sources")
    volume, affine = phantom()
    native = write_series(volume, affine, root / "native")
    rle = write_series(volume, affine, root / "rle", transfer_syntax=RLELossless)
    enhanced = [write_enhanced(volume, affine, root / "enhanced" / "Image-1.dcm")]
    sources = Sources({name: [path.read_bytes() for path in paths]
                       for name, paths in (("native", native), ("rle", rle),
                                           ("enhanced", enhanced))})
    sources["mosaic"] = [small_mosaic(root / "mosaic.dcm")]
    return sources


def small_mosaic(path: Path) -> bytes:
    """nibabel's real Siemens mosaic header (CSA: 32 tiles on a 6 x 6 grid), 4 x 4 tiles."""
    from nibabel.nicom import csareader

    ds = pydicom.dcmread(Path(csareader.__file__).parent / "tests" / "data" /
                         "csa_slice_norm.dcm")
    ds.Rows = ds.Columns = 24
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = (np.arange(24 * 24) * 7 % 4000).astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(path)
    return path.read_bytes()


@contextmanager
def series_folder(files: list[bytes]) -> Iterator[Path]:
    """A fresh folder holding `files` as Image-1.dcm, Image-2.dcm, ..."""
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        for number, data in enumerate(files, start=1):
            (folder / f"Image-{number}.dcm").write_bytes(data)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def read_is_safe(files: list[bytes]) -> None:
    """Read the series: a sane volume or a DataError; any other outcome fails the test."""
    with series_folder(files) as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            volume = load_volume(folder, patient="FUZZ")
        except DataError as error:
            assert str(error), "an error must say what is wrong"
            return
    array, affine = volume.array, volume.affine
    assert array.ndim == 3 and array.size > 0 and array.dtype == np.float32
    assert np.isfinite(array).all(), "non-finite voxels returned"
    assert affine.shape == (4, 4) and np.isfinite(affine).all(), f"bad affine {affine}"
    assert abs(np.linalg.det(affine[:3, :3])) > 1e-9, f"singular affine {affine}"
    assert all(np.isfinite(s) and s > 0 for s in volume.spacing), volume.spacing


def mutate_one(files: list[bytes], index: int, change: Callable[[bytes], bytes]) -> list[bytes]:
    out = list(files)
    out[index % len(out)] = change(out[index % len(out)])
    return out


def delete_tag(data: bytes, keyword: str) -> bytes:
    """The file without `keyword`, at the top level and in functional groups (via pydicom)."""
    with series_folder([data]) as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = folder / "Image-1.dcm"
        ds = pydicom.dcmread(path)
        items = [ds]
        for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            for item in ds.get(group, []):
                items += [inner for element in item for inner in element.value]
        for item in items:
            if keyword in item:
                del item[keyword]
        ds.save_as(path, enforce_file_format=False)
        return path.read_bytes()


def overwrite_tag(data: bytes, keyword: str, value: bytes) -> bytes:
    """The file with every value of `keyword` overwritten in place by `value`, cut or padded
    to the old length so that no enclosing length changes (explicit VR little endian)."""
    group, element = divmod(tag_for_keyword(keyword), 0x10000)
    vr = GEOMETRY_TAGS.get(keyword, "US")
    marker = struct.pack("<HH", group, element) + vr.encode()
    out = bytearray(data)
    start = out.find(marker)
    while start >= 0:
        length = struct.unpack_from("<H", out, start + 6)[0]
        out[start + 8 : start + 8 + length] = value[:length].ljust(length, b" ")
        start = out.find(marker, start + 8 + length)
    return bytes(out)


def edit_tag(data: bytes, keyword: str, value: str | int | None) -> bytes:
    """Delete `keyword` (None), or overwrite it with a decimal string or an unsigned short."""
    if value is None:
        return delete_tag(data, keyword)
    raw = struct.pack("<H", value) if isinstance(value, int) else value.encode("latin-1", "replace")
    return overwrite_tag(data, keyword, raw)


decimal_text = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "0", "-0", "1e308", "-1e-320", "", " ", "abc",
                     "1\\2", "1\\2\\3\\4\\5\\6\\7", "0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0",
                     "0\\1\\0\\0\\1\\0"]),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=7)
    .map(lambda xs: "\\".join(f"{x:g}" for x in xs)),
    st.text(max_size=24),
)


@FUZZ
@given(data=st.binary(max_size=3000), dicm=st.booleans(), index=st.integers(0, 5),
       kind=st.sampled_from(["native", "rle", "enhanced"]))
def test_random_bytes_in_a_series(sources, data, dicm, index, kind) -> None:
    junk = (b"\0" * 128 + b"DICM" + data) if dicm else data
    read_is_safe(mutate_one(sources[kind], index, lambda _: junk))


@FUZZ
@given(fraction=st.floats(0, 1, exclude_max=True), index=st.integers(0, 5),
       kind=st.sampled_from(["native", "rle", "enhanced"]))
def test_truncated_file(sources, fraction, index, kind) -> None:
    read_is_safe(mutate_one(sources[kind], index, lambda b: b[: int(len(b) * fraction)]))


@FUZZ
@example(flips=[(0.945, 19)], header_only=False, index=0, kind="rle")  # RLE decoder panic
@example(flips=[(0.96875, 66)], header_only=True, index=0, kind="enhanced")  # unknown VR
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=8),
       header_only=st.booleans(), index=st.integers(0, 5),
       kind=st.sampled_from(["native", "rle", "enhanced"]))
def test_flipped_bytes(sources, flips, header_only, index, kind) -> None:
    def flip(data: bytes) -> bytes:
        out = bytearray(data)
        span = data.find(b"\xe0\x7f\x10\x00") if header_only else len(data)
        for where, value in flips:
            out[int(where * max(span, 1))] = value
        return bytes(out)

    read_is_safe(mutate_one(sources[kind], index, flip))


@FUZZ
@example(keyword="PixelSpacing", value="nan", every_file=False, index=0, kind="native")
@example(keyword="ImagePositionPatient", value="nan\\0\\0", every_file=True, index=0,
         kind="native")
@given(keyword=st.sampled_from(sorted(GEOMETRY_TAGS)), value=st.one_of(st.none(), decimal_text),
       every_file=st.booleans(), index=st.integers(0, 5),
       kind=st.sampled_from(["native", "rle", "enhanced"]))
def test_corrupted_geometry_tags(sources, keyword, value, every_file, index, kind) -> None:
    files = sources[kind]
    if every_file:
        files = [edit_tag(data, keyword, value) for data in files]
    else:
        files = mutate_one(files, index, lambda b: edit_tag(b, keyword, value))
    read_is_safe(files)


@FUZZ
@given(keyword=st.sampled_from(PIXEL_TAGS), value=st.one_of(st.none(), st.integers(0, 65535)),
       index=st.integers(0, 5), kind=st.sampled_from(["native", "rle", "enhanced"]))
def test_corrupted_pixel_description(sources, keyword, value, index, kind) -> None:
    read_is_safe(mutate_one(sources[kind], index, lambda b: edit_tag(b, keyword, value)))


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                      min_size=1, max_size=8),
       keyword=st.sampled_from(["Rows", "Columns", "ImageType", "ImagePositionPatient"]),
       value=st.one_of(st.none(), st.integers(0, 65535), decimal_text))
def test_corrupted_mosaic(sources, flips, keyword, value) -> None:
    """Flipped bytes (the CSA header included) or a corrupted tag in a Siemens mosaic."""
    data = sources["mosaic"][0]
    if keyword in ("Rows", "Columns") and not isinstance(value, str) or keyword not in (
        "Rows", "Columns"
    ) and not isinstance(value, int):
        data = edit_tag(data, keyword, value)
    out = bytearray(data)
    for where, byte in flips:
        out[int(where * len(out))] = byte
    read_is_safe([bytes(out)])
