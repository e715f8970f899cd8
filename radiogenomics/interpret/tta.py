"""Test-time augmentation with MONAI's `TestTimeAugmentation`: N randomly augmented passes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from monai.data import TestTimeAugmentation
from monai.transforms import Compose, Randomizable
from torch import nn

from radiogenomics.data.errors import RadiogenomicsError
from radiogenomics.interpret.uncertainty import Forward


class TTAUncertainty:
    """Probabilities of `samples` augmented copies of a patient's image.

    `transforms` are MONAI dictionary transforms on the key ``image`` (flips, small
    rotations, intensity changes); at least one must be random, or every copy would be the
    same. The random state is reset for each patient, so results are reproducible.
    """

    name = "tta"

    def __init__(self, transforms: Sequence[Callable], samples: int = 8, seed: int = 0) -> None:
        if samples < 2:
            raise RadiogenomicsError(f"TTA needs at least 2 samples, got {samples} -> "
                                     "set uncertainty.samples to 2 or more")
        self.compose = Compose(list(transforms))
        if not any(isinstance(t, Randomizable) for t in self.compose.flatten().transforms):
            names = [type(t).__name__ for t in self.compose.flatten().transforms] or ["none"]
            raise RadiogenomicsError(
                f"TTA refused: the transform list ({', '.join(names)}) has no random transform, "
                "so every sample would give the same prediction -> add a MONAI Rand* "
                "transform (e.g. RandFlipd) to uncertainty.transforms, or use "
                "uncertainty=mc_dropout")
        self.samples = samples
        self.seed = seed

    def check(self, net: nn.Module) -> None:
        """Any network can be augmented at test time."""

    def __call__(self, forward: Forward, net: nn.Module, image: torch.Tensor) -> torch.Tensor:
        """(samples, K) probabilities of the (C, X, Y, Z) `image`."""
        tta = TestTimeAugmentation(
            self.compose, batch_size=math.gcd(self.samples, 4), inferrer_fn=forward,
            device=image.device, image_key="image", orig_key="image", return_full_data=True,
            progress=False, apply_inverse_to_pred=False,
        )
        # MONAI's loader seeds the transforms from torch's generator: seed that, then restore it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return torch.as_tensor(tta({"image": image}, num_examples=self.samples))
