"""The sweeper's errors, in a module that Hydra's plugin scan leaves alone: the scan runs its
plugin modules again, which would make new classes of anything they define."""


class SweepFailedError(RuntimeError):
    """Too many trials of a sweep failed (see `hydra.sweeper.max_failure_rate`)."""
