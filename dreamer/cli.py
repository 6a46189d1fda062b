"""What the command-line entry points share: one-line errors and their exit statuses.

Bad input (`UserError`) and a full or read-only disk print `error: ...` and exit with status 2
(`--debug` shows the traceback instead); Ctrl-C exits with 130. Every file the library writes
is written to a temporary name and renamed into place, so a failed write leaves the run as it
was at its newest complete checkpoint, and rerunning the command resumes from there.
"""

from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable

from dreamer.errors import ConfigError, UserError


# Errors of the disk rather than of the program: no space, quota, file size limit, read-only.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line `ConfigError` instead of the usage text and exit status 2."""

    def __init__(self, **kwargs):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str):
        raise ConfigError(message)


def run_command(body: Callable[[], int], argv: list[str]) -> int:
    """Run an entry point's body, turning user errors into one `error:` line and status 2."""
    try:
        return body()
    except UserError as err:
        if "--debug" in argv:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in DISK_ERRORS or "--debug" in argv:
            raise
        where = f" writing '{err.filename}'" if err.filename else ""
        print(f"error: {err.strerror or err}{where}; free some space (or make it writable) and rerun "
              "the same command: a training run resumes from its newest complete checkpoint",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
