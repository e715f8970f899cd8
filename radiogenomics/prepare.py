"""Fill the preprocessing cache and write the splits of a data config, once, before a run on
several machines: `radiogenomics prepare [data=...] [data.root=DIR] [key=value ...]`.

It composes train.py's config, so the same data overrides give the very cache entries and
splits file that the run reads; nothing is trained. Its log goes to
``logs/prepare/runs/<time>/prepare.log``.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from radiogenomics import config as rc

log = logging.getLogger("prepare")


@hydra.main(version_base="1.3", config_path=rc.CONFIG_PATH, config_name="train")
def main(cfg: DictConfig) -> None:
    log.info("instantiating datamodule <%s>", cfg.data._target_)
    datamodule = rc.instantiate(cfg.data)
    datamodule.prepare_data()
    log.info("preprocessing cache ready: %s", datamodule.cache.root)


def cli() -> None:
    """The command line: one message and exit 2 for a user error (see `config.run_cli`)."""
    if not any(arg.startswith("task_name=") for arg in sys.argv[1:]):
        sys.argv.insert(1, "task_name=prepare")
    rc.run_cli(main)


if __name__ == "__main__":
    cli()
