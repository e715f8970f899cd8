"""Logger factories that never fail for lack of a W&B account or network."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def wandb_logged_in() -> bool:
    """Whether W&B has credentials here (env var or netrc), without contacting a server."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_logger(save_dir: str, project: str = "radiogenomics", name: str | None = None,
                 group: str | None = None, offline: bool | None = None,
                 log_model: bool | str = False, **kwargs: Any) -> WandbLogger:
    """W&B logger: online when logged in, offline otherwise (``WANDB_MODE`` wins if set)."""
    mode = os.environ.get("WANDB_MODE")
    if offline is None:
        offline = mode in ("offline", "dryrun") or (mode != "online" and not wandb_logged_in())
    if offline and mode not in ("offline", "dryrun", "disabled"):
        log.info("W&B: no login found, logging offline (sync later with `wandb sync`)")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=save_dir, project=project, name=name, group=group,
                       offline=offline, log_model=False if offline else log_model, **kwargs)
