"""Read a DICOM MR series (a folder of slices, a multi-frame file or a Siemens mosaic) as RAS+.

Slices are ordered by their position along the slice normal, never by file name. Plain
uncompressed files go through a small header scanner and ``np.frombuffer`` (several times
faster than pydicom); everything else (compressed, big endian, Enhanced MR, mosaics) goes
through pydicom. Voxel values are those the standard defines (PS3.5 8.1.1, PS3.3 C.7.6.3.1):
the BitsStored bits that end at HighBit, two's complement when PixelRepresentation is 1, then
RescaleSlope and RescaleIntercept.

In a series folder, what is not an image of the series is left out and named in
``meta["skipped"]``: files that are not DICOM, DICOM objects without pixel data (raw data,
SR, PR, DICOMDIR) and a small minority stack (a localizer, a derived image) beside a clearly
dominant one. A series whose slice positions repeat is a multi-volume (4D) series: see
`read_dicom_series`.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from radiogenomics.data.volume import Volume
from radiogenomics.errors import DicomError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NATIVE_SYNTAXES = {"1.2.840.10008.1.2": False, "1.2.840.10008.1.2.1": True}  # uid -> explicit VR
BIG_ENDIAN_SYNTAX = "1.2.840.10008.1.2.2"
ORIENTATION_TOLERANCE = 1e-3
DUPLICATE_DISTANCE_MM = 1e-3
MIN_VOXEL_MM3 = 1e-6
DOMINANT_FRACTION = 0.75
"""A stack holding at least this fraction of a folder's images is the series; the rest is
left out (localizers, derived images). Below it, a folder of several stacks is an error."""
VOLUME_KEYS = (
    "TemporalPositionIdentifier", "TemporalPositionIndex", "AcquisitionNumber", "EchoNumbers",
    "EffectiveEchoTime", "DiffusionBValue", "ImageType",
)
"""Attributes that tell apart the volumes of a multi-volume series, in sorting priority."""
SKIP_OPTION = "data.skip_invalid_files=true (converter: --skip-invalid-files)"
"""How a user asks to leave unreadable images out of a series (config key, CLI flag)."""
PHILIPS_SCALE_SLOPE = (0x2005, 0x100E)
PHILIPS_PRIVATE_GROUP = (0x2005, 0x140F)
"""Philips private ScaleSlope (FL) and the per-frame private sequence of Enhanced MR holding it,
for the "precise" floating-point values (as dcm2niix -p y); the block 0x10/0x14 is the one
Philips software writes (private creator "Philips MR Imaging DD 001"/"DD 005")."""


class NotAnImageError(DicomError):
    """A file that is not an image of the series (not DICOM, or DICOM without pixel data)."""


@dataclass
class Frame:
    """One 2D image with its geometry, as stored (before rescale)."""

    path: Path
    pixels: np.ndarray
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: tuple[float, ...] | None
    thickness: float | None
    spacing_between: float | None
    slope: float
    intercept: float
    series_uid: str | None
    description: str
    transfer_syntax: str
    labels: dict[str, object] = field(default_factory=dict)
    """Values of `VOLUME_KEYS` (absent ones left out): which volume of a 4D series it is."""
    order: tuple[float, ...] = ()
    """(InstanceNumber, frame or tile index): the order of frames at one slice position."""


# ---------------------------------------------------------------- stored values


def stored_values(raw: np.ndarray, bits_stored: int, high_bit: int, signed: bool) -> np.ndarray:
    """The stored values of unsigned words `raw`: bits ``HighBit-BitsStored+1 .. HighBit``,
    two's complement when `signed`. Bits outside them (overlays, garbage) are dropped."""
    bits = raw.dtype.itemsize * 8
    if not 1 <= bits_stored <= bits or not bits_stored - 1 <= high_bit < bits:
        raise ValueError(f"BitsStored {bits_stored} / HighBit {high_bit} do not fit {bits} bits")
    shift = high_bit + 1 - bits_stored
    if shift:
        raw = raw >> raw.dtype.type(shift)
    if bits_stored < bits:
        raw = raw & raw.dtype.type((1 << bits_stored) - 1)
    if not signed:
        return raw
    values = raw.view(raw.dtype.str.replace("u", "i"))
    if bits_stored < bits:
        spare = values.dtype.type(bits - bits_stored)
        values = (values << spare) >> spare
    return values


