"""Suite-wide settings: one persistent XLA compilation cache for the whole test run.

Many tests compile the same debug-preset programs, in this process and in the `dreamer.train`
subprocesses they start (the resume chain alone starts eight). With JAX's persistent cache every
compile after the first is a disk read. The cache is set through the environment before JAX is
imported, so subprocesses inherit it; a `JAX_COMPILATION_CACHE_DIR` already set is kept (CI or
a developer may point it at a directory that outlives the run), otherwise a temporary directory
is used and removed at the end. Cached executables are the compiler's output for the same
program, so no result changes.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="dreamer-tests-xla-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
