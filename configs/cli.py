"""What every otfgen process does at its command line's edge: one log format, one set of exit codes."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
# the launcher names each child's log file in <run>/ (controller.log, worker-0.log, trainer.log)
LOG_FILE_ENV = "OTFGEN_LOG_FILE"
CONSOLE = "console"  # the name of the stderr handler (the trainer's progress bar writes around it)
CANNOT_RUN = 2  # a setting, a file or a key that cannot work: the process says which and stops
INTERRUPTED = 130  # Ctrl-C, as a shell reports it


def draws_on_terminal(stream) -> bool:
    """``stream`` is a terminal with a width: where a progress bar can be drawn (a terminal that
    reports 0 columns, as under ``script``, draws nothing)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


class _Console(logging.StreamHandler):
    """stderr. On a terminal each line first returns to the line's start and clears it: the
    processes of a run share the terminal, and the trainer's progress bar sits on the last line
    without a newline, so another process's line would otherwise be appended to the bar (which
    redraws itself below at its next update)."""

    def __init__(self):
        super().__init__()
        self.clear = draws_on_terminal(self.stream)

    def format(self, record: logging.LogRecord) -> str:
        return ("\r\x1b[K" if self.clear else "") + super().format(record)


def setup_logging(log_file: str | Path | None = None) -> None:
    """INFO and above to stderr and, when given (or named by $OTFGEN_LOG_FILE), appended to a file,
    both in LOG_FORMAT; an uncaught exception is logged too, so its traceback reaches the file."""
    log_file = log_file or os.environ.get(LOG_FILE_ENV) or None
    console = _Console()
    console.set_name(CONSOLE)
    handlers: list[logging.Handler] = [console]
    if log_file:
        log_file = Path(log_file)
        rank = os.environ.get("RANK")  # torchrun: every data-parallel rank gets its own file
        if rank not in (None, "0"):
            log_file = log_file.with_name(f"{log_file.stem}.rank{rank}{log_file.suffix}")
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, mode="a", encoding="utf-8"))
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=handlers, force=True)

    def log_uncaught(kind, value, tb):
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
        else:
            logging.getLogger("otfgen").critical("uncaught exception", exc_info=(kind, value, tb))

    sys.excepthook = log_uncaught


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


def split_argv(argv: list[str]) -> tuple[str | None, dict[str, str], list[str], bool]:
    """A process's arguments: ``--config PATH`` (a run's config.json, written by the process that
    composed it), other ``--key=value`` flags, Hydra overrides, and whether ``-h``/``--help`` was given."""
    path, flags, overrides, help_asked = None, {}, [], False
    it = iter(argv)
    for a in it:
        if a == "--config":
            path = next(it, None)
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            flags[k] = v
        elif a in ("-h", "--help"):
            help_asked = True
        else:
            overrides.append(a)
    return path, flags, overrides, help_asked
