"""Read a DICOM MR series (a folder of slices, or one multi-frame file) as a RAS+ Volume.

Slices are ordered by their position along the slice normal, never by file name. Plain
uncompressed files go through a small header scanner and ``np.frombuffer`` (several times
faster than pydicom); everything else (compressed, big endian, Enhanced MR) goes through pydicom.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from radiogenomics.data.errors import DicomError
from radiogenomics.data.readers import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NATIVE_SYNTAXES = {"1.2.840.10008.1.2": False, "1.2.840.10008.1.2.1": True}  # uid -> explicit VR
ORIENTATION_TOLERANCE = 1e-3
DUPLICATE_DISTANCE_MM = 1e-3
MIN_VOXEL_MM3 = 1e-6


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


# ---------------------------------------------------------------- fast path (native syntaxes)

_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
}
_PIXEL_DATA = 0x7FE00010
_STRING_TAGS = {
    0x0008103E: "SeriesDescription",
    0x0020000E: "SeriesInstanceUID",
    0x00200032: "ImagePositionPatient",
    0x00200037: "ImageOrientationPatient",
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
    0x00280103: "PixelRepresentation",
}
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
    """A Frame whose pixels are a view on the file's bytes."""
    rows, cols, bits = found["Rows"], found["Columns"], found["BitsAllocated"]
    dtype = np.dtype(f"<{'i' if found.get('PixelRepresentation') else 'u'}{bits // 8}")
    offset, length = found["PixelData"]
    if length < rows * cols * dtype.itemsize:
        raise ValueError("pixel data shorter than Rows x Columns")
    pixels = np.frombuffer(buf, dtype, rows * cols, offset).reshape(rows, cols)
    spacing = _floats(found.get("PixelSpacing"))
    slope = _number(found.get("RescaleSlope"))
    intercept = _number(found.get("RescaleIntercept"))
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
    )


def _plain_grey(found: dict[str, object]) -> bool:
    """Whether the scanned header describes one grey frame np.frombuffer can decode as is."""
    needed = ("Rows", "Columns", "BitsAllocated", "PixelData")
    if any(key not in found for key in needed) or found["BitsAllocated"] not in (8, 16, 32):
        return False
    signed = found.get("PixelRepresentation", 0) == 1
    bits_stored = found.get("BitsStored", found["BitsAllocated"])
    return (
        found.get("SamplesPerPixel", 1) == 1
        and str(found.get("NumberOfFrames", "1") or "1") == "1"
        and not (signed and bits_stored != found["BitsAllocated"])
        and str(found.get("PhotometricInterpretation", "MONOCHROME2")).startswith("MONOCHROME")
    )


# ---------------------------------------------------------------- pydicom path


def _read_pydicom(path: Path, patient: str | None) -> list[Frame]:
    """Frames of any DICOM image file pydicom can decode (compressed, multi-frame, ...)."""
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError as error:
        raise DicomError(
            "not a DICOM file", patient=patient, path=path,
            hint="remove it from the series folder or pass skip_invalid_files=True",
        ) from error
    except Exception as error:  # pydicom raises many types on corrupt files
        raise DicomError(
            f"cannot parse DICOM file ({error})", patient=patient, path=path,
            hint="the file is probably truncated or corrupt: copy it again from the source",
        ) from error
    if "PixelData" not in ds:
        if "Rows" in ds:
            raise DicomError(
                "DICOM image ends before its pixel data (truncated file)",
                patient=patient, path=path, hint="copy the file again from the source",
            )
        raise DicomError(
            "DICOM file has no pixel data (truncated, or not an image)",
            patient=patient, path=path,
            hint="copy it again if it is a truncated image, else remove it from the series folder",
        )
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
    try:
        pixels = ds.pixel_array
    except BaseException as error:  # decoders raise many types on bad data; Rust ones panic
        if not isinstance(error, Exception) and type(error).__name__ != "PanicException":
            raise
        raise DicomError(
            f"cannot decode pixel data ({error})", patient=patient, path=path,
            hint="the file is probably truncated or corrupt, or needs a missing decoder plugin",
        ) from error
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        pixels = pixels.reshape(n_frames, int(ds.Rows), int(ds.Columns))
        return [_frame_from_dataset(ds, path, i, pixels[i], syntax) for i in range(n_frames)]
    except Exception as error:  # lazily converted values: ValueError, IndexError, ...
        raise DicomError(
            f"malformed image attributes ({error})", patient=patient, path=path,
            hint="the header is corrupt: re-export the series from the scanner or PACS",
        ) from error


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
    )


def read_frames(path: Path, patient: str | None = None) -> list[Frame]:
    """All frames of one DICOM file, by the fast path when it applies."""
    try:
        frames = _read_native(path)
    except OSError as error:
        raise DicomError(
            f"cannot read file ({error.strerror})", patient=patient, path=path,
            hint="check that the file exists and is readable",
        ) from error
    return frames if frames is not None else _read_pydicom(path, patient)


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


