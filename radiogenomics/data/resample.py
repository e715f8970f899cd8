"""Resampling, foreground crop and resize of a case in one separable pass per image.

The preprocessing resamples the reference sequence to a voxel size (MONAI ``Spacing``), the
other sequences and the mask onto its grid (``ResampleToMatch``), crops every image to the
reference's foreground (``CropForeground``) and resizes it (``Resize``). Done with MONAI's
eager transforms, that is a float64 ``grid_sample`` over the whole field of view per image,
then a crop, then an ``interpolate``. When an image's axes are parallel to the grid's (the
rule after orienting to RAS: NIfTI cohorts, DICOM series that are not oblique), each of those
steps is a *separable* linear map: one 1-D interpolation matrix per axis with at most two
non-zero weights per row. The matrices of consecutive steps multiply into one per axis (at
most four weights per row), so an image goes from its own grid to the network's in three
sparse 1-D passes that compute only the output voxels. The weights are MONAI's and torch's
own (same coordinates, same float arithmetic, see `grid_coordinates` and `AxisMap`): the
result is the same interpolation, summed in another order (float32 round-off, ~1e-6 of the
values), with the same zero voxels, foreground box and nearest-neighbour labels.

`ResampleCropResized` is that fused step as a dictionary transform. It keeps MONAI's record
of every step on each MetaTensor (recorded with MONAI's own transforms in lazy mode), so
``Invertd`` maps results back with MONAI's inverses exactly as before. An image whose voxel
map is not exactly axis-aligned (an oblique series, even one oblique at round-off level) is
resampled by MONAI's ``grid_sample`` as before; only its crop and resize are fused.
`SeparableResized` is the resize alone (after a slab is cut).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor
from monai.data.utils import AFFINE_TOL
from monai.networks.utils import to_norm_affine
from monai.utils import LazyAttr

from radiogenomics.errors import DataError


@dataclass(frozen=True)
class AxisMap:
    """A 1-D linear map between sample grids: ``out[j] = sum_k weight[j, k] * in[index[j, k]]``."""

    index: torch.Tensor
    """(n_out, k) int64 indices into the input axis."""
    weight: torch.Tensor
    """(n_out, k) float64 weights."""
    n_in: int

    @property
    def n_out(self) -> int:
        return int(self.index.shape[0])

    @classmethod
    def identity(cls, n: int) -> AxisMap:
        return cls(torch.arange(n)[:, None], torch.ones(n, 1, dtype=torch.float64), n)

    @classmethod
    def crop(cls, n: int, start: int, end: int) -> AxisMap:
        ones = torch.ones(end - start, 1, dtype=torch.float64)
        return cls(torch.arange(start, end)[:, None], ones, n)

    @classmethod
    def sample(cls, coords: torch.Tensor, n_in: int, mode: str) -> AxisMap:
        """Sample an axis of ``n_in`` voxels at voxel coordinates ``coords`` (float64).

        ``grid_sample``'s arithmetic with ``padding_mode="border"``: a coordinate is clipped
        to ``[0, n_in - 1]``; ``"bilinear"`` weighs voxels ``i = floor(c)`` and ``i + 1`` by
        ``i + 1 - c`` and ``c - i``; ``"nearest"`` takes voxel ``nearbyint(c)``.
        """
        c = coords.to(torch.float64).clamp(0.0, n_in - 1)
        if mode == "nearest":
            return cls(torch.round(c).to(torch.int64)[:, None],
                       torch.ones(len(c), 1, dtype=torch.float64), n_in)
        if mode != "bilinear":
            raise ValueError(f"separable resampling supports bilinear and nearest, not {mode!r}")
        low = torch.floor(c)
        weight = torch.stack([(low + 1) - c, c - low], dim=1)
        low = low.to(torch.int64)
        index = torch.stack([low, torch.clamp(low + 1, max=n_in - 1)], dim=1)
        return cls(index, weight, n_in)

    @classmethod
    def resize(cls, n_in: int, n_out: int, mode: str) -> AxisMap:
        """One axis of ``torch.nn.functional.interpolate(size=...)`` with ``align_corners=False``.

        ``"linear"``: the source index ``scale * (j + 0.5) - 0.5`` (negative clipped to 0)
        and its weights, in float32 as torch's CPU kernel computes them; ``"nearest-exact"``:
        ``floor((j + 0.5) * scale)``.
        """
        if n_in == n_out:
            return cls.identity(n_in)
        scale = np.float32(n_in) / np.float32(n_out)
        j = np.arange(n_out, dtype=np.float32)
        if mode == "nearest-exact":
            index = np.minimum(np.floor((j + np.float32(0.5)) * scale).astype(np.int64), n_in - 1)
            return cls(torch.from_numpy(index)[:, None], torch.ones(n_out, 1, dtype=torch.float64),
                       n_in)
        if mode != "linear":
            raise ValueError(f"separable resize supports linear and nearest-exact, not {mode!r}")
        source = np.maximum(scale * (j + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
        low = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
        lam = np.clip(source - low.astype(np.float32), np.float32(0.0), np.float32(1.0))
        high = np.minimum(low + 1, n_in - 1)
        index = np.stack([low, high], axis=1)
        weight = np.stack([np.float32(1.0) - lam, lam], axis=1).astype(np.float64)
        return cls(torch.from_numpy(index), torch.from_numpy(weight), n_in)

    def then(self, outer: AxisMap) -> AxisMap:
        """The map ``outer(self(x))`` (``outer`` reads the output of this one)."""
        if outer.n_in != self.n_out:
            raise ValueError(f"cannot chain a map to {self.n_out} samples with one from "
                             f"{outer.n_in}")
        index = self.index[outer.index]                              # (n, k_outer, k_self)
        weight = outer.weight[:, :, None] * self.weight[outer.index]
        return AxisMap(index.reshape(outer.n_out, -1), weight.reshape(outer.n_out, -1),
                       self.n_in).compact()

    def compact(self) -> AxisMap:
        """Drop columns whose weights are all zero (they add nothing)."""
        keep = (self.weight != 0).any(dim=0)
        if bool(keep.all()) or not bool(keep.any()):
            return self
        return AxisMap(self.index[:, keep], self.weight[:, keep], self.n_in)

    @property
    def window(self) -> tuple[int, int] | None:
        """(start, length) when the map just takes consecutive samples (a crop, the identity)."""
        if self.index.shape[1] != 1 or not bool((self.weight == 1).all()):
            return None
        start = int(self.index[0, 0]) if self.n_out else 0
        if not bool((self.index[:, 0] == torch.arange(start, start + self.n_out)).all()):
            return None
        return start, self.n_out


def apply_axis_maps(volume: torch.Tensor, maps: Sequence[AxisMap | None]) -> torch.Tensor:
    """Apply one `AxisMap` per spatial axis of a (C, *spatial) tensor (``None``: unchanged).

    Crops are slices; the interpolating axes are processed most-shrinking first, so later
    passes work on less data. The computation is in the volume's dtype (float32 here), the
    weights cast to it. Maps that only crop give a view of ``volume`` (as MONAI's crop does);
    any interpolation gives a new contiguous tensor.

    A volume whose axes are permuted in memory (a DICOM slice stack seen in RAS order, a
    NIfTI array in Fortran order) is computed in its own memory order, each pass reading and
    writing contiguous runs, and only the (much smaller) result is laid out in C order: the
    same passes in the same order, so the same values bit for bit.
    """
    if len(maps) != volume.ndim - 1:
        raise ValueError(f"{len(maps)} axis maps for a volume of shape {tuple(volume.shape)}")
    for axis, m in enumerate(maps):
        if m is not None and m.n_in != volume.shape[axis + 1]:
            raise ValueError(f"axis {axis}: map from {m.n_in} samples, volume has "
                             f"{volume.shape[axis + 1]}")
    out = volume
    todo = []
    for axis, m in enumerate(maps):
        window = m.window if m is not None else None
        if window is not None:
            out = out.narrow(axis + 1, *window)
        elif m is not None:
            todo.append((m.n_out / m.n_in, axis, m))
    if not todo:
        return out
    memory = memory_order(out)  # dims of `out` from the slowest-varying to the fastest
    out = out.permute(memory)
    where = {dim: place for place, dim in enumerate(memory)}
    for _, axis, m in sorted(todo, key=lambda t: (t[0], t[1])):
        dim = where[axis + 1]
        shape = [1] * out.ndim
        shape[dim] = m.n_out
        weight = m.weight.to(out.dtype)
        result = None
        for k in range(m.index.shape[1]):
            taken = take(out, dim, m.index[:, k])
            w = weight[:, k]
            term = taken if bool((w == 1).all()) else taken.mul_(w.view(shape))
            result = term if result is None else result.add_(term)
        out = result
    return out.permute([memory.index(dim) for dim in range(out.ndim)]).contiguous()


def take(tensor: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """``tensor.index_select(dim, index)``; on the CPU by ``numpy.take``, the same copy made
    5-10x faster (torch's CPU kernel gathers the last dim element by element)."""
    if tensor.device.type != "cpu" or tensor.requires_grad:
        return tensor.index_select(dim, index)
    return torch.from_numpy(np.take(tensor.numpy(), index.numpy(), axis=dim))


def memory_order(tensor: torch.Tensor) -> list[int]:
    """The dims of `tensor` from the slowest-varying in memory to the fastest (C order:
    0, 1, 2, ...); dims of size 1 first, ties in their own order."""
    return sorted(range(tensor.ndim),
                  key=lambda d: (tensor.shape[d] > 1, -tensor.stride(d), d))


def grid_coordinates(xform: torch.Tensor, in_shape: Sequence[int],
                     out_shape: Sequence[int]) -> list[torch.Tensor] | None:
    """Input voxel coordinates, per axis, at which MONAI's resampling samples each output index.

    MONAI (``SpatialResample`` through ``AffineTransform``) normalises the voxel map ``xform``
    (output -> input indices) and calls torch's ``affine_grid`` then ``grid_sample``; here
    the same float64 operations run on one line of the grid per axis. When the normalised
    map is diagonal (its off-axis terms exactly 0: axis-aligned images, whatever their voxel
    sizes and offsets), those are the coordinates of the whole grid bit for bit, so every
    interpolation weight is MONAI's, zero exactly where MONAI's is. None otherwise: with
    off-axis terms, even round-off ones (an oblique image resampled to a voxel size, an
    affine stored in float32), MONAI's coordinates differ from voxel to voxel in their last
    bits, which decides whether a ~1e-9 weight leaks a neighbour into a background voxel;
    such an image is resampled by MONAI itself.
    """
    rank = len(out_shape)
    theta = to_norm_affine(torch.as_tensor(xform, dtype=torch.float64)[None],
                           src_size=list(in_shape), dst_size=list(out_shape), align_corners=False)
    reverse = list(range(rank - 1, -1, -1))  # grid_sample's coordinates are (W, H, D)
    theta[:, :rank] = theta[:, reverse]
    theta[:, :, :rank] = theta[:, :, reverse]
    linear = theta[0, :rank, :rank]
    if bool((linear - torch.diag(torch.diag(linear))).any()):
        return None
    coords = []
    for axis, (n_in, n_out) in enumerate(zip(in_shape, out_shape)):
        size = [1, 1] + [1] * rank
        size[2 + axis] = int(n_out)
        grid = torch.nn.functional.affine_grid(theta[:, :rank], size=size, align_corners=False)
        normalised = grid[..., rank - 1 - axis].reshape(-1)
        coords.append(((normalised + 1) * int(n_in) - 1) / 2)  # grid_sample's unnormalize
    return coords


def _unchanged(src_affine: torch.Tensor, dst_affine: torch.Tensor, xform: torch.Tensor,
               in_shape: Sequence[int], out_shape: Sequence[int]) -> bool:
    """MONAI's test for skipping a resample (`monai.transforms.spatial.functional`)."""
    if tuple(int(s) for s in in_shape) != tuple(int(s) for s in out_shape):
        return False
    src, dst = src_affine.double(), dst_affine.double()
    eye = torch.eye(len(xform), dtype=torch.float64)
    return (torch.allclose(src, dst, rtol=1e-5, atol=AFFINE_TOL)
            or torch.allclose(xform.double(), eye, rtol=1e-5, atol=AFFINE_TOL))


def _sample_maps(xform: torch.Tensor, in_shape: Sequence[int], out_shape: Sequence[int],
                 mode: str) -> list[AxisMap] | None:
    """Axis maps of MONAI's resampling with the voxel map ``xform``; None if not separable."""
    coords = grid_coordinates(xform, in_shape, out_shape)
    if coords is None:
        return None
    return [AxisMap.sample(c, int(n_in), mode) for c, n_in in zip(coords, in_shape)]


def foreground_box(image: torch.Tensor, margin: int | Sequence[int]
                   ) -> tuple[list[int], list[int]] | None:
    """Start and end of the voxels > 0 of a (C, *spatial) image, ``margin`` voxels wider.

    MONAI's ``CropForeground(margin=margin, allow_smaller=True)`` box (the box is clipped to
    the image), from maxima along axes instead of boolean reductions (several times faster).
    None when no voxel is > 0. The image must be finite.
    """
    values = image.amax(0) if image.shape[0] > 1 else image[0]
    rank = values.ndim
    margins = [int(m) for m in margin] if isinstance(margin, Sequence) else [int(margin)] * rank
    # two passes over the volume: maxima along the last (contiguous) axis, and across the others
    last = values.amax(-1)
    profiles = [last.amax(tuple(a for a in range(rank - 1) if a != axis)) if rank > 2
                else last for axis in range(rank - 1)]
    profiles.append(values.amax(tuple(range(rank - 1))))
    start, end = [], []
    for axis, profile in enumerate(profiles):
        hits = torch.nonzero(profile > 0).flatten()
        if len(hits) == 0:
            return None
        start.append(max(int(hits[0]) - margins[axis], 0))
        end.append(min(int(hits[-1]) + margins[axis] + 1, int(values.shape[axis])))
    return start, end


def _finish(lazy: MetaTensor, array: torch.Tensor) -> MetaTensor:
    """A MetaTensor holding ``array`` with the pending operations of ``lazy`` applied.

    Gives what MONAI's ``apply_pending`` gives (affine updated, pending operations moved to
    the applied ones) without its resampling: the data has been computed already.
    """
    operations = list(lazy.applied_operations) + list(lazy.pending_operations)
    out = MetaTensor(array, meta=dict(lazy.meta), applied_operations=operations)
    out.affine = lazy.peek_pending_affine()
    return out


def _shape(image: MetaTensor) -> tuple[int, ...]:
    return tuple(int(s) for s in image.peek_pending_shape())


class ResampleCropResized(mt.MapTransform, mt.InvertibleTransform):
    """MONAI's ``Spacingd`` (reference) + ``ResampleToMatchd`` (others) + ``CropForegroundd``
    + ``Resized``, fused into one separable resampling per image (see the module docstring).

    ``spacing`` None: the reference keeps its grid; ``margin`` None: no foreground crop;
    ``spatial_size`` None: no resize (a slab is cut between the crop and the resize). Each
    image keeps MONAI's record of every step, so ``Invertd`` inverts it as the eager
    transforms would be inverted. Images must be float32 MetaTensors, oriented alike.
    """

    def __init__(self, keys: Sequence[str], reference: str, modes: Sequence[str],
                 spacing: Sequence[float] | None, margin: int | None,
                 spatial_size: Sequence[int] | None) -> None:
        super().__init__(keys)
        if reference not in self.keys:
            raise ValueError(f"reference {reference!r} is not among the keys {self.keys}")
        if len(modes) != len(self.keys):
            raise ValueError("one interpolation mode per key")
        if any(m not in ("bilinear", "nearest") for m in modes):
            raise ValueError(f"modes must be bilinear or nearest, got {modes}")
        self.reference = reference
        self.modes = dict(zip(self.keys, modes))
        self.spacing = mt.Spacing(pixdim=spacing, mode="bilinear") if spacing is not None else None
        self.matcher = mt.ResampleToMatch()
        self.cropper = (mt.CropForeground(margin=margin, allow_smaller=True)
                        if margin is not None else None)
        self.resizer = (mt.Resize(spatial_size=tuple(spatial_size), anti_aliasing=False)
                        if spatial_size is not None else None)

    @staticmethod
    def _resize_mode(mode: str) -> str:
        # torch's "nearest" resize shifts a mask by half a voxel against the bilinear image
        return "nearest-exact" if mode == "nearest" else mode

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref_key = self.reference
        ref = d[ref_key]
        mode = self.modes[ref_key]

        # the reference on its (spaced) grid: the grid every other image is sampled onto
        grid = self.spacing(ref, mode=mode, lazy=True) if self.spacing is not None else ref
        ref_full = self._resampled(ref, grid, mode, lambda: self.spacing(ref, mode=mode))
        full_shape = _shape(grid)
        if self.cropper is not None:
            box = foreground_box(ref_full, self.cropper.margin)
            if box is None:
                raise DataError(f"{ref_key} has no foreground (no voxel > 0) to crop to",
                                patient=d.get("id"), hint="check the source series")
            start, end = box
        else:
            start, end = [0] * len(full_shape), list(full_shape)
        crop = [AxisMap.crop(n, s, e) for n, s, e in zip(full_shape, start, end)]

        for key in self.key_iterator(d):
            if key == ref_key:
                lazy, data_full, to_full = grid, ref_full, [None] * len(full_shape)
            else:
                lazy, data_full, to_full = self._to_reference_grid(d[key], grid, self.modes[key])
            maps = [c if m is None else m.then(c) for m, c in zip(to_full, crop)]
            if self.cropper is not None:
                lazy = self.cropper.crop_pad(lazy, np.asarray(start), np.asarray(end), lazy=True)
            if self.resizer is not None:
                resize_mode = self._resize_mode(self.modes[key])
                lazy = self.resizer(lazy, mode=resize_mode, lazy=True)
                axis_mode = resize_mode.replace("bilinear", "linear")
                maps = [m.then(AxisMap.resize(m.n_out, n, axis_mode))
                        for m, n in zip(maps, _shape(lazy))]
            d[key] = _finish(lazy, apply_axis_maps(data_full, maps))
        return d

    def _resampled(self, image: MetaTensor, lazy: MetaTensor, mode: str, eager) -> torch.Tensor:
        """The data of ``image`` resampled as the last pending operation of ``lazy`` says."""
        if lazy is image:
            return image.as_tensor()
        op = lazy.pending_operations[-1]
        xform = torch.as_tensor(op[LazyAttr.AFFINE], dtype=torch.float64)
        in_shape, out_shape = _shape(image), tuple(int(s) for s in op[LazyAttr.SHAPE])
        if _unchanged(image.peek_pending_affine(), lazy.peek_pending_affine(), xform,
                      in_shape, out_shape):
            return image.as_tensor()
        maps = _sample_maps(xform, in_shape, out_shape, mode)
        if maps is None:  # axes not parallel: MONAI's grid_sample
            return eager().as_tensor()
        return apply_axis_maps(image.as_tensor(), maps)

    def _to_reference_grid(self, image: MetaTensor, grid: MetaTensor,
                           mode: str) -> tuple[MetaTensor, torch.Tensor, list[AxisMap | None]]:
        """Record ResampleToMatch onto ``grid``; return the record, data and maps still to apply.

        Separable: the source data and the maps onto the grid (fused with what follows);
        otherwise the data already resampled by MONAI and no map.
        """
        lazy = self.matcher(image, img_dst=grid, mode=mode, lazy=True)
        op = lazy.pending_operations[-1]
        xform = torch.as_tensor(op[LazyAttr.AFFINE], dtype=torch.float64)
        in_shape, out_shape = _shape(image), _shape(grid)
        if _unchanged(image.peek_pending_affine(), grid.peek_pending_affine(), xform,
                      in_shape, out_shape):
            return lazy, image.as_tensor(), [None] * len(out_shape)
        maps = _sample_maps(xform, in_shape, out_shape, mode)
        if maps is None:
            eager = self.matcher(image, img_dst=grid, mode=mode)
            return lazy, eager.as_tensor(), [None] * len(out_shape)
        return lazy, image.as_tensor(), maps

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if self.resizer is not None:
                image = self.resizer.inverse(image)
            if self.cropper is not None:
                image = self.cropper.inverse(image)
            if key != self.reference:
                image = self.matcher.inverse(image)
            elif self.spacing is not None:
                image = self.spacing.inverse(image)
            d[key] = image
        return d


class SeparableResized(mt.MapTransform, mt.InvertibleTransform):
    """MONAI's ``Resized(anti_aliasing=False)`` computed as separable passes (same values).

    ``modes`` per key: ``"bilinear"`` (torch's trilinear, ``align_corners=False``) or
    ``"nearest-exact"``. Each image keeps MONAI's ``Resize`` record, so ``Invertd`` inverts
    it with MONAI's own inverse.
    """

    def __init__(self, keys: Sequence[str], spatial_size: Sequence[int],
                 modes: Sequence[str]) -> None:
        super().__init__(keys)
        if len(modes) != len(self.keys):
            raise ValueError("one interpolation mode per key")
        if any(m not in ("bilinear", "nearest-exact") for m in modes):
            raise ValueError(f"modes must be bilinear or nearest-exact, got {modes}")
        self.modes = dict(zip(self.keys, modes))
        self.resizer = mt.Resize(spatial_size=tuple(spatial_size), anti_aliasing=False)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image, mode = d[key], self.modes[key]
            lazy = self.resizer(image, mode=mode, lazy=True)
            axis_mode = mode.replace("bilinear", "linear")
            maps = [AxisMap.resize(int(n_in), n_out, axis_mode)
                    for n_in, n_out in zip(image.shape[1:], _shape(lazy))]
            d[key] = _finish(lazy, apply_axis_maps(image.as_tensor(), maps))
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resizer.inverse(d[key])
        return d
