"""Image registration with SimpleITK: series to series (rigid), a series to the template
(rigid, then affine), and N4 bias-field correction.

Reproducible: a fixed seed for the metric's random samples and one thread per registration
(the same images give the same transforms, bit for bit).

Every transform is returned as a 4x4 RAS mm matrix mapping the fixed image's world to the
moving image's (ITK's convention: the transform that resampling the moving image onto the
fixed grid uses); `template_space.py` saves and applies them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from radiogenomics.data.template_space import LPS
from radiogenomics.data.volume import Volume
from radiogenomics.extras import require

SHRINK = (4, 2, 1)
SMOOTH_MM = (2.0, 1.0, 0.0)
"""Multi-resolution schedule: shrink factors and Gaussian smoothing (mm) per level."""
SAMPLING = 0.05
"""Share of the fixed image's voxels drawn at random for the metric, at each iteration."""
SEED = 20210
"""Seed of that draw: the same images give the same transforms (0 would be the wall clock)."""


def _sitk() -> Any:
    return require("SimpleITK")


def to_image(volume: Volume) -> Any:
    """A SimpleITK image (LPS physical space) of a RAS `Volume`, voxel for voxel."""
    sitk = _sitk()
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0),
                                                        dtype=np.float32))
    world = LPS @ volume.affine
    spacing = np.linalg.norm(world[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((world[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(world[:3, 3].tolist())
    return image


def to_array(image: Any) -> np.ndarray:
    """The voxels of a SimpleITK image made by `to_image`, in the Volume's order."""
    return _sitk().GetArrayFromImage(image).transpose(2, 1, 0)


def ras_matrix(transform: Any) -> np.ndarray:
    """4x4 RAS matrix of a SimpleITK Euler or affine transform (fixed -> moving world)."""
    matrix = np.array(transform.GetMatrix()).reshape(3, 3)
    centre, shift = np.array(transform.GetCenter()), np.array(transform.GetTranslation())
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = matrix, centre + shift - matrix @ centre
    return LPS @ lps @ LPS


def _method(shrink: tuple[int, ...], sampling: float, seed: int) -> Any:
    """Mattes mutual information, random sampling, multi-resolution, step-size search."""
    sitk = _sitk()
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-4, numberOfIterations=100, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(SMOOTH_MM[-len(shrink):]))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def rigid(fixed: Volume, moving: Volume, seed: int = SEED) -> tuple[np.ndarray, float]:
    """Rigid (6 parameters) fixed -> moving world transform, and its final metric; it starts
    from the identity, as series of one study share a world and move little between them."""
    sitk = _sitk()
    fixed_image, moving_image = to_image(fixed), to_image(moving)
    transform = sitk.Euler3DTransform()
    transform.SetCenter(fixed_image.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in fixed_image.GetSize()]))
    method = _method(SHRINK[1:], 0.1, seed)
    method.SetInitialTransform(transform, inPlace=True)
    with _one_thread():
        method.Execute(fixed_image, moving_image)
    return ras_matrix(transform), float(method.GetMetricValue())


@contextmanager
def _one_thread() -> Iterator[None]:
    """SimpleITK on one thread (threads sum the metric and the smoothing in varying order:
    results would differ in the last digits from run to run); restored afterwards."""
    sitk = _sitk()
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _moments(fixed_image: Any, moving_image: Any) -> Any:
    """An Euler transform that puts the centres of mass of the two images on each other."""
    sitk = _sitk()
    return sitk.CenteredTransformInitializer(
        fixed_image, moving_image, sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS)


def affine(fixed: Volume, moving: Volume, seed: int = SEED) -> tuple[np.ndarray, float]:
    """Affine (12 parameters) fixed -> moving world transform and its final metric: centres
    of mass aligned, then rigid, then affine, each coarse to fine."""
    sitk = _sitk()
    fixed_image, moving_image = to_image(fixed), to_image(moving)
    euler = _moments(fixed_image, moving_image)
    method = _method(SHRINK, SAMPLING, seed)
    method.SetInitialTransform(euler, inPlace=True)
    with _one_thread():
        method.Execute(fixed_image, moving_image)
    transform = sitk.AffineTransform(3)
    transform.SetCenter(euler.GetCenter())
    transform.SetMatrix(euler.GetMatrix())
    transform.SetTranslation(euler.GetTranslation())
    method = _method(SHRINK[1:], SAMPLING, seed)
    method.SetInitialTransform(transform, inPlace=True)
    with _one_thread():
        method.Execute(fixed_image, moving_image)
    return ras_matrix(transform), float(method.GetMetricValue())


def n4(volume: Volume, shrink: int = 2) -> Volume:
    """`volume` divided by its N4 bias field (Tustison et al. 2010), fitted inside an Otsu
    head mask on a `shrink`-times smaller grid."""
    sitk = _sitk()
    image = to_image(volume)
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    small = sitk.Shrink(image, [shrink] * 3)
    small_mask = sitk.Shrink(mask, [shrink] * 3)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([50, 50, 30])
    corrector.Execute(small, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    corrected = to_array(image / sitk.Exp(log_field))
    return Volume(corrected.astype(np.float32), volume.affine, volume.spacing, volume.plane,
                  dict(volume.meta))
