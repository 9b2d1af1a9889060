"""The trainer's progress: a tqdm bar with an ETA on a terminal, plain periodic lines otherwise.

With the bar shown, the trainer's other log lines are written above it (``tqdm.write``), and
the periodic progress lines go to ``<run>/trainer.log`` only; without it, they are logged
every ``every_s`` seconds like any other line. Either way, once the run has measured its own
rate, one line says how long it expects to take.
"""

from __future__ import annotations

import logging
import sys
import time

from otfgen.configs import cli

log = logging.getLogger("otfgen.train")


# the rate is measured once this share of the run is done (and EXPECT_MIN_S have passed, so that
# start-up does not dominate it), or after EXPECT_AFTER_S, whichever comes first
EXPECT_SHARE, EXPECT_MIN_S, EXPECT_AFTER_S = 0.05, 5.0, 30.0


def wanted(enabled: bool) -> bool:
    """A bar only when asked for (``launcher.progress``), stderr is a terminal, and that terminal
    has a width: one that reports 0 columns (``script``, some CI and notebook front-ends) gets
    tqdm's empty bar, so it gets the plain lines instead."""
    return enabled and cli.draws_on_terminal(sys.stderr)


def eta(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class _AroundBar(logging.Handler):
    """Stands in for the console handler while the bar is shown."""

    def __init__(self, console: logging.StreamHandler):
        super().__init__(console.level)
        self.console = console
        self.setFormatter(console.formatter)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "progress", False):
            return  # the bar says it
        from tqdm import tqdm

        tqdm.write(self.format(record), file=self.console.stream)


class Progress:
    def __init__(self, total: int, bar: bool, every_s: float, unit: str = "samples"):
        self.total, self.every_s = total, every_s
        self.t0 = self.last = time.perf_counter()
        self.bar = None
        self.expected = False  # the "expects to take" line was logged
        self._swapped: tuple[logging.Handler, logging.Handler] | None = None
        if bar:
            from tqdm import tqdm

            root = logging.getLogger()
            console = next((h for h in root.handlers if h.get_name() == cli.CONSOLE), None)
            self.bar = tqdm(total=total, unit=unit[:-1] if unit.endswith("s") else unit, unit_scale=True,
                            dynamic_ncols=True, smoothing=0.05, file=sys.stderr, desc="train")
            if console is not None:
                around = _AroundBar(console)
                root.removeHandler(console)
                root.addHandler(around)
                self._swapped = (console, around)

    def update(self, done: int, postfix: str, line: str, *args) -> None:
        """``done`` of ``total``; ``postfix`` on the bar; ``line % args`` (plus the ETA) every
        ``every_s`` seconds as a log line (the log file's only, while the bar is shown)."""
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(postfix, refresh=False)
        elapsed = now - self.t0
        if not self.expected and 0 < done < self.total and (
                elapsed >= EXPECT_AFTER_S or (done >= EXPECT_SHARE * self.total and elapsed >= EXPECT_MIN_S)):
            self.expected = True
            rate = done / elapsed
            left = (self.total - done) / rate
            log.info("trainer: at %.0f samples/s this run takes about %s in all, %s from now (done about %s)",
                     rate, eta(elapsed + left), eta(left), time.strftime("%H:%M", time.localtime(time.time() + left)))
        if now - self.last >= self.every_s:
            self.last = now
            rate = done / max(now - self.t0, 1e-9)
            left = (self.total - done) / rate if rate > 0 else float("inf")
            log.info(line + "  eta %s", *args, eta(left) if left != float("inf") else "?", extra={"progress": True})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self._swapped is not None:
            console, around = self._swapped
            root = logging.getLogger()
            root.removeHandler(around)
            root.addHandler(console)
            self._swapped = None
