"""Optional dependency groups ("extras"): which feature needs which, and one clear message
naming the extra to install when it is missing.

    pip install 'radiogenomics[wandb]'        Weights & Biases logging (logger=wandb)
    pip install 'radiogenomics[tensorboard]'  TensorBoard logging (logger=tensorboard)
    pip install 'radiogenomics[sweep]'        Optuna sweeps (hparams_search=...), joblib launcher
    pip install 'radiogenomics[slurm]'        the SLURM launcher (hydra/launcher=slurm)
    pip install 'radiogenomics[libjpeg]'      the GPL JPEG decoder (pylibjpeg-libjpeg), opt-in
    pip install 'radiogenomics[onnx]'         ONNX export and ONNX Runtime inference
    pip install 'radiogenomics[register]'     registration to template space (SimpleITK)
    pip install 'radiogenomics[all]'          all of the above but libjpeg
"""

from __future__ import annotations

import re
from importlib import import_module
from types import ModuleType

from radiogenomics.errors import MissingExtraError, error_chain

EXTRAS: dict[str, tuple[str, str]] = {
    "wandb": ("wandb", "W&B logging (logger=wandb)"),
    "tensorboard": ("tensorboard", "TensorBoard logging (logger=tensorboard)"),
    "tensorboardX": ("tensorboard", "TensorBoard logging (logger=tensorboard)"),
    "optuna": ("sweep", "an Optuna sweep (hparams_search=...)"),
    "hydra_plugins.hydra_joblib_launcher": ("sweep", "the joblib launcher (hydra/launcher=joblib)"),
    "submitit": ("slurm", "the SLURM launcher (hydra/launcher=slurm)"),
    "hydra_plugins.hydra_submitit_launcher": ("slurm", "the SLURM launcher (hydra/launcher=slurm)"),
    "onnx": ("onnx", "ONNX export (radiogenomics export --format onnx)"),
    "onnxscript": ("onnx", "ONNX export (radiogenomics export --format onnx)"),
    "onnxruntime": ("onnx", "an ONNX model (model.onnx of radiogenomics export)"),
    "SimpleITK": ("register", "registration to template space (radiogenomics register)"),
}
"""Import name -> (extra that installs it, the feature that needs it)."""

_LAUNCHER_CONFIGS = {"joblib": "hydra_plugins.hydra_joblib_launcher",
                     "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
                     "submitit_local": "hydra_plugins.hydra_submitit_launcher"}
_MISSING_LAUNCHER = re.compile(r"Could not (?:find|load) 'hydra/launcher/(\w+)'")


def require(module: str) -> ModuleType:
    """Import an optional `module`, or raise `MissingExtraError` naming its extra."""
    try:
        return import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or not module.startswith(err.name):
            raise
        extra, feature = EXTRAS[module]
        raise MissingExtraError(feature, module, extra) from None


def missing_extra(err: BaseException) -> MissingExtraError | None:
    """The missing extra that `err` (or an error it wraps) stands for, if any: an import of an
    optional package that failed, or a launcher config that a missing Hydra plugin provides."""
    for seen in error_chain(err):
        if isinstance(seen, MissingExtraError):
            return seen
        if isinstance(seen, ModuleNotFoundError) and seen.name is not None:
            module = next((m for m in EXTRAS if seen.name == m or seen.name.startswith(
                f"{m}.") or m.startswith(f"{seen.name}.")), None)
            if module is not None:
                extra, feature = EXTRAS[module]
                return MissingExtraError(feature, module, extra)
        launcher = _MISSING_LAUNCHER.search(str(seen))
        if launcher and launcher.group(1) in _LAUNCHER_CONFIGS:
            module = _LAUNCHER_CONFIGS[launcher.group(1)]
            if not _importable(module):
                extra, feature = EXTRAS[module]
                return MissingExtraError(feature, module, extra)
    return None


def _importable(module: str) -> bool:
    try:
        import_module(module)
    except ImportError:
        return False
    return True
