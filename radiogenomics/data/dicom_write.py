"""Write a RAS+ volume as a DICOM MR series (one file per slice) or an Enhanced MR file.

Used by the synthetic cohort generator and by the reader's tests. The output is
byte-for-byte deterministic: UIDs are hashed from the inputs and no date or time is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pydicom.valuerep import DSfloat

IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1471.1"
"""Fixed implementation class UID, so the file meta does not change with pydicom versions."""

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Slice axis (LPS world axis) and the in-plane directions scanners use: DICOM "row" cosine
# is the direction of increasing column index, "column" cosine that of increasing row index.
PLANES: dict[str, tuple[int, np.ndarray, np.ndarray]] = {
    "axial": (2, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])),
    "coronal": (1, np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, -1.0])),
    "sagittal": (0, np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])),
}


@dataclass
class _Slices:
    """A volume cut into DICOM slices: stored pixels (slice, row, column) and geometry (LPS)."""

    pixels: np.ndarray
    positions: np.ndarray
    row_cos: np.ndarray
    col_cos: np.ndarray
    pixel_spacing: tuple[float, float]
    spacing: float


def _uid(*parts: object) -> str:
    """A UUID-derived UID (``2.25.<int>``) hashed from `parts`: same parts, same UID."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _ds(value: float) -> DSfloat:
    """A decimal string that fits DICOM's 16 characters."""
    return DSfloat(float(value), auto_format=True)


