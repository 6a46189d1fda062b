"""What the command-line entry points share: one-line errors and their exit statuses.

Bad input (`UserError`) prints `error: ...` and exits with status 2 (`--debug` shows the
traceback instead); Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from dreamer.errors import ConfigError, UserError


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
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
