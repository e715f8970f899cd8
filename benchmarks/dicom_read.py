"""Speed of reading one DICOM series: our reader against naive pydicom, MONAI and SimpleITK.

    python benchmarks/dicom_read.py [--series DIR] [--slices 150] [--size 256] [--json PATH]

Without --series, writes a 256x256 int16 axial series to a temporary folder. Prints slices/s
per reader (median of --repeats runs after one warm-up run, so files are in the page cache)
and whether each reader's RAS geometry (affine and voxels) matches ours.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from radiogenomics.data.dicom import read_dicom
from radiogenomics.data.dicom_write import write_series

Result = tuple[np.ndarray, np.ndarray] | None  # (RAS array, RAS affine), or None: no geometry


def make_series(folder: Path, slices: int, size: int) -> Path:
    """A head-like int16 phantom (ellipsoid plus noise), 0.9 x 0.9 x 1.5 mm, axial."""
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in (size, size, slices)),
                                indexing="ij"))
    head = (grid**2).sum(0) < 0.8
    noise = np.random.default_rng(0).normal(0, 40, head.shape)
    volume = np.clip(head * 900 + noise + 100, 0, 4000).astype(np.int16)
    affine = np.diag([0.9, 0.9, 1.5, 1.0])
    affine[:3, 3] = [-115.0, -115.0, -110.0]
    write_series(volume, affine, folder, first_number=57, series_description="bench")
    return folder


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ornt = io_orientation(affine)
    return apply_orientation(array, ornt), affine @ inv_ornt_aff(ornt, array.shape)


def ours(folder: Path, workers: int = 1) -> Result:
    volume = read_dicom(folder, workers=workers)
    return volume.array, volume.affine


def naive_pydicom(folder: Path) -> Result:
    """dcmread + pixel_array per file, then sort along the slice normal and stack (no affine)."""
    slices = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        normal = np.cross(*np.reshape(np.array(ds.ImageOrientationPatient, float), (2, 3)))
        position = float(np.array(ds.ImagePositionPatient, float) @ normal)
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        slices.append((position, ds.pixel_array.astype(np.float32) * slope + intercept))
    slices.sort(key=lambda s: s[0])
    np.stack([s[1] for s in slices], axis=-1)
    return None


def monai_loader() -> Callable[[Path], Result]:
    from monai.transforms import LoadImage

    loader = LoadImage(reader="PydicomReader", image_only=True)

    def load(folder: Path) -> Result:
        image = loader(str(folder))
        return to_ras(np.asarray(image), image.affine.numpy())

    return load


def sitk_loader() -> Callable[[Path], Result]:
    import SimpleITK as sitk  # noqa: N813 (its usual name)

    def load(folder: Path) -> Result:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        image = reader.Execute()
        direction = np.reshape(image.GetDirection(), (3, 3))
        affine = np.eye(4)
        affine[:3, :3] = direction * np.array(image.GetSpacing())
        affine[:3, 3] = image.GetOrigin()
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        return to_ras(sitk.GetArrayFromImage(image).transpose(2, 1, 0), affine)

    return load


def readers() -> dict[str, Callable[[Path], Result] | str]:
    """Reader name -> function, or -> why it cannot run here."""
    found: dict[str, Callable[[Path], Result] | str] = {
        "ours": ours,
        "ours (4 threads)": lambda folder: ours(folder, workers=4),
        "naive pydicom": naive_pydicom,
    }
    for name, factory in (("MONAI PydicomReader", monai_loader), ("SimpleITK", sitk_loader)):
        try:
            found[name] = factory()
        except ImportError as error:
            found[name] = f"not installed ({error.name})"
    return found


def matches(result: Result, reference: tuple[np.ndarray, np.ndarray]) -> str:
    if result is None:
        return "n/a (no affine)"
    array, affine = result
    same = (
        array.shape == reference[0].shape
        and np.allclose(affine, reference[1], atol=1e-3)
        and np.allclose(array, reference[0], atol=1e-3)
    )
    return "yes" if same else "NO"


def run(folder: Path, repeats: int) -> list[dict[str, object]]:
    n_slices = len([p for p in folder.iterdir() if p.is_file()])
    reference = ours(folder)
    rows = []
    for name, reader in readers().items():
        if isinstance(reader, str):
            rows.append({"reader": name, "slices_per_s": None, "geometry_matches": reader})
            continue
        result = reader(folder)  # warm-up: page cache, imports, plugin discovery
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            reader(folder)
            times.append(time.perf_counter() - start)
        rows.append({
            "reader": name,
            "slices_per_s": round(n_slices / statistics.median(times), 1),
            "geometry_matches": matches(result, reference),
        })
    return rows


def table(rows: list[dict[str, object]], monai: float | None) -> str:
    lines = [f"{'reader':<22}{'slices/s':>10}{'x MONAI':>9}  geometry matches ours",
             "-" * 66]
    for row in rows:
        speed = row["slices_per_s"]
        ratio = f"{speed / monai:.1f}" if speed and monai else "-"
        shown = f"{speed:.0f}" if speed else "-"
        lines.append(f"{row['reader']:<22}{shown:>10}{ratio:>9}  {row['geometry_matches']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=Path, help="a DICOM series folder of your own")
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as temp:
        folder = args.series or make_series(Path(temp) / "series", args.slices, args.size)
        rows = run(folder, args.repeats)
        n_slices = len([p for p in folder.iterdir() if p.is_file()])
    monai = next((r["slices_per_s"] for r in rows if r["reader"].startswith("MONAI")), None)
    print(f"series: {args.series or 'synthetic'}, {n_slices} slices; {os.cpu_count()} CPU cores")
    print(table(rows, monai))
    if args.json:
        args.json.write_text(json.dumps({"n_slices": n_slices, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
