"""A case through the training preprocessing, keeping the geometry needed to map results back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.data import MetaTensor

from radiogenomics.data.cache import case_sources, run_preprocessing
from radiogenomics.data.case import Case
from radiogenomics.data.roi import PREDICTED_MASK_KEY
from radiogenomics.data.transforms import PreprocessConfig, preprocessing


@dataclass
class PreparedCase:
    """The network input of one patient and where its voxels lie."""

    id: str
    image: torch.Tensor
    """(C, X, Y, Z) float32, exactly as the training cache served it."""
    affine: np.ndarray
    """Voxel -> RAS mm of the preprocessed grid."""
    sample: dict[str, Any]
    """The pipeline's output, whose recorded operations map a result back to the input."""


class CasePreprocessor:
    """Run the deterministic training pipeline on the images of cases, one at a time.

    The cache's own source and pipeline functions, without the cache; masks are not read
    (`config` must have ``with_seg=False``) but for the crop of a tumour ROI: the case's own,
    or the one `roi_masks` predicts when ``config.roi_model`` is set.
    """

    def __init__(self, config: PreprocessConfig, roi_masks: Any = None) -> None:
        if config.with_seg:
            raise ValueError("CasePreprocessor prepares images only: pass with_seg=False")
        if config.roi and config.roi_model and roi_masks is None:
            raise ValueError("a tumour ROI of predicted masks needs their provider (roi_masks)")
        self.config = config
        self.roi_masks = roi_masks if config.roi and config.roi_model else None
        self.pipeline = preprocessing(config)
        self.reference = config.sequences[0]

    def __call__(self, case: Case) -> PreparedCase:
        """Preprocess a case; a DataError names the patient and series that cannot be used."""
        if self.roi_masks is not None:
            case = {**case, PREDICTED_MASK_KEY: str(self.roi_masks(case))}
        sources = case_sources(case, self.config, hint="the model needs every sequence it "
                                                        "was trained on: add the series")
        result = run_preprocessing(self.pipeline, case, sources)
        image = result["image"]
        # the cache stores config.dtype: round through it so inputs match training exactly
        tensor = image.as_tensor().to(getattr(torch, self.config.dtype)).float()
        return PreparedCase(case["id"], tensor, image.affine.double().numpy(), result)

    def to_input_geometry(self, prepared: PreparedCase, volume: np.ndarray,
                          nearest: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """An (X, Y, Z) or (K, X, Y, Z) array on the preprocessed grid, on the reference series.

        Every spatial step of the preprocessing (orientation, resampling, foreground crop,
        slab, resize) is inverted; voxels outside what the network saw (the cropped
        background, the slices beyond a slab) are 0. Returns the array, with the shape of
        the first sequence as read from disk (channels first for a (K, X, Y, Z) input), and
        its voxel -> RAS mm affine, so the result opens over the scan in any viewer.
        """
        array = np.asarray(volume, dtype=np.float32)
        channels = array if array.ndim == 4 else array[None]
        reference = prepared.sample[self.reference]
        values = MetaTensor(torch.from_numpy(np.ascontiguousarray(channels)),
                            meta=dict(reference.meta),
                            applied_operations=list(reference.applied_operations))
        invert = mt.Invertd(keys="result", transform=self.pipeline, orig_keys=self.reference,
                            nearest_interp=nearest)
        result = invert({**prepared.sample, "result": values})["result"]
        inverted = result.as_tensor().numpy()
        return (inverted if array.ndim == 4 else inverted[0]), result.affine.double().numpy()
