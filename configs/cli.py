"""What every otfgen process does at its command line's edge: one log format, one set of exit codes."""

from __future__ import annotations

import logging
import sys
from typing import Callable

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
CANNOT_RUN = 2  # a setting, a file or a key that cannot work: the process says which and stops
INTERRUPTED = 130  # Ctrl-C, as a shell reports it


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def exit_with(fn: Callable[[], int | None], errors: tuple[type[BaseException], ...], log: logging.Logger) -> None:
    """Run a process's body and exit with its code; an expected error is one logged line and
    exit code 2, Ctrl-C exit code 130, never a traceback."""
    try:
        code = fn()
    except errors as e:
        log.error("%s", e)
        code = CANNOT_RUN
    except KeyboardInterrupt:
        code = INTERRUPTED
    sys.exit(code or 0)