def _label(value: object) -> object:
    """A VOLUME_KEYS value made comparable: a float, a backslash-joined string, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v).strip() for v in value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value).strip() or None


def _image_type(value: object) -> str:
    text = _label(value)
    return text.upper() if isinstance(text, str) else ""


# ---------------------------------------------------------------- fast path (native syntaxes)

_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
}
_PIXEL_DATA = 0x7FE00010
_STRING_TAGS = {
    0x00080008: "ImageType",
    0x00080016: "SOPClassUID",
    0x0008103E: "SeriesDescription",
    0x00180086: "EchoNumbers",
    0x0020000E: "SeriesInstanceUID",
    0x00200012: "AcquisitionNumber",
    0x00200013: "InstanceNumber",
    0x00200032: "ImagePositionPatient",
    0x00200037: "ImageOrientationPatient",
    0x00200100: "TemporalPositionIdentifier",
    0x00280004: "PhotometricInterpretation",
    0x00280008: "NumberOfFrames",
    0x00280030: "PixelSpacing",
    0x00180050: "SliceThickness",
    0x00180088: "SpacingBetweenSlices",
    0x00281052: "RescaleIntercept",
    0x00281053: "RescaleSlope",
}
_US_TAGS = {
    0x00280002: "SamplesPerPixel",
    0x00280010: "Rows",
    0x00280011: "Columns",
    0x00280100: "BitsAllocated",
    0x00280101: "BitsStored",
    0x00280102: "HighBit",
    0x00280103: "PixelRepresentation",
}
_DIFFUSION_B_VALUE = 0x00189087  # FD
_MULTIFRAME_TAGS = {0x52009229, 0x52009230}  # Shared / PerFrame FunctionalGroupsSequence


def _element(buf: bytes, pos: int, explicit: bool) -> tuple[int, int, int]:
    """(tag, value length, value offset) of the data element whose header starts at `pos`."""
    group, elem = struct.unpack_from("<HH", buf, pos)
    tag = group << 16 | elem
    if group == 0xFFFE or not explicit:
        return tag, struct.unpack_from("<I", buf, pos + 4)[0], pos + 8
    if buf[pos + 4 : pos + 6] in _LONG_VRS:
        return tag, struct.unpack_from("<I", buf, pos + 8)[0], pos + 12
    return tag, struct.unpack_from("<H", buf, pos + 6)[0], pos + 8


def _skip_undefined(buf: bytes, pos: int, explicit: bool) -> int:
    """Offset just past the delimiter that closes an undefined-length value starting at `pos`."""
    while True:
        tag, length, pos = _element(buf, pos, explicit)
        if tag in (0xFFFEE00D, 0xFFFEE0DD):
            return pos
        pos = _skip_undefined(buf, pos, explicit) if length == _UNDEFINED else pos + length


def _scan(buf: bytes, pos: int, explicit: bool) -> dict[str, object] | None:
    """The wanted top-level values of a dataset starting at `pos`, or None if unusual."""
    found: dict[str, object] = {}
    size = len(buf)
    while pos < size:
        tag, length, pos = _element(buf, pos, explicit)
        if tag == _PIXEL_DATA:
            if length == _UNDEFINED or pos + length > size:
                return None
            found["PixelData"] = (pos, length)
            return found
        if tag in _MULTIFRAME_TAGS:
            return None
        if length == _UNDEFINED:
            pos = _skip_undefined(buf, pos, explicit)
            continue
        if tag in _STRING_TAGS:
            found[_STRING_TAGS[tag]] = _text(buf[pos : pos + length])
        elif tag in _US_TAGS and length == 2:
            found[_US_TAGS[tag]] = struct.unpack_from("<H", buf, pos)[0]
        elif tag == _DIFFUSION_B_VALUE and length == 8:
            found["DiffusionBValue"] = struct.unpack_from("<d", buf, pos)[0]
        pos += length
    return None


def _text(raw: bytes) -> str:
    """A string value: UTF-8 (a superset of the ASCII of numbers and UIDs), else Latin-1."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.strip("\x00 ")


def _floats(text: object) -> np.ndarray | None:
    """Backslash-separated decimal strings as floats, or None when absent/empty."""
    if not text:
        return None
    return np.array([float(v) for v in str(text).split("\\")])


def _number(text: object) -> float | None:
    values = _floats(text)
    return float(values[0]) if values is not None else None


def _read_native(path: Path) -> list[Frame] | None:
    """Frames of an uncompressed little-endian single-frame file, or None to use pydicom."""
    with open(path, "rb", buffering=0) as handle:  # unbuffered: one read of the whole file
        buf = handle.read()
    if len(buf) < 144 or buf[128:132] != b"DICM":
        return None
    try:
        syntax, found = _scan_file(buf)
        if found is None or not _plain_grey(found):
            return None
        return [_native_frame(path, buf, syntax, found)]
    except (struct.error, ValueError, RecursionError):
        return None


def _scan_file(buf: bytes) -> tuple[str | None, dict[str, object] | None]:
    """The transfer syntax and, for native syntaxes, the wanted values of a Part 10 file."""
    tag, length, pos = _element(buf, 132, True)
    if tag != 0x00020000:
        return None, None
    meta_end = pos + length + struct.unpack_from("<I", buf, pos)[0]
    syntax = None
    pos += length
    while pos < meta_end:
        tag, length, pos = _element(buf, pos, True)
        if tag == 0x00020010:
            syntax = buf[pos : pos + length].decode("ascii").strip("\x00 ")
        pos += length
    if syntax not in NATIVE_SYNTAXES:
        return syntax, None
    return syntax, _scan(buf, meta_end, NATIVE_SYNTAXES[syntax])


def _native_frame(path: Path, buf: bytes, syntax: str, found: dict[str, object]) -> Frame:
    """A Frame whose pixels are the file's stored values (a view on its bytes when possible)."""
    rows, cols, bits = found["Rows"], found["Columns"], found["BitsAllocated"]
    offset, length = found["PixelData"]
    dtype = np.dtype(f"<u{bits // 8}")
    if length < rows * cols * dtype.itemsize:
        raise ValueError("pixel data shorter than Rows x Columns")
    raw = np.frombuffer(buf, dtype, rows * cols, offset).reshape(rows, cols)
    bits_stored = found.get("BitsStored", bits)
    pixels = stored_values(raw, bits_stored, found.get("HighBit", bits_stored - 1),
                           found.get("PixelRepresentation", 0) == 1)
    spacing = _floats(found.get("PixelSpacing"))
    slope = _number(found.get("RescaleSlope"))
    intercept = _number(found.get("RescaleIntercept"))
    labels = {key: _label(found.get(key)) for key in VOLUME_KEYS}
    return Frame(
        path=path,
        pixels=pixels,
        position=_floats(found.get("ImagePositionPatient")),
        orientation=_floats(found.get("ImageOrientationPatient")),
        pixel_spacing=tuple(float(v) for v in spacing) if spacing is not None else None,
        thickness=_number(found.get("SliceThickness")),
        spacing_between=_number(found.get("SpacingBetweenSlices")),
        slope=1.0 if slope is None else slope,
        intercept=0.0 if intercept is None else intercept,
        series_uid=found.get("SeriesInstanceUID") or None,
        description=str(found.get("SeriesDescription", "")),
        transfer_syntax=syntax,
        labels={key: value for key, value in labels.items() if value is not None},
        order=(_order_number(found.get("InstanceNumber")), 0.0),
    )