def read_dicom(
    path: str | Path,
    patient: str | None = None,
    *,
    skip_invalid_files: bool = False,
    gap_tolerance: float = 0.05,
    workers: int = 1,
) -> Volume:
    """Read a DICOM series folder, or one (single- or multi-frame) DICOM file, as a RAS+ Volume.

    `gap_tolerance` is the largest allowed deviation of a slice from a uniform grid, as a
    fraction of the slice spacing. Files that are not readable DICOM images raise DicomError,
    or are skipped and listed in ``meta["skipped"]`` with `skip_invalid_files`. `workers` > 1
    reads files in threads: no gain measured with files in the page cache (parsing holds the
    GIL), but it may help on slow network disks.
    """
    path = Path(path)
    files = list_series_files(path, patient) if path.is_dir() or not path.exists() else [path]
    frames: list[Frame] = []
    skipped: list[str] = []

    def read_one(file: Path) -> list[Frame] | DicomError:
        try:
            return read_frames(file, patient)
        except DicomError as error:
            return error

    if workers > 1 and len(files) > 8:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(read_one, files))
    else:
        results = [read_one(file) for file in files]
    for file, result in zip(files, results):
        if isinstance(result, DicomError):
            if not skip_invalid_files:
                raise result
            skipped.append(f"{file.name}: {result.reason}")
        else:
            frames.extend(result)
    if not frames:
        raise DicomError(
            f"no readable DICOM image among {len(files)} file(s)", patient=patient, path=path,
            hint="the series is missing or corrupt: re-download it or drop it from the cohort",
        )
    volume = assemble(frames, patient, gap_tolerance)
    volume.meta["skipped"] = skipped
    return volume


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


def _check_same(frames: list[Frame], patient: str | None) -> None:
    """Raise unless all frames share size, orientation and pixel spacing, with sane geometry."""
    first = frames[0]
    mixed = "the folder mixes series; keep the files of one series only"
    corrupt = "the header is corrupt or was blanked: re-export the series from the scanner/PACS"

    def fail(frame: Frame, message: str, hint: str) -> None:
        raise DicomError(message, patient=patient, path=frame.path, hint=hint)

    for frame in frames:
        _check_frame(frame, patient)
        if frame.pixels.shape != first.pixels.shape:
            fail(frame, f"mixed slice sizes: {frame.pixels.shape} here, "
                 f"{first.pixels.shape} in {first.path.name}", mixed)
        if (frame.position is None, frame.orientation is None) != (
            first.position is None, first.orientation is None
        ):
            fail(frame, "some slices lack ImagePositionPatient or ImageOrientationPatient", corrupt)
    if first.orientation is not None:
        cosines = np.array([frame.orientation for frame in frames])
        lengths = np.linalg.norm(cosines.reshape(-1, 2, 3), axis=2)
        dots = np.abs(np.einsum("ij,ij->i", cosines[:, :3], cosines[:, 3:]))
        bad = np.flatnonzero((np.abs(lengths - 1).max(axis=1) > 1e-2) | (dots > 1e-2))
        if bad.size:
            fail(frames[bad[0]], f"ImageOrientationPatient {cosines[bad[0]]} is not two "
                 "perpendicular unit vectors", corrupt)
        turned = np.flatnonzero(np.abs(cosines - cosines[0]).max(axis=1) > ORIENTATION_TOLERANCE)
        if turned.size:
            fail(frames[turned[0]], f"mixed slice orientations: {cosines[turned[0]]} here, "
                 f"{cosines[0]} in {first.path.name}",
                 "the folder mixes series or stacks (e.g. a localizer); keep one stack")
    for frame in frames:
        if frame.pixel_spacing != first.pixel_spacing and (
            frame.pixel_spacing is None
            or first.pixel_spacing is None
            or not np.allclose(frame.pixel_spacing, first.pixel_spacing, atol=1e-4)
        ):
            fail(frame, f"mixed pixel spacings: {frame.pixel_spacing} here, "
                 f"{first.pixel_spacing} in {first.path.name}", mixed)
    uids = {frame.series_uid for frame in frames if frame.series_uid}
    if len(uids) > 1:
        raise DicomError(
            f"folder holds {len(uids)} different series (SeriesInstanceUID)",
            patient=patient, path=first.path.parent, hint="put each series in its own folder",
        )


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
        return frames, row_cos, col_cos, normal * _fallback_spacing(first.thickness,
                                                                     first.spacing_between)
    gaps = np.diff(distances)
    if gaps.min() < DUPLICATE_DISTANCE_MM:
        k = int(np.argmin(gaps))
        raise DicomError(
            f"duplicate slice position: {frames[k + 1].path.name} and {frames[k].path.name} "
            f"lie at the same place ({distances[k]:.3f} mm along the normal)",
            patient=patient, path=frames[k + 1].path,
            hint="the folder holds repeated acquisitions or two series; keep one copy per slice",
        )
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
    """Rescaled frames (stored * slope + intercept) as one (slice, row, column) float32 array."""
    rows = slice(None, None, -1 if flip_rows else 1)
    cols = slice(None, None, -1 if flip_cols else 1)
    stack = np.empty((len(frames), *frames[0].pixels.shape), dtype=np.float32)
    for out, frame in zip(stack, frames):
        out[...] = frame.pixels[rows, cols]
        if frame.slope != 1:
            out *= frame.slope
        if frame.intercept != 0:
            out += frame.intercept
    return stack


def assemble(
    frames: list[Frame], patient: str | None = None, gap_tolerance: float = 0.05
) -> Volume:
    """Order, check and stack frames into a RAS+ Volume."""
    _check_same(frames, patient)
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
    # Flip while stacking, then only permute axes: RAS+ order with no copy of the volume.
    ornt = io_orientation(affine)
    flip_cols, flip_rows, flip_slices = ornt[:, 1] < 0
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
    voxels = stack.transpose(2, 1, 0)
    array = apply_orientation(voxels, np.column_stack([ornt[:, 0], np.ones(3)]))
    affine = affine @ inv_ornt_aff(ornt, voxels.shape)
    return Volume.from_array(array, affine, plane, **meta)
