"""Load pretrained weights from a local file (nothing is ever downloaded)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from radiogenomics.errors import RadiogenomicsError

log = logging.getLogger(__name__)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict safely (``weights_only=True``: a file cannot run code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RadiogenomicsError(f"pretrained weights file not found: {path} -> "
                                 "set model.net.pretrained_path to a local .pt/.pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RadiogenomicsError(f"cannot read weights from {path}: {err}") from err
    for key in ("state_dict", "model", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise RadiogenomicsError(f"{path} holds no state dict (found {type(state).__name__})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_pretrained(module: nn.Module, path: str | Path, prefix: str = "") -> None:
    """Copy matching tensors of a weights file into ``module`` and log what did not match."""
    state = load_state_dict_file(path)
    if prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise RadiogenomicsError(
            f"no tensor of {path} matches {type(module).__name__} (keys such as "
            f"{sorted(state)[:3]}) -> is it weights for this network?")
    module.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    log.info("loaded %d tensors from %s; %d left at their initial values%s", len(usable), path,
             len(skipped), f" ({', '.join(skipped[:5])}...)" if skipped else "")