def _order_number(value: object) -> float:
    number = _label(value)
    return number if isinstance(number, float) and math.isfinite(number) else math.inf


def _plain_grey(found: dict[str, object]) -> bool:
    """Whether the scanned header describes one grey frame np.frombuffer can decode."""
    needed = ("Rows", "Columns", "BitsAllocated", "PixelData")
    if any(key not in found for key in needed) or found["BitsAllocated"] not in (8, 16, 32):
        return False
    return (
        found.get("SamplesPerPixel", 1) == 1
        and str(found.get("NumberOfFrames", "1") or "1") == "1"
        and "MOSAIC" not in _image_type(found.get("ImageType")).split("\\")
        and str(found.get("PhotometricInterpretation", "MONOCHROME2")).startswith("MONOCHROME")
    )


# ---------------------------------------------------------------- pydicom path


def _read_pydicom(path: Path, patient: str | None, philips_precise: bool = False) -> list[Frame]:
    """Frames of any DICOM image file pydicom can decode (compressed, multi-frame, mosaic...)."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as error:
        if _cut_before_prefix(path):
            raise DicomError(
                f"empty or truncated DICOM file ({path.stat().st_size} bytes, cut before its "
                "header)", patient=patient, path=path,
                hint="the file is probably truncated (an interrupted copy or download): copy "
                "it again from the source",
            ) from error
        raise NotAnImageError(
            "not a DICOM file", patient=patient, path=path,
            hint="it is left out when it sits beside the images of a series folder; "
            "give the series folder, or a DICOM file",
        ) from error
    except Exception as error:  # pydicom raises many types on corrupt files
        raise DicomError(
            f"cannot parse DICOM file ({error})", patient=patient, path=path,
            hint="the file is probably truncated or corrupt: copy it again from the source",
        ) from error
    _require_pixels(ds, path, patient)
    try:
        samples = int(ds.get("SamplesPerPixel", 1))
    except Exception as error:  # pydicom converts values lazily: a corrupt header fails here
        raise DicomError(
            f"malformed image attributes ({error})", patient=patient, path=path,
            hint="the header is corrupt: re-export the series from the scanner or PACS",
        ) from error
    if samples != 1:
        raise DicomError(
            "colour DICOM image; an MR series must be greyscale", patient=patient, path=path,
            hint="check that the folder holds the MR series and not a screenshot",
        )
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    pixels = _decode(ds, path, patient, syntax)
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        pixels = pixels.reshape(n_frames, int(ds.Rows), int(ds.Columns))
        frames = [_frame_from_dataset(ds, path, i, pixels[i], syntax) for i in range(n_frames)]
        if philips_precise:
            frames = [_philips_precise(ds, frame, i) for i, frame in enumerate(frames)]
        mosaic = n_frames == 1 and "MOSAIC" in _image_type(ds.get("ImageType")).split("\\")
    except Exception as error:  # lazily converted values: ValueError, IndexError, ...
        raise DicomError(
            f"malformed image attributes ({error})", patient=patient, path=path,
            hint="the header is corrupt: re-export the series from the scanner or PACS",
        ) from error
    return _mosaic_tiles(ds, frames[0], patient) if mosaic else frames


_PART10_PREFIX = bytes(128) + b"DICM"


def _cut_before_prefix(path: Path) -> bool:
    """Whether the file is a Part 10 file cut before its header: empty, or only a prefix of
    the zero preamble and "DICM" (what a copy interrupted early leaves). Such a file is a lost
    image, not a stray file to leave out of the series."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_PART10_PREFIX) + 1)
    except OSError:
        return False
    return len(head) <= len(_PART10_PREFIX) and _PART10_PREFIX.startswith(head)


def _require_pixels(ds: Dataset, path: Path, patient: str | None) -> None:
    """Raise unless `ds` holds pixel data: a truncated image, or an object that is no image."""
    if any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        return
    try:
        sop = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
        kind = UID(sop).name if sop else ""
    except Exception:  # pydicom converts values lazily: a corrupt UID fails here
        sop = kind = ""
    if "Image Storage" in kind or (not sop and "Rows" in ds):
        raise DicomError(
            "DICOM image ends before its pixel data (truncated file)",
            patient=patient, path=path, hint="copy the file again from the source",
        )
    if not sop:  # every Part 10 file names its SOP class: this one is cut short or damaged
        raise DicomError(
            "DICOM file without SOP class or pixel data (truncated or corrupt)",
            patient=patient, path=path,
            hint="copy it again from the source if it is an image, else remove it",
        )
    raise NotAnImageError(
        f"DICOM object without pixel data ({kind}): not an image",
        patient=patient, path=path,
        hint="it is left out when it sits beside the images of a series folder",
    )


