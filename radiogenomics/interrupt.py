"""Ctrl-C (SIGINT) that loses nothing: during training it stops at the next batch boundary.

The first Ctrl-C while a model trains is deferred: the step in progress finishes, the
training callback saves ``last.ckpt`` and the run exits with status 130. Anywhere else (cache
preparation, testing, prediction), or at a second Ctrl-C, it stops at once, as Python's own
handler does; files are written atomically, so nothing half-written is left behind.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 128 + signal.SIGINT
"""Exit status of a run stopped by Ctrl-C (what a shell reports for SIGINT)."""


class UserInterrupt(SystemExit):
    """Raised at a batch boundary after a deferred Ctrl-C; exits with status 130."""

    def __init__(self) -> None:
        super().__init__(EXIT_INTERRUPTED)


class _State:
    main_pid: int | None = None
    deferring = False
    requested = False


def _handle_sigint(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _State.main_pid:  # a worker: the main process stops it with the run
        return
    first = not _State.requested
    _State.requested = True
    if _State.deferring and first:
        log.warning("Ctrl-C: stopping after the current batch and saving last.ckpt "
                    "(Ctrl-C again to stop at once)")
        return
    raise KeyboardInterrupt


def install() -> None:
    """Handle Ctrl-C in this process (and the processes it forks) as described above."""
    _State.main_pid = os.getpid()
    _State.requested = False
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # started with nohup or in background
        return
    signal.signal(signal.SIGINT, _handle_sigint)


def defer(active: bool) -> None:
    """Defer the first Ctrl-C (while training) or stop at once (otherwise)."""
    _State.deferring = active


def requested() -> bool:
    """Whether Ctrl-C was pressed in this run."""
    return _State.requested
