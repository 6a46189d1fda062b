"""Durable file writes shared by the replay, checkpoints and the metrics log.

Each writer puts its data in a temporary file, fsyncs it and renames it over the target, so a
crash at any moment leaves the old file or the new one, whole; `fsync_directory` then makes
the rename itself durable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def write_synced(path: Path, data: bytes | Callable[[BinaryIO], None]) -> None:
    """Write `data` (bytes, or a function writing to the open file) to `path` and fsync it."""
    with open(path, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort; not supported everywhere)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["fsync_directory", "write_synced"]