def _decode(ds: Dataset, path: Path, patient: str | None, syntax: str) -> np.ndarray:
    """The stored values of every frame, as pydicom decodes them (HighBit honoured)."""
    try:
        bits_stored = int(ds.get("BitsStored", 0) or 0)
        high_bit = int(ds.get("HighBit", bits_stored - 1))
        if syntax in (*NATIVE_SYNTAXES, BIG_ENDIAN_SYNTAX) and high_bit != bits_stored - 1:
            # pydicom keeps the lowest BitsStored bits: wrong when HighBit is not BitsStored-1
            order = ">" if syntax == BIG_ENDIAN_SYNTAX else "<"
            dtype = np.dtype(f"{order}u{int(ds.BitsAllocated) // 8}")
            count = int(ds.get("NumberOfFrames", 1) or 1) * int(ds.Rows) * int(ds.Columns)
            raw = np.frombuffer(ds.PixelData, dtype, count)
            return stored_values(raw, bits_stored, high_bit, ds.get("PixelRepresentation") == 1)
        return ds.pixel_array
    except BaseException as error:  # decoders raise many types on bad data; Rust ones panic
        if not isinstance(error, Exception) and type(error).__name__ != "PanicException":
            raise
        raise DicomError(
            f"cannot decode pixel data ({error})", patient=patient, path=path,
            hint=_decoder_hint(str(error)),
        ) from error


def _decoder_hint(message: str) -> str:
    """What to do when no decoder could decode a file: install the opt-in GPL JPEG decoder
    when every installed one refused the syntax (12-bit JPEG Extended), else check the file."""
    unsupported = "does not support" in message or "No plugins" in message
    if unsupported and importlib.util.find_spec("libjpeg") is None:
        return ("no installed decoder supports this encoding (the permissive ones, GDCM and "
                "Pillow, do not decode 12-bit JPEG Extended): pip install "
                "'radiogenomics[libjpeg]' for the GPL-3.0 libjpeg decoder")
    return "the file is probably truncated or corrupt, or needs a missing decoder plugin"


def _philips_scale(ds: Dataset, index: int) -> float | None:
    """Philips private ScaleSlope of frame `index`: per-frame private group, else top level."""
    holders = [ds]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        private = per_frame[index].get(PHILIPS_PRIVATE_GROUP)
        if private is not None and private.VR == "SQ" and len(private.value):
            holders.insert(0, private.value[0])
    for holder in holders:
        element = holder.get(PHILIPS_SCALE_SLOPE)
        if element is not None and element.VM == 1:
            value = float(element.value)
            if math.isfinite(value) and value != 0:
                return value
    return None


def _philips_precise(ds: Dataset, frame: Frame, index: int) -> Frame:
    """Philips "floating point" values FP = (SV * RS + RI) / (RS * SS), when SS is present."""
    scale = _philips_scale(ds, index)
    if scale is None or frame.slope == 0:
        return frame
    return replace(frame, slope=1.0 / scale, intercept=frame.intercept / (frame.slope * scale))


def _mosaic_tiles(ds: Dataset, mosaic: Frame, patient: str | None) -> list[Frame]:
    """The slices of a Siemens mosaic (one image tiling N slices, N in the CSA header)."""
    path = mosaic.path

    def refuse(message: str, hint: str) -> DicomError:
        return DicomError(message, patient=patient, path=path, hint=hint)

    with warnings.catch_warnings():  # nibabel warns that its DICOM readers are experimental
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import csareader
    try:
        csa = csareader.get_csa_header(ds, "image")
        count = csareader.get_n_mosaic(csa) if csa else None
        normal = csareader.get_slice_normal(csa) if csa else None
    except Exception:  # nibabel raises several types on a damaged CSA header
        csa = count = normal = None
    if not count:
        raise refuse(
            "Siemens mosaic (ImageType MOSAIC) without NumberOfImagesInMosaic in its CSA "
            "header: its tiles cannot be told apart as slices",
            "the private Siemens tags (0029,xx10) were removed, e.g. by anonymisation: "
            "re-export the series with them, or convert it with dcm2niix",
        )
    count = int(count)
    size = math.ceil(math.sqrt(count))
    rows, cols = mosaic.pixels.shape
    if count < 1 or rows % size or cols % size:
        raise refuse(
            f"Siemens mosaic of {rows}x{cols} pixels cannot hold {count} equal tiles "
            f"({size}x{size} grid)", "the file is damaged or was resized: re-export the series",
        )
    _check_frame(mosaic, patient)
    if mosaic.position is None or mosaic.orientation is None or mosaic.pixel_spacing is None:
        raise refuse(
            "Siemens mosaic without ImagePositionPatient, ImageOrientationPatient or "
            "PixelSpacing: its slices cannot be placed",
            "re-export the series with its geometry, or convert it with dcm2niix",
        )
    tile_rows, tile_cols = rows // size, cols // size
    tiles = (mosaic.pixels.reshape(size, tile_rows, size, tile_cols).transpose(0, 2, 1, 3)
             .reshape(size * size, tile_rows, tile_cols)[:count])
    row_cos, col_cos = mosaic.orientation[:3], mosaic.orientation[3:]
    row_spacing, col_spacing = mosaic.pixel_spacing
    # ImagePositionPatient is that of the whole mosaic's corner: move it to the first tile's
    first = (mosaic.position + row_cos * col_spacing * (cols - tile_cols) / 2
             + col_cos * row_spacing * (rows - tile_rows) / 2)
    normal = np.asarray(normal if normal is not None else np.cross(row_cos, col_cos), float)
    if normal.shape != (3,) or not np.isfinite(normal).all() or np.linalg.norm(normal) < 0.5:
        normal = np.cross(row_cos, col_cos)
    step = normal / np.linalg.norm(normal) * _fallback_spacing(mosaic.spacing_between,
                                                               mosaic.thickness)
    return [
        replace(mosaic, pixels=tiles[i], position=first + step * i,
                order=(mosaic.order[0], float(i)))
        for i in range(count)
    ]


