"""`data.register=true`: the patient's series registered and resampled onto the template grid.

The deterministic preprocessing's first spatial step for cohorts read as DICOM (RSNA layout):
the case's series are registered as ``radiogenomics register`` does (`register.register_series`:
the fixed series affinely to the MNI152 template, the others rigidly to it) and each series
the model reads is resampled once, through its own transform, onto the template's 1 mm
240x240x155 grid. The later steps (orientation, resampling, crop, resize, normalisation) then
see what a model trained on BraTS-layout NIfTI saw. The `Registration` stays in the sample
(``registration``), so the cache saves it and predict.py maps masks back onto each series.

NIfTI inputs are taken as already in template space (BraTS-layout volumes are co-registered
to their atlas): they are left as they are, said once in the log. A NIfTI converted from
DICOM by ``radiogenomics.data.convert`` is still in the scanner's space: register its DICOM
series instead (or ``radiogenomics register`` them into BraTS-layout NIfTI).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai import transforms as mt
from monai.data import MetaTensor
from monai.utils import ImageMetaKey

from radiogenomics.data.readers import load_volume
from radiogenomics.data.register import FIXED_SERIES, register_series
from radiogenomics.data.template_space import Registration, to_template
from radiogenomics.data.volume import Volume, is_nifti
from radiogenomics.errors import DataError, MissingExtraError

log = logging.getLogger(__name__)

REGISTRATION_KEY = "registration"
"""Sample key of the patient's `Registration` (absent when nothing was registered)."""
_said_nifti = False


def fixed_series(images: Mapping[str, Any], sequences: Sequence[str]) -> str:
    """The series registered to the template: T1wCE when the case has it, else the first
    sequence the model reads."""
    return FIXED_SERIES if FIXED_SERIES in images else sequences[0]


class RegisterToTemplated(mt.MapTransform):
    """Register a case's series to the template and put `keys` on the template grid.

    `keys` are the sequences the model reads (MetaTensors from `LoadVolumed`). The fixed
    series is T1wCE when the sample has it (`cache.case_sources` adds its path when the
    model does not read it), else the first of `keys`. Masks and anything else are left as
    they are.
    """

    def __init__(self, keys: Sequence[str], patient_key: str = "id") -> None:
        super().__init__(keys)
        self.patient_key = patient_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        global _said_nifti
        d = dict(data)
        keys = list(self.key_iterator(d))
        sources = [str(d[k].meta.get(ImageMetaKey.FILENAME_OR_OBJ, "")) for k in keys]
        if all(is_nifti(source) for source in sources):
            if not _said_nifti:
                log.info("data.register=true: NIfTI inputs are taken as already in template "
                         "space (BraTS layout) and left as they are")
                _said_nifti = True
            return d
        patient = d.get(self.patient_key)
        fixed = fixed_series(d, keys)
        series = {k: _volume(d[k]) for k in keys}
        if fixed not in series:
            series[fixed] = load_volume(d[fixed], patient=patient)
            series[fixed].meta["source"] = str(d[fixed])
        for name, source in zip(keys, sources):
            series[name].meta["source"] = source
        registration = _register(series, str(patient), fixed)
        for key, source in zip(keys, sources):
            on_grid = to_template(series[key], registration, key, order=1)
            d[key] = MetaTensor(torch.from_numpy(on_grid.astype("float32"))[None],
                                affine=torch.as_tensor(registration.template_affine,
                                                       dtype=torch.float64),
                                meta={ImageMetaKey.FILENAME_OR_OBJ: source})
        d[REGISTRATION_KEY] = registration
        return d


def _volume(image: MetaTensor) -> Volume:
    return Volume.from_array(image.as_tensor()[0].numpy(), image.affine.double().numpy())


def _register(series: dict[str, Volume], patient: str, fixed: str) -> Registration:
    """`register_series`, its failures one DataError naming the patient."""
    try:
        return register_series(series, patient, fixed_series=fixed)
    except (DataError, MissingExtraError):
        raise
    except (RuntimeError, ValueError) as error:  # SimpleITK's are long: keep the last line
        lines = [line for line in str(error).splitlines() if line.strip()]
        raise DataError(f"registration to the template failed: {type(error).__name__}: "
                        f"{lines[-1] if lines else ''}", patient=patient,
                        hint="check this patient's series, or leave it out "
                             "(data.on_error=skip)") from error
