"""One training process per logdir: an OS lock on `LOGDIR/lock`.

The lock is `flock` on an open file, so the kernel releases it when the process ends, however
it ends (kill -9 included): a rerun after a crash finds the file but no lock, takes it over
(saying whose it was) and resumes. While held, the file holds the holder's process id and host,
for the message a second process prints; a run that ends cleanly empties it. The file itself
stays: removing it could let two processes lock two different files of the same name. Readers (`dreamer.evaluate`, `dreamer.load`) never take the lock; they ask whether the
run is live.
"""

from __future__ import annotations

import fcntl
import os
import socket
import sys
from pathlib import Path

from dreamer.errors import UserError

LOCK_FILE = "lock"


def _holder_text(path: Path) -> str:
    """'process PID on host HOST' as the lock file records it."""
    try:
        pid, _, host = path.read_text().strip().partition(" ")
    except OSError:
        return "another process"
    return f"process {pid} on host {host}" if pid and host else "another process"


class RunLock:
    """The held lock of one logdir; `release()` (or the process's end) lets it go."""

    def __init__(self, logdir: Path):
        self.path = Path(logdir) / LOCK_FILE
        existed = self.path.exists()
        try:
            # No O_TRUNC: a refused process must not touch the holder's record.
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"cannot create the run's lock '{self.path}': {err.strerror or err}; "
                            "make the logdir writable or choose another --logdir") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise UserError(f"the run in '{logdir}' is live: {_holder_text(self.path)} is training it; "
                            "wait for it to end or stop it, or choose another --logdir") from None
        self.created = not existed
        self._previous = os.pread(self._fd, 4096, 0)  # a crashed holder's record, or empty
        if self._previous:
            print(f"taking over the lock of {_holder_text(self.path)}, which has ended", file=sys.stderr)
        self._write(f"{os.getpid()} {socket.gethostname()}\n".encode())

    def _write(self, data: bytes) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self, undo: bool = False) -> None:
        """Let the lock go, the file emptied: the run ended cleanly (a crashed holder's record
        stays, for the next start to report). `undo`: a start that changed nothing else leaves
        the file as it found it (removed if it made it)."""
        if self._fd < 0:
            return
        if undo and self.created:
            self.path.unlink(missing_ok=True)
        else:
            self._write(self._previous if undo else b"")
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1


def live_holder(logdir: Path) -> str | None:
    """'process PID on host HOST' if a training process holds `logdir`'s lock, else None."""
    path = Path(logdir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder_text(path)
    finally:
        os.close(fd)  # closing the descriptor also drops the shared lock just taken
    return None


__all__ = ["LOCK_FILE", "RunLock", "live_holder"]