def _functional(ds: Dataset, index: int, sequence: str, keyword: str) -> object:
    """An attribute of frame `index`: per-frame group, then shared group, then top level."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        groups.append(per_frame[index])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        items = group.get(sequence)
        if items and keyword in items[0] and items[0][keyword].value not in (None, ""):
            return items[0][keyword].value
    return ds.get(keyword)


_FUNCTIONAL_LABELS = {
    "TemporalPositionIndex": "FrameContentSequence",
    "EffectiveEchoTime": "MREchoSequence",
    "DiffusionBValue": "MRDiffusionSequence",
}


def _frame_from_dataset(
    ds: Dataset, path: Path, index: int, pixels: np.ndarray, syntax: str
) -> Frame:
    def value(sequence: str, keyword: str) -> np.ndarray | None:
        raw = _functional(ds, index, sequence, keyword)
        if raw is None or raw == "":
            return None
        return np.atleast_1d(np.asarray(raw, dtype=np.float64))

    spacing = value("PixelMeasuresSequence", "PixelSpacing")
    thickness = value("PixelMeasuresSequence", "SliceThickness")
    between = value("PixelMeasuresSequence", "SpacingBetweenSlices")
    slope = value("PixelValueTransformationSequence", "RescaleSlope")
    intercept = value("PixelValueTransformationSequence", "RescaleIntercept")
    labels = {key: _label(ds.get(key)) for key in VOLUME_KEYS}
    if "PerFrameFunctionalGroupsSequence" in ds:
        labels.update({key: _label(_functional(ds, index, sequence, key))
                       for key, sequence in _FUNCTIONAL_LABELS.items()})
        labels["ImageType"] = _label(_functional(ds, index, "MRImageFrameTypeSequence",
                                                 "FrameType")) or labels["ImageType"]
    return Frame(
        path=path,
        pixels=pixels,
        position=value("PlanePositionSequence", "ImagePositionPatient"),
        orientation=value("PlaneOrientationSequence", "ImageOrientationPatient"),
        pixel_spacing=tuple(float(v) for v in spacing) if spacing is not None else None,
        thickness=float(thickness[0]) if thickness is not None else None,
        spacing_between=float(between[0]) if between is not None else None,
        slope=float(slope[0]) if slope is not None else 1.0,
        intercept=float(intercept[0]) if intercept is not None else 0.0,
        series_uid=str(ds.get("SeriesInstanceUID", "")) or None,
        description=str(ds.get("SeriesDescription", "")),
        transfer_syntax=syntax,
        labels={key: label for key, label in labels.items() if label is not None},
        order=(_order_number(ds.get("InstanceNumber")), float(index)),
    )


def read_frames(path: Path, patient: str | None = None, philips_precise: bool = False
                ) -> list[Frame]:
    """All frames of one DICOM file (the tiles of a mosaic), by the fast path when it applies.

    `philips_precise` gives Philips "floating point" values (private ScaleSlope) instead of
    the displayed ones; it reads every file through pydicom.
    """
    try:
        frames = None if philips_precise else _read_native(path)
    except OSError as error:
        raise DicomError(
            f"cannot read file ({error.strerror})", patient=patient, path=path,
            hint="check that the file exists and is readable",
        ) from error
    return frames if frames is not None else _read_pydicom(path, patient, philips_precise)


# ---------------------------------------------------------------- series assembly


def _natural_key(path: Path) -> list[object]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def list_series_files(folder: Path, patient: str | None = None) -> list[Path]:
    """The candidate files of a series folder (hidden files ignored), in natural name order."""
    if not folder.exists():
        raise DicomError(
            "DICOM series folder or file does not exist", patient=patient, path=folder,
            hint="check the path; in RSNA layout a series is <id>/<FLAIR|T1w|T1wCE|T2w>/",
        )
    entries = [Path(e.path) for e in os.scandir(folder) if not e.name.startswith(".")]
    files = [p for p in entries if p.is_file()]
    if not files:
        folders = sorted(p.name for p in entries if p.is_dir())
        hint = (
            f"it holds sub-folders {folders[:4]}: point to one series folder" if folders
            else "the series is missing: re-download it or drop it from the cohort"
        )
        raise DicomError("no DICOM files in series folder", patient=patient, path=folder, hint=hint)
    return sorted(files, key=_natural_key)


def read_dicom_series(
    path: str | Path,
    patient: str | None = None,
    *,
    skip_invalid_files: bool = False,
    gap_tolerance: float = 0.05,
    workers: int = 1,
    philips_precise: bool = False,
) -> list[Volume]:
    """Every volume of a DICOM series folder or file: one for a 3D series, more for a 4D one.

    In a folder, files that are not images of the series are left out and listed in each
    volume's ``meta["skipped"]``; so are unreadable DICOM images with `skip_invalid_files`
    (by default they raise DicomError). `gap_tolerance` is the largest allowed deviation of a
    slice from a uniform grid, as a fraction of the slice spacing. `workers` > 1 reads files
    in threads (no gain measured with files in the page cache, as parsing holds the GIL; it
    may help on slow network disks). `philips_precise`: see `read_frames`. Each
    volume's array is a permuted view of the slice stack (no copy): the preprocessing
    resamples it in that memory order (`resample.apply_axis_maps`).
    """
    path = Path(path)
    folder = path.is_dir() or not path.exists()
    files = list_series_files(path, patient) if folder else [path]
    frames: list[Frame] = []
    skipped: list[str] = []

    def read_one(file: Path) -> list[Frame] | DicomError:
        try:
            return read_frames(file, patient, philips_precise)
        except DicomError as error:
            return error

    if workers > 1 and len(files) > 8:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(read_one, files))
    else:
        results = [read_one(file) for file in files]
    for file, result in zip(files, results):
        if not isinstance(result, DicomError):
            frames.extend(result)
        elif (folder and isinstance(result, NotAnImageError)) or skip_invalid_files:
            skipped.append(f"{file.name}: {result.reason}")
        elif folder:
            raise type(result)(
                result.reason, patient=patient, path=result.path,
                hint=f"{result.hint}; or leave the file out: {SKIP_OPTION}",
            ) from result
        else:
            raise result
    if not frames:
        if len(files) == 1 and isinstance(results[0], DicomError):
            raise results[0]
        raise DicomError(
            f"no readable DICOM image among {len(files)} file(s) ({'; '.join(skipped[:3])})",
            patient=patient, path=path,
            hint="the series is missing or corrupt: re-download it or drop it from the cohort",
        )
    try:
        volumes = assemble_series(frames, patient, gap_tolerance, skipped)
    except DicomError as error:
        if not skipped:
            raise
        raise DicomError(  # a left-out file may be why, e.g. a slice missing from the grid
            f"{error.reason} (left out of the series: {'; '.join(skipped[:3])})",
            patient=patient, path=error.path, hint=error.hint,
        ) from error
    for volume in volumes:
        volume.meta["skipped"] = skipped
    return volumes


def read_dicom(path: str | Path, patient: str | None = None, **options: Any) -> Volume:
    """Read a 3D DICOM series (folder, single- or multi-frame file, mosaic) as a RAS+ Volume.

    A multi-volume (4D) series raises DicomError saying what it holds: training takes one 3D
    volume per sequence. `options` (keyword-only) as in `read_dicom_series`.
    """
    volumes = read_dicom_series(path, patient, **options)
    if len(volumes) > 1:
        raise DicomError(
            f"{volumes[0].meta['series_layout']}; a 3D volume is needed here",
            patient=patient, path=path,
            hint="keep the files of one volume in the folder, or convert the series with "
            "python -m radiogenomics.data.convert (one 4D NIfTI) and extract one volume",
        )
    return volumes[0]


def _check_frame(frame: Frame, patient: str | None) -> None:
    """Raise unless the frame has pixels and its geometry and rescale values are numbers."""
    problem = None
    if frame.pixels.ndim != 2 or 0 in frame.pixels.shape:
        problem = f"image has no pixels (Rows x Columns = {frame.pixels.shape})"
    for name, value, size in (("ImagePositionPatient", frame.position, 3),
                              ("ImageOrientationPatient", frame.orientation, 6),
                              ("PixelSpacing", frame.pixel_spacing, 2)):
        if value is not None and (np.shape(value) != (size,) or not np.isfinite(value).all()):
            problem = f"malformed {name} {value}: expected {size} finite numbers"
    if frame.pixel_spacing is not None and problem is None and min(frame.pixel_spacing) <= 0:
        problem = f"PixelSpacing {frame.pixel_spacing} is not positive"
    if not (np.isfinite(frame.slope) and np.isfinite(frame.intercept)):
        problem = f"RescaleSlope {frame.slope} or RescaleIntercept {frame.intercept} is not finite"
    if problem:
        raise DicomError(problem, patient=patient, path=frame.path,
                         hint="the header is corrupt: re-export the series from the scanner/PACS")


def _fallback_spacing(*candidates: float | None) -> float:
    """The first usable (finite, positive) slice spacing among `candidates`, else 1 mm."""
    usable = [v for v in candidates if v is not None and np.isfinite(v) and v > 0]
    return usable[0] if usable else 1.0


_CORRUPT = "the header is corrupt or was blanked: re-export the series from the scanner/PACS"


def _check_headers(frames: list[Frame], patient: str | None) -> None:
    """Raise unless every frame has sane values and all agree on having a geometry."""
    first = frames[0]
    for frame in frames:
        _check_frame(frame, patient)
        if (frame.position is None, frame.orientation is None) != (
            first.position is None, first.orientation is None
        ):
            raise DicomError("some slices lack ImagePositionPatient or ImageOrientationPatient",
                             patient=patient, path=frame.path, hint=_CORRUPT)
    if first.orientation is not None:
        cosines = np.array([frame.orientation for frame in frames])
        lengths = np.linalg.norm(cosines.reshape(-1, 2, 3), axis=2)
        dots = np.abs(np.einsum("ij,ij->i", cosines[:, :3], cosines[:, 3:]))
        bad = np.flatnonzero((np.abs(lengths - 1).max(axis=1) > 1e-2) | (dots > 1e-2))
        if bad.size:
            raise DicomError(f"ImageOrientationPatient {cosines[bad[0]]} is not two "
                             "perpendicular unit vectors", patient=patient,
                             path=frames[bad[0]].path, hint=_CORRUPT)


def _same_stack(a: Frame, b: Frame) -> str | None:
    """How frames `a` and `b` differ as stacks (None: they may be slices of one series)."""
    if a.pixels.shape != b.pixels.shape:
        return "mixed slice sizes"
    if a.orientation is not None and (
        np.abs(a.orientation - b.orientation).max() > ORIENTATION_TOLERANCE
    ):
        return "mixed slice orientations"
    if a.pixel_spacing != b.pixel_spacing and (
        a.pixel_spacing is None or b.pixel_spacing is None
        or not np.allclose(a.pixel_spacing, b.pixel_spacing, atol=1e-4)
    ):
        return "mixed pixel spacings"
    if a.series_uid and b.series_uid and a.series_uid != b.series_uid:
        return "different series (SeriesInstanceUID)"
    return None


def _plane(orientation: np.ndarray | None) -> str:
    if orientation is None:
        return "unknown"
    normal = np.cross(orientation[:3], orientation[3:])
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


def _describe_stack(frames: list[Frame]) -> str:
    """e.g. "3 images 256x256 sagittal 'localizer' (IM-0001.dcm...)"."""
    first = frames[0]
    names = sorted({frame.path.name for frame in frames}, key=lambda n: _natural_key(Path(n)))
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    kind = first.labels.get("ImageType")
    kind = f", ImageType {kind}" if isinstance(kind, str) else ""
    return (f"{len(frames)} image(s) {first.pixels.shape[0]}x{first.pixels.shape[1]} "
            f"{_plane(first.orientation)} {first.description!r}{kind} ({shown})")


def _dominant_stack(frames: list[Frame], patient: str | None, skipped: list[str]) -> list[Frame]:
    """The frames of the folder's one stack; a small minority stack is left out (noted)."""
    stacks: list[list[Frame]] = []
    for frame in frames:
        home = next((stack for stack in stacks if _same_stack(stack[0], frame) is None), None)
        if home is None:
            stacks.append([frame])
        else:
            home.append(frame)
    if len(stacks) == 1:
        return frames
    stacks.sort(key=len, reverse=True)
    main = stacks[0]
    if len(main) >= DOMINANT_FRACTION * len(frames):
        for stack in stacks[1:]:
            skipped.append(f"left out {_describe_stack(stack)}: another stack than the "
                           f"series' {len(main)} images ({_same_stack(main[0], stack[0])})")
        return main
    what = _same_stack(main[0], stacks[1][0])
    held = "; ".join(_describe_stack(stack) for stack in stacks[:4])
    raise DicomError(
        f"{what}: the folder holds {len(stacks)} stacks, none of them a clear majority: {held}",
        patient=patient, path=frames[0].path.parent,
        hint="the folder mixes series or stacks; keep the files of one series only "
        "(put each series in its own folder)",
    )


