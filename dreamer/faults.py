"""Fault injection for the crash tests.

`DREAMER_CRASH_AT=POINT:N` makes the process kill itself with SIGKILL the Nth time it passes
`crash_point(POINT)`: a crash at an exact place (half-way through a checkpoint or an episode
write) that a test cannot hit reliably by sending a signal from outside. Points:

  checkpoint   inside a checkpoint save, after the state file is written, before host.json
               and the rename
  replay       inside an episode write, after the temporary file, before the rename

Unset (always, outside tests), a call costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "DREAMER_CRASH_AT"
_passes: dict[str, int] = {}


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
