"""Progress on stderr that suits where stderr goes.

On a terminal: one bar, rewritten with ``\\r`` at most ten times a second. Anywhere else (a
CI log, a file, a pipe): a plain line every ``line_interval_s`` seconds and one at the end,
so a log never holds a 31 KB line of carriage returns. ``quiet``: nothing at all.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from lambda_conn.local._records import InvocationRecord

__all__ = ["ProgressBar"]


class ProgressBar:
    """Callable as soak()'s ``progress`` hook: ``bar(done, record)``.

    ``tty`` defaults to ``stream.isatty()``.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        width: int = 30,
        interval_s: float = 0.1,
        line_interval_s: float = 10.0,
        quiet: bool = False,
        tty: bool | None = None,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.quiet = quiet
        self.tty = _isatty(self.stream) if tty is None else tty
        self.interval_s = interval_s if self.tty else line_interval_s
        self.failed = 0
        self.done = 0
        self._start = time.perf_counter()
        self._last_draw = self._start if not self.tty else 0.0
        self._drawn = -1

    def __call__(self, done: int, record: InvocationRecord) -> None:
        self.done = done
        self.failed += not record.ok
        if self.quiet:
            return
        now = time.perf_counter()
        if (self.tty and done >= self.total) or now - self._last_draw >= self.interval_s:
            self._last_draw = now
            self._draw(now)

    def _status(self, now: float) -> str:
        frac = self.done / self.total if self.total else 1.0
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        return f"{frac:4.0%} {self.done}/{self.total}  {self.failed} failed  {rate:.0f}/s"

    def _draw(self, now: float) -> None:
        self._drawn = self.done
        if self.tty:
            frac = self.done / self.total if self.total else 1.0
            filled = int(self.width * frac)
            bar = f"[{'#' * filled}{'.' * (self.width - filled)}]"
            self.stream.write(f"\r{bar} {self._status(now)} ")
        else:
            self.stream.write(f"progress: {self._status(now).strip()}\n")
        self.stream.flush()

    def finish(self) -> None:
        """Draw the final state (unless already drawn); on a terminal, end the line."""
        if self.quiet:
            return
        if self._drawn != self.done or self.done == 0:
            self._draw(time.perf_counter())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or file-like stream without a terminal
        return False