def _volume_sort_key(frame: Frame) -> tuple[object, ...]:
    """Sorts the frames of one slice position into the order of their volumes."""
    key: list[object] = []
    for name in VOLUME_KEYS:
        value = frame.labels.get(name)
        key.append((2, 0.0, "") if value is None else
                   (0, value, "") if isinstance(value, float) else (1, 0.0, str(value)))
    return (*key, frame.order, _natural_key(frame.path))


def _split_volumes(
    frames: list[Frame], patient: str | None
) -> tuple[list[list[Frame]], str | None]:
    """The volumes of a series (one unless slice positions repeat), and what it holds."""
    first = frames[0]
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    distances = np.array([frame.position @ normal for frame in frames])
    order = np.argsort(distances, kind="stable")
    starts = np.flatnonzero(np.diff(distances[order]) >= DUPLICATE_DISTANCE_MM) + 1
    positions = np.split(order, starts)
    counts = np.array([len(group) for group in positions])
    if counts.max() == 1:
        return [frames], None
    if counts.min() != counts.max():
        group = positions[int(np.argmax(counts))]
        a, b = frames[group[0]], frames[group[1]]
        raise DicomError(
            f"duplicate slice position: {b.path.name} and {a.path.name} lie at the same place "
            f"({distances[group[0]]:.3f} mm along the normal); {int((counts > 1).sum())} of "
            f"{len(counts)} positions repeat ({counts.min()} to {counts.max()} images each), "
            "so this is no complete multi-volume series",
            patient=patient, path=b.path,
            hint="the folder holds extra copies of some slices, two series or an incomplete "
            "repeated acquisition: keep one copy per slice, or re-export the series",
        )
    n_volumes = int(counts[0])
    ordered = [sorted((frames[i] for i in group), key=_volume_sort_key) for group in positions]
    volumes = [[at_position[j] for at_position in ordered] for j in range(n_volumes)]
    varying = [key for key in VOLUME_KEYS if len({str(f.labels.get(key)) for f in frames}) > 1]
    told = (f"volumes differ in {', '.join(varying)}" if varying
            else "no tag tells the volumes apart: ordered by InstanceNumber")
    return volumes, (f"4D series: {n_volumes} volumes of {len(counts)} slices ({told}; "
                     "e.g. fMRI, DWI, ASL, multi-echo or magnitude and phase)")


