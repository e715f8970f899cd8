"""Writing files so that no reader ever sees half of one: `atomic_write`."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write; on success it is renamed onto `path`.

    The temporary file is hidden (``.<name>.<random><suffixes>``, so writers that infer the
    format from the suffix, such as nibabel, still see ``.nii.gz``) and removed on any error,
    so `path` holds either its old content or the whole new one, never a part::

        with atomic_write(out / "splits.json") as tmp:
            tmp.write_text(json.dumps(splits))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(handle)
    os.chmod(temporary, 0o666 & ~_umask())  # as open() would create it, not mkstemp's 0600
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write the text file `path` with `atomic_write`."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def _umask() -> int:
    """The process's file-creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
