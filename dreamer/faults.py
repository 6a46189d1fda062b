"""Fault injection for the crash tests.

`DREAMER_CRASH_AT=POINT:N` makes the process kill itself with SIGKILL the Nth time it passes
`crash_point(POINT)`: a crash at an exact place (half-way through a checkpoint or an episode
write) that a test cannot hit reliably by sending a signal from outside.
`DREAMER_CRASH_AT=POINT:N:enospc` raises the error of a full disk there instead. Points:

  checkpoint   inside a checkpoint save, after the state file is written, before host.json
               and the rename
  replay       inside an episode write, after the temporary file, before the rename
  metrics      before a line is appended to metrics.jsonl

Unset (always, outside tests), a call costs one environment lookup.
"""

from __future__ import annotations

import errno
import os
import signal

ENV_VAR = "DREAMER_CRASH_AT"
_passes: dict[str, int] = {}


def reset() -> None:
    """Forget the passes counted so far (a test runs several commands in one process)."""
    _passes.clear()


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    point, _, rest = spec.partition(":")
    if point != name:
        return
    nth, _, kind = rest.partition(":")
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] != int(nth or 1):
        return
    if kind == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected)", f"<{name}>")
    os.kill(os.getpid(), signal.SIGKILL)