def _slice_geometry(
    frames: list[Frame], patient: str | None, gap_tolerance: float
) -> tuple[list[Frame], np.ndarray, np.ndarray, np.ndarray]:
    """Frames sorted along the slice normal, with row/column cosines and the slice step (LPS)."""
    first = frames[0]
    row_cos, col_cos = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_cos, col_cos)
    distances = np.array([frame.position @ normal for frame in frames])
    order = np.argsort(distances, kind="stable")
    frames = [frames[i] for i in order]
    distances = distances[order]
    if len(frames) == 1:
        return frames, row_cos, col_cos, normal * _fallback_spacing(first.spacing_between,
                                                                     first.thickness)
    gaps = np.diff(distances)
    positions = np.array([frame.position for frame in frames])
    step = (positions[-1] - positions[0]) / (len(frames) - 1)
    grid = positions[0] + np.arange(len(frames))[:, None] * step
    residual = np.linalg.norm(positions - grid, axis=1)
    if residual.max() > gap_tolerance * np.linalg.norm(step):
        k = int(np.argmax(residual))
        raise DicomError(
            f"non-uniform slice positions: gaps range {gaps.min():.3f}-{gaps.max():.3f} mm, "
            f"this slice is {residual[k]:.3f} mm off a uniform grid",
            patient=patient, path=frames[k].path,
            hint="slices are missing or stacks are mixed: re-export the series, or resample it "
            "with a tool that handles variable spacing (e.g. dcm2niix)",
        )
    return frames, row_cos, col_cos, step