def _stored(volume: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """Stored integers for `volume`: int16 when they fit, else uint16."""
    if slope == 0:
        raise ValueError("rescale_slope must be non-zero")
    values = np.rint((np.asarray(volume, dtype=np.float64) - intercept) / slope)
    if not np.isfinite(values).all():
        raise ValueError("volume has NaN or infinite voxels; DICOM stores integers only")
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    for dtype in (np.int16, np.uint16):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return values.astype(dtype)
    raise ValueError(
        f"stored values span [{low:.0f}, {high:.0f}], which fits neither int16 nor uint16; "
        "choose rescale_slope/rescale_intercept so that they do"
    )


def _cut(
    volume: np.ndarray, affine: np.ndarray, plane: str, slope: float, intercept: float
) -> _Slices:
    """Cut `volume` into slices along the array axis closest to `plane`'s normal.

    The in-plane axes are chosen and flipped so the row/column cosines point like a scanner's.
    """
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D, got shape {volume.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got shape {affine.shape}")
    if plane not in PLANES:
        raise ValueError(f"plane must be one of {sorted(PLANES)}, got {plane!r}")
    normal_axis, row_dir, col_dir = PLANES[plane]
    lps = RAS_TO_LPS @ affine
    unit = lps[:3, :3] / np.linalg.norm(lps[:3, :3], axis=0)
    slice_axis = int(np.argmax(np.abs(unit[normal_axis])))
    in_plane = [a for a in range(3) if a != slice_axis]
    col_axis = max(in_plane, key=lambda a: abs(unit[:, a] @ row_dir))
    row_axis = next(a for a in in_plane if a != col_axis)
    # Flipping an axis moves the origin to its far end and reverses its direction.
    flips = {row_axis: unit[:, row_axis] @ col_dir < 0, col_axis: unit[:, col_axis] @ row_dir < 0}
    start = np.zeros(3)
    directions = lps[:3, :3].copy()
    for axis, flip in flips.items():
        if flip:
            start[axis] = volume.shape[axis] - 1
            directions[:, axis] *= -1
    if abs(unit[:, row_axis] @ unit[:, col_axis]) > 1e-4:
        raise ValueError("the in-plane axes of the affine are not orthogonal; DICOM needs them so")
    image = np.transpose(_stored(volume, slope, intercept), (slice_axis, row_axis, col_axis))
    image = image[:, :: -1 if flips[row_axis] else 1, :: -1 if flips[col_axis] else 1]
    first = lps[:3, :3] @ start + lps[:3, 3]
    steps = np.arange(volume.shape[slice_axis])[:, None] * directions[:, slice_axis]
    norms = np.linalg.norm(directions, axis=0)
    return _Slices(
        pixels=np.ascontiguousarray(image),
        positions=first + steps,
        row_cos=directions[:, col_axis] / norms[col_axis],
        col_cos=directions[:, row_axis] / norms[row_axis],
        pixel_spacing=(float(norms[row_axis]), float(norms[col_axis])),
        spacing=float(norms[slice_axis]),
    )


def write_series(
    volume: np.ndarray,
    affine: np.ndarray,
    out_dir: str | Path,
    *,
    plane: str = "axial",
    first_number: int = 1,
    series_description: str = "",
    series_number: int = 1,
    patient_id: str = "00000",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    seed: int = 0,
    file_pattern: str = "Image-{n}.dcm",
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> list[Path]:
    """Write `volume` (RAS+ voxel order, `affine` voxel -> RAS+ mm) as one file per slice.

    `plane` picks the array axis written as the slice axis (axial: superior-inferior,
    coronal: anterior-posterior, sagittal: left-right); nothing is resampled. Files are
    named ``file_pattern.format(n=...)`` from `first_number` on. A compressed
    `transfer_syntax` (e.g. RLE Lossless) needs a pydicom encoder. Returns the written paths.
    """
    cut = _cut(volume, affine, plane, rescale_slope, rescale_intercept)
    study_uid = study_uid or _uid(seed, patient_id, "study")
    frame_uid = frame_of_reference_uid or _uid(seed, patient_id, study_uid, "frame")
    series_uid = _uid(seed, patient_id, study_uid, series_number, series_description, "series")
    normal = np.cross(cut.row_cos, cut.col_cos)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, (pixels, position) in enumerate(zip(cut.pixels, cut.positions)):
        ds = _header(MRImageStorage, _uid(series_uid, index), patient_id, series_description)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID, ds.SeriesNumber = frame_uid, series_number
        ds.InstanceNumber = first_number + index
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*cut.row_cos, *cut.col_cos)]
        ds.SliceLocation = _ds(position @ normal)
        ds.PixelSpacing = [_ds(v) for v in cut.pixel_spacing]
        ds.SliceThickness = _ds(cut.spacing)
        ds.SpacingBetweenSlices = _ds(cut.spacing)
        ds.RescaleSlope = _ds(rescale_slope)
        ds.RescaleIntercept = _ds(rescale_intercept)
        _set_pixels(ds, pixels, transfer_syntax)
        path = out_dir / file_pattern.format(n=first_number + index)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(
    volume: np.ndarray,
    affine: np.ndarray,
    path: str | Path,
    *,
    plane: str = "axial",
    series_description: str = "",
    patient_id: str = "00000",
    rescale_slope: float = 1.0,
    rescale_intercept: float = 0.0,
    seed: int = 0,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> Path:
    """Write `volume` as one Enhanced MR multi-frame file, geometry in functional groups.

    A 4D `volume` (time last) is written volume after volume, each frame's
    ``TemporalPositionIndex`` (FrameContentSequence) naming its volume.
    """
    volumes = [volume] if volume.ndim == 3 else [volume[..., t] for t in range(volume.shape[3])]
    cuts = [_cut(v, affine, plane, rescale_slope, rescale_intercept) for v in volumes]
    cut = cuts[0]
    series_uid = _uid(seed, patient_id, series_description, "enhanced series")
    ds = _header(EnhancedMRImageStorage, _uid(series_uid, 0), patient_id, series_description)
    ds.StudyInstanceUID = _uid(seed, patient_id, "study")
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = _uid(seed, patient_id, ds.StudyInstanceUID, "frame")
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.NumberOfFrames = len(cut.pixels) * len(cuts)
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PixelMeasuresSequence=_item(
            PixelSpacing=[_ds(v) for v in cut.pixel_spacing],
            SliceThickness=_ds(cut.spacing),
            SpacingBetweenSlices=_ds(cut.spacing),
        ),
        PlaneOrientationSequence=_item(
            ImageOrientationPatient=[_ds(v) for v in (*cut.row_cos, *cut.col_cos)]
        ),
        PixelValueTransformationSequence=_item(
            RescaleSlope=_ds(rescale_slope), RescaleIntercept=_ds(rescale_intercept),
            RescaleType="US",
        ),
    )])
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        _item(PlanePositionSequence=_item(ImagePositionPatient=[_ds(v) for v in position]),
              **({"FrameContentSequence": _item(TemporalPositionIndex=t + 1)}
                 if len(cuts) > 1 else {}))
        for t in range(len(cuts)) for position in cut.positions
    ])
    _set_pixels(ds, np.concatenate([c.pixels for c in cuts]), transfer_syntax)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _item(**elements: object) -> Dataset:
    """A sequence item; a Dataset value becomes a one-item sequence."""
    item = Dataset()
    for keyword, value in elements.items():
        setattr(item, keyword, Sequence([value]) if isinstance(value, Dataset) else value)
    return item


def _header(sop_class: str, sop_uid: str, patient_id: str, series_description: str) -> Dataset:
    """File meta and the identifying attributes of one instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RADIOGENOMICS"
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.Modality = "MR"
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.SeriesDescription = series_description
    ds.MRAcquisitionType = "2D"
    return ds


def _set_pixels(ds: Dataset, pixels: np.ndarray, transfer_syntax: str) -> None:
    """Store 2D (one frame) or 3D (frames) 16-bit pixels, compressed if asked."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<")).tobytes()
    ds["PixelData"].VR = "OW"
    if transfer_syntax != ExplicitVRLittleEndian:
        ds.compress(transfer_syntax, pixels, generate_instance_uid=False)
