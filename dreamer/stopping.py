"""Stopping a run on a signal: `StopRequests` turns SIGINT / SIGTERM into a request the
training loop answers between two updates (and a second signal into an exit at once), and
`Interrupted` is what the loop raises once it has saved."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable


class StopRequests:
    """SIGINT and SIGTERM ask the run to stop: the loop answers between two updates, saves a
    checkpoint and ends. A second signal ends the process within seconds whatever it is doing
    (an update running in XLA included): a watcher thread, woken by the signal itself, runs
    the `on_exit` callbacks (flushing the logs, bounded by `FLUSH_SECONDS`) and exits with
    128 + the signal number. Checkpoints are renamed into place when complete, so the newest
    complete one stays intact."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    FLUSH_SECONDS = 2.0

    def __init__(self):
        self.signum: int | None = None
        self.on_exit: list[Callable[[], None]] = []
        self._previous: dict = {}
        self._pipe: tuple[int, int] | None = None
        self._previous_fd = -1

    def _request(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def _watch(self, read_fd: int) -> None:
        """Python runs signal handlers on the main thread only between bytecodes; the wakeup
        fd is written by the C-level handler at once, so this thread sees every signal."""
        seen = 0
        while data := os.read(read_fd, 64):
            for signum in data:
                if signum not in self.SIGNALS:
                    continue
                seen += 1
                if self.signum is None:
                    self.signum = signum
                if seen >= 2:
                    self._exit_now(signum)
        os.close(read_fd)

    def _exit_now(self, signum: int) -> None:
        print(f"\n{signal.Signals(signum).name} again: exiting now (the newest complete checkpoint "
              "stays; rerun the same command to resume from it)", file=sys.stderr, flush=True)
        flusher = threading.Thread(target=lambda: [callback() for callback in self.on_exit], daemon=True)
        flusher.start()
        flusher.join(self.FLUSH_SECONDS)
        os._exit(128 + signum)

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is not threading.main_thread():  # only it may set handlers
            return self
        self._previous = {s: signal.signal(s, self._request) for s in self.SIGNALS}
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(read_fd,), name="stop-watcher", daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_fd)
            os.close(self._pipe[1])  # the watcher reads end of file and ends
            self._pipe = None


class Interrupted(Exception):
    """The run stopped on a signal, after saving a checkpoint (or with nothing new to save)."""

    def __init__(self, signum: int, step: int, path: Path | None):
        name = signal.Signals(signum).name
        saved = f"latest checkpoint '{path}'" if path else "no checkpoint yet"
        super().__init__(f"interrupted by {name} at env step {step}; {saved}; rerun the same "
                         "command to resume")
        self.exit_code = 128 + signum