def _stack(frames: list[Frame], flip_rows: bool, flip_cols: bool) -> np.ndarray:
    """Rescaled frames (stored * slope + intercept) as one float32 (slice, row, column) array."""
    rows = slice(None, None, -1 if flip_rows else 1)
    cols = slice(None, None, -1 if flip_cols else 1)
    out = np.empty((len(frames), *frames[0].pixels.shape), dtype=np.float32)
    for slab, frame in zip(out, frames):
        slab[...] = frame.pixels[rows, cols]
        if frame.slope != 1:
            slab *= frame.slope
        if frame.intercept != 0:
            slab += frame.intercept
    return out


def assemble_series(
    frames: list[Frame],
    patient: str | None = None,
    gap_tolerance: float = 0.05,
    skipped: list[str] | None = None,
) -> list[Volume]:
    """Check frames, keep the folder's one stack and build its volume(s), in RAS+.

    Left-out minority stacks are appended to `skipped`.
    """
    _check_headers(frames, patient)
    frames = _dominant_stack(frames, patient, skipped if skipped is not None else [])
    if frames[0].orientation is None or frames[0].position is None:
        return [_volume(frames, patient, gap_tolerance)]
    groups, layout = _split_volumes(frames, patient)
    volumes = [_volume(group, patient, gap_tolerance) for group in groups]
    if layout:
        for index, volume in enumerate(volumes):
            volume.meta.update(series_layout=layout, n_volumes=len(volumes), volume_index=index)
    return volumes


def assemble(
    frames: list[Frame], patient: str | None = None, gap_tolerance: float = 0.05
) -> Volume:
    """Order, check and stack the frames of a 3D series into a RAS+ Volume."""
    volumes = assemble_series(frames, patient, gap_tolerance)
    if len(volumes) > 1:
        raise DicomError(f"{volumes[0].meta['series_layout']}; a 3D volume is needed here",
                         patient=patient, path=frames[0].path.parent,
                         hint="keep the files of one volume only")
    return volumes[0]


def _volume(frames: list[Frame], patient: str | None, gap_tolerance: float) -> Volume:
    """One RAS+ Volume of the frames of one stack, each at its own slice position."""
    first = frames[0]
    meta: dict[str, object] = {
        "series_description": first.description,
        "n_slices": len(frames),
        "transfer_syntax": ",".join(sorted({frame.transfer_syntax for frame in frames})),
        "rows": int(first.pixels.shape[0]),
        "columns": int(first.pixels.shape[1]),
        "slice_thickness": first.thickness,
        "geometry": "dicom",
    }
    if first.orientation is not None and first.position is not None:
        frames, row_cos, col_cos, step = _slice_geometry(frames, patient, gap_tolerance)
        origin = frames[0].position
        normal = np.cross(row_cos, col_cos)
        plane = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]
    elif len({frame.path for frame in frames}) > 1:
        raise DicomError(
            "slices have no ImagePositionPatient/ImageOrientationPatient: their order is unknown",
            patient=patient, path=first.path.parent,
            hint="re-export the series with its geometry, or convert it with the scanner's tool",
        )
    else:
        warnings.warn(
            f"{first.path}: no slice geometry (ImagePositionPatient/ImageOrientationPatient); "
            "assuming an identity orientation and the file's frame order",
            stacklevel=2,
        )
        row_cos, col_cos = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
        step = np.array([0, 0, _fallback_spacing(first.spacing_between, first.thickness)])
        origin, plane, meta["geometry"] = np.zeros(3), "unknown", "assumed"
    row_spacing, col_spacing = first.pixel_spacing or (1.0, 1.0)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing
    lps[:3, 1] = col_cos * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = origin
    affine = LPS_TO_RAS @ lps
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < MIN_VOXEL_MM3:
        raise DicomError(
            f"impossible slice geometry (voxel axes {affine[:3, :3].T.round(6).tolist()} mm)",
            patient=patient, path=first.path.parent if len(frames) > 1 else first.path,
            hint="positions or spacings in the headers are corrupt: re-export the series",
        )
    # Flip while stacking, then only permute axes: RAS+ order is the stack (slice, row,
    # column) seen as (column, row, slice), then permuted; a view of the stack, no copy
    ornt = io_orientation(affine)
    flip_cols, flip_rows, flip_slices = ornt[:, 1] < 0
    permute = np.column_stack([ornt[:, 0], np.ones(3)])
    stack = _stack(frames[::-1] if flip_slices else frames, flip_rows, flip_cols)
    low, high = stack.min(), stack.max()  # NaN or inf anywhere shows in one of them
    if not (np.isfinite(low) and np.isfinite(high)):
        raise DicomError(
            "rescaled voxels overflow (RescaleSlope/RescaleIntercept out of range)",
            patient=patient, path=first.path.parent if len(frames) > 1 else first.path,
            hint="the header is corrupt: re-export the series",
        )
    if low == high:
        raise DicomError(
            f"blank series: all {len(frames)} slices hold the single value {stack.flat[0]:g}",
            patient=patient, path=first.path.parent if len(frames) > 1 else first.path,
            hint="the scan is empty; drop this series from the cohort or re-export it",
        )
    affine = affine @ inv_ornt_aff(ornt, stack.shape[::-1])
    array = apply_orientation(stack.transpose(2, 1, 0), permute)
    return Volume.from_array(array, affine, plane, **meta)
