"""Read a PNG slice series (the public PNG conversions of RSNA-MICCAI) into one volume."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from radiogenomics.data.volume import Volume
from radiogenomics.errors import DataError

_NUMBER = re.compile(r"(\d+)$")


def slice_number(path: Path) -> int:
    """The N of ``Image-N.png``: the number that ends the file name's stem."""
    match = _NUMBER.search(path.stem)
    if match is None:
        raise DataError(
            "slice file name has no number to sort by",
            path=path,
            hint="name slices Image-N.png, or remove stray PNG files from the series folder",
        )
    return int(match.group(1))


def _read_slice(path: Path, patient: str | None) -> np.ndarray:
    """One PNG slice as a 2D array (colour images are converted to grey)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "I", "I;16", "F"):
                image = image.convert("L")
            return np.asarray(image)
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(
            f"cannot read PNG slice: {error}", patient=patient, path=path,
            hint="the file is corrupt or not a PNG; re-export or remove it",
        ) from error


def read_png_series(folder: str | Path, patient: str | None = None) -> np.ndarray:
    """Stack the PNG slices of `folder` into ``(slices, rows, columns)``, in N order.

    Slices are sorted numerically (Image-10 after Image-9). A missing folder, a folder with
    no PNG, slices of different sizes or an all-blank series raise DataError.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("PNG series folder does not exist", patient=patient, path=folder,
                        hint="check data.root and the cohort layout <id>/<SEQ>/Image-N.png")
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() == ".png"), key=slice_number)
    if not files:
        raise DataError("PNG series folder holds no .png slice", patient=patient, path=folder,
                        hint="this series is missing; skip the patient or the sequence")
    numbers = [slice_number(p) for p in files]
    for before, after, path in zip(numbers, numbers[1:], files[1:]):
        if before == after:
            raise DataError(f"two slices are numbered {after}", patient=patient, path=path,
                            hint="remove the duplicate slice file")
    slices = [_read_slice(p, patient) for p in files]
    for path, image in zip(files, slices):
        if image.shape != slices[0].shape:
            raise DataError(
                f"slice is {image.shape[1]}x{image.shape[0]} pixels but the series' first "
                f"slice is {slices[0].shape[1]}x{slices[0].shape[0]}",
                patient=patient, path=path, hint="re-export the series at one size",
            )
    volume = np.stack(slices)
    if not volume.any():
        raise DataError("PNG series is blank (every pixel is 0)", patient=patient, path=folder,
                        hint="this series carries no image; skip the patient or the sequence")
    return volume


def read_png_volume(folder: str | Path, patient: str | None = None) -> Volume:
    """A PNG slice series as a RAS+ Volume, assuming axial slices in radiological display.

    PNG files keep no geometry: columns are taken to run from the patient's right to left,
    rows from anterior to posterior, slices along the last axis, voxels of 1 mm, and the
    plane is ``unknown``.
    """
    stack = read_png_series(folder, patient).astype(np.float32)
    array = stack.transpose(2, 1, 0)[::-1, ::-1, :]
    return Volume.from_array(np.ascontiguousarray(array), np.eye(4), "unknown",
                             n_slices=int(stack.shape[0]), geometry="assumed")
