"""Image registration with SimpleITK: series to series (rigid), a series to the template
(rigid, then affine, then a B-spline stage whose affine part refines the affine), and N4
bias-field correction.

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
BSPLINE_MM = 48.0
"""Control-point spacing of the B-spline stage: smooth, brain-scale differences only."""
BSPLINE_VOXELS = 8
"""... and at least this many of the moving image's coarsest voxels (thick slices resolve
no finer deformation)."""
REFINE_MAX_MM = (3.0, 7.0)
"""Finest and coarsest voxel sizes (mm) up to which `refined_affine` refines: clinical
series (in-plane ~1 mm, slices up to ~6.5 mm) are; coarser ones (the 32-voxel synthetic
grid's 6 x 6 x 6-15 mm) keep the plain affine, which the B-spline stage did not improve
there."""
BSPLINE_ITERATIONS = 20
"""L-BFGS-B iterations per level of the B-spline stage."""
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


def _lps_affine(matrix: np.ndarray) -> Any:
    """A SimpleITK affine transform of a 4x4 RAS fixed -> moving world matrix."""
    sitk = _sitk()
    lps = LPS @ matrix @ LPS
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(lps[:3, :3].ravel().tolist())
    transform.SetTranslation(lps[:3, 3].tolist())
    return transform


def bspline(fixed: Volume, moving: Volume, initial: np.ndarray, seed: int = SEED) -> Any:
    """A B-spline (`BSPLINE_MM` control points) registration on top of the affine `initial`
    (RAS fixed -> moving world): the composite SimpleITK transform, fixed -> moving (LPS)."""
    sitk = _sitk()
    fixed_image, moving_image = to_image(fixed), to_image(moving)
    start = _lps_affine(initial)
    spacing_mm = max(BSPLINE_MM, BSPLINE_VOXELS * max(moving_image.GetSpacing()))
    mesh = [max(1, round(n * s / spacing_mm))
            for n, s in zip(fixed_image.GetSize(), fixed_image.GetSpacing())]
    warp = sitk.BSplineTransformInitializer(fixed_image, mesh, 3)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5,
                                numberOfIterations=BSPLINE_ITERATIONS,
                                maximumNumberOfCorrections=5,
                                maximumNumberOfFunctionEvaluations=1000,
                                costFunctionConvergenceFactor=1e7)
    method.SetShrinkFactorsPerLevel(list(SHRINK[1:]))
    method.SetSmoothingSigmasPerLevel(list(SMOOTH_MM[1:]))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetMovingInitialTransform(start)
    method.SetInitialTransform(warp, inPlace=True)
    with _one_thread():
        method.Execute(fixed_image, moving_image)
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(start)
    composite.AddTransform(warp)
    return composite


def affine_part(transform: Any, points: np.ndarray) -> np.ndarray:
    """The 4x4 RAS affine closest (least squares) to a SimpleITK transform over `points`
    (n, 4 homogeneous RAS, fixed world): where it sends them, fitted by one affine."""
    lps_points = points[:, :3] * LPS[:3, :3].diagonal()
    mapped = np.array([transform.TransformPoint(p) for p in lps_points.tolist()])
    mapped *= LPS[:3, :3].diagonal()
    fit, *_ = np.linalg.lstsq(points, mapped, rcond=None)
    matrix = np.eye(4)
    matrix[:3] = fit.T
    return matrix


def refined_affine(fixed: Volume, moving: Volume, points: np.ndarray,
                   seed: int = SEED) -> tuple[np.ndarray, float]:
    """Affine fixed -> moving world transform, refined: `affine`, then a smooth B-spline
    stage that also matches the brain's non-affine differences, of which the affine part
    over `points` (the fixed image's brain) is kept. A plain affine fit lets local
    mismatch (another brain's shape, the tumour) tilt and scale the whole head; this
    estimates the affine that best explains the deformation over the brain, the alignment
    BraTS-style template spaces mean. Returns the matrix and the affine stage's metric;
    the plain affine for a `moving` image with voxels coarser than `REFINE_MAX_MM`."""
    initial, metric = affine(fixed, moving, seed)
    if min(moving.spacing) > REFINE_MAX_MM[0] or max(moving.spacing) > REFINE_MAX_MM[1]:
        return initial, metric
    return affine_part(bspline(fixed, moving, initial, seed), points), metric


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
