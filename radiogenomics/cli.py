"""The `radiogenomics` command: one program, a subcommand per task.

    radiogenomics train [key=value ...]        (= python train.py in a checkout)
    radiogenomics prepare [key=value ...]      (cache and splits, once, before a run)
    radiogenomics predict ckpt_path=RUN data.root=DIR
    radiogenomics convert IN OUT               (= python -m radiogenomics.data.convert)
    radiogenomics synthetic --out DIR ...      (= python -m radiogenomics.data.synthetic)
    radiogenomics register IN OUT              (DICOM -> template space, transforms saved)
    radiogenomics cv SWEEP_DIR                 (= python -m radiogenomics.cv)
    radiogenomics compare SWEEP_DIR            (= python -m radiogenomics.compare)
    radiogenomics audit RUN_OR_SWEEP           (leakage checks; --data OVERRIDES: a cohort)
    radiogenomics export RUN --format onnx|torchscript --out DIR   (network + manifest + bundle)

Also `python -m radiogenomics <subcommand> ...`. Data and logs go under the current folder,
or under ``RADIOGENOMICS_HOME`` when it is set; the configs ship inside the package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import NamedTuple


class Subcommand(NamedTuple):
    module: str
    function: str
    help: str
    hydra: bool = False
    """Hydra entry point: its arguments are overrides read from ``sys.argv``."""


SUBCOMMANDS: dict[str, Subcommand] = {
    "train": Subcommand("radiogenomics.train", "cli", "train a model (Hydra overrides)", True),
    "prepare": Subcommand("radiogenomics.prepare", "cli",
                          "fill the preprocessing cache and the splits of a data config "
                          "(Hydra overrides)", True),
    "predict": Subcommand("radiogenomics.predict", "cli",
                          "predict a cohort with a trained run (Hydra overrides)", True),
    "convert": Subcommand("radiogenomics.data.convert", "main",
                          "convert DICOM series to a BraTS-layout NIfTI cohort"),
    "register": Subcommand("radiogenomics.data.register", "main",
                           "register DICOM patients to the MNI152 template (BraTS grid)"),
    "synthetic": Subcommand("radiogenomics.data.synthetic.__main__", "main",
                            "write a synthetic cohort (RSNA DICOM and/or BraTS NIfTI)"),
    "cv": Subcommand("radiogenomics.cv", "main", "summarise a k-fold multirun (AUC with CIs)"),
    "compare": Subcommand("radiogenomics.compare", "main", "compare the runs of a multirun"),
    "audit": Subcommand("radiogenomics.audit.command", "main",
                        "leakage audit of a run, a multirun or a cohort's splits"),
    "export": Subcommand("radiogenomics.inference.export", "main",
                         "export a run's network (ONNX or TorchScript) for fast inference"),
}

_DDP_CHILD_ENV = ("LOCAL_RANK", "RADIOGENOMICS_DDP_COMMAND")


def usage() -> str:
    """The help text: every subcommand with one line."""
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: radiogenomics <subcommand> [arguments]", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {sub.help}" for name, sub in SUBCOMMANDS.items()]
    lines += ["", "`radiogenomics <subcommand> --help` tells each one's arguments."]
    return "\n".join(lines)


def _is_ddp_process() -> bool:
    """Whether this is an extra DDP process Lightning started for a training job: it was
    started with the job's overrides only, and runs that job
    (see `distributed.adopt_parent_job`)."""
    return os.environ.get("LOCAL_RANK", "0") != "0" and _DDP_CHILD_ENV[1] in os.environ


def _entry(sub: Subcommand) -> Callable[..., object]:
    return getattr(import_module(sub.module), sub.function)


def main(argv: Sequence[str] | None = None) -> None:
    """Run one subcommand; exits with its status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if _is_ddp_process():
        _entry(SUBCOMMANDS["train"])()
        return
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if args else 2)
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"radiogenomics: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    sub = SUBCOMMANDS[name]
    if sub.hydra:  # Hydra reads its overrides from sys.argv
        sys.argv = [sys.argv[0], *rest]
        _entry(sub)()
        return
    status = _entry(sub)(rest)
    sys.exit(status or 0)
