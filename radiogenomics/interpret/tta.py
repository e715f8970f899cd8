"""Test-time augmentation with MONAI's `TestTimeAugmentation`: N randomly augmented passes."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from monai.data import MetaTensor, TestTimeAugmentation
from monai.transforms import Compose, InvertibleTransform, Randomizable
from torch import nn

from radiogenomics.errors import RadiogenomicsError
from radiogenomics.interpret.uncertainty import Forward

_INTENSITY_MODULE = "monai.transforms.intensity"
"""MONAI's intensity transforms change values only: a map needs no inverse of them."""


@contextmanager
def _quiet_inverse() -> Iterator[None]:
    """Silence MONAI's warnings about intensity transforms having no inverse (they need none)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TTA has encountered issues")
        warnings.filterwarnings("ignore", message="transform info of .* is not available")
        yield


class TTAUncertainty:
    """Probabilities of `samples` augmented copies of a patient's image.

    `transforms` are MONAI dictionary transforms on the key ``image`` (flips, small
    rotations, intensity changes); at least one must be random, or every copy would be the
    same. The random state is reset for each patient, so results are reproducible. For a
    segmenter (`voxel_samples`) each probability map is mapped back through the inverse of
    its copy's spatial transforms (a flip is undone exactly, a rotation by interpolation).
    """

    name = "tta"

    def __init__(self, transforms: Sequence[Callable], samples: int = 8, seed: int = 0) -> None:
        if samples < 2:
            raise RadiogenomicsError(f"TTA needs at least 2 samples, got {samples} -> "
                                     "set uncertainty.samples to 2 or more")
        self.compose = Compose(list(transforms))
        steps = self.compose.flatten().transforms
        if not any(isinstance(t, Randomizable) for t in steps):
            names = [type(t).__name__ for t in steps] or ["none"]
            raise RadiogenomicsError(
                f"TTA refused: the transform list ({', '.join(names)}) has no random transform, "
                "so every sample would give the same prediction -> add a MONAI Rand* "
                "transform (e.g. RandFlipd) to uncertainty.transforms, or use "
                "uncertainty=mc_dropout")
        self.samples = samples
        self.seed = seed

    def check(self, net: nn.Module, voxelwise: bool = False) -> None:
        """Any network can be augmented at test time; maps need spatial steps that invert."""
        if not voxelwise:
            return
        lossy = [type(t).__name__ for t in self.compose.flatten().transforms
                 if isinstance(t, Randomizable) and not isinstance(t, InvertibleTransform)
                 and not type(t).__module__.startswith(_INTENSITY_MODULE)]
        if lossy:
            raise RadiogenomicsError(
                f"TTA refused for voxel-wise maps: {', '.join(lossy)} cannot be inverted, so "
                "the maps of its copies could not be laid back on the image -> use invertible "
                "spatial transforms (RandFlipd, RandRotated, RandAffined, RandZoomd) and "
                "intensity transforms only")

    def _run(self, forward: Forward, image: torch.Tensor, inverse: bool) -> torch.Tensor:
        tta = TestTimeAugmentation(
            self.compose, batch_size=math.gcd(self.samples, 4), inferrer_fn=forward,
            device=image.device, image_key="image", orig_key="image", nearest_interp=False,
            return_full_data=True, progress=False, apply_inverse_to_pred=inverse,
        )
        # MONAI's loader seeds the transforms from torch's generator: seed that, then restore it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return torch.as_tensor(tta({"image": image}, num_examples=self.samples))

    def __call__(self, forward: Forward, net: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """(samples, K) probabilities of the (C, X, Y, Z) `image`."""
        return self._run(forward, image, inverse=False)

    def voxel_samples(self, forward: Forward, net: nn.Module, image: torch.Tensor
                      ) -> torch.Tensor:
        """(samples, K, X, Y, Z) probability maps of the (C, X, Y, Z) `image`, on its grid."""
        self.check(net, voxelwise=True)

        def with_record(batch: MetaTensor) -> MetaTensor:
            # Invertd reads which flips and rotations a copy had from its prediction's record
            maps = MetaTensor(forward(batch.as_subclass(torch.Tensor)))
            maps.copy_meta_from(batch)
            return maps

        with _quiet_inverse():
            return self._run(with_record, image.as_subclass(torch.Tensor), inverse=True)
