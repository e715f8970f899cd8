"""Run directories and their checkpoints."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """Turn a ``ckpt_path`` setting into a checkpoint file.

    ``last`` means ``<output_dir>/checkpoints/last.ckpt`` (start from scratch when absent,
    so a pre-empted job can always be resubmitted with the same command); a run directory
    means its ``checkpoints/last.ckpt``; anything else must be an existing file.
    """
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            log.info("no last checkpoint in %s: starting from scratch", path.parent)
            return None
        return str(path)
    path = Path(ckpt_path)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir() else (
            path / "last.ckpt")
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path}: no checkpoint at {path} -> "
                                "give a .ckpt file, a run directory or `last`")
    return str(path)
