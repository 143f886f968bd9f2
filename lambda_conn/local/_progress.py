"""A dependency-free progress bar: one line on stderr, rewritten with ``\\r``.

Redrawn at most ten times a second so that it costs nothing next to 10,000 invocations.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from lambda_conn.local._records import InvocationRecord

__all__ = ["ProgressBar"]


class ProgressBar:
    """Callable as soak()'s ``progress`` hook: ``bar(done, record)``."""

    def __init__(
        self, total: int, *, stream: TextIO | None = None, width: int = 30, interval_s: float = 0.1
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.interval_s = interval_s
        self.failed = 0
        self.done = 0
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._drawn = -1

    def __call__(self, done: int, record: InvocationRecord) -> None:
        self.done = done
        self.failed += not record.ok
        now = time.perf_counter()
        if done >= self.total or now - self._last_draw >= self.interval_s:
            self._last_draw = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        frac = self.done / self.total if self.total else 1.0
        filled = int(self.width * frac)
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        self._drawn = self.done
        self.stream.write(
            f"\r[{'#' * filled}{'.' * (self.width - filled)}] {frac:4.0%} "
            f"{self.done}/{self.total}  {self.failed} failed  {rate:.0f}/s "
        )
        self.stream.flush()

    def finish(self) -> None:
        """Draw the final state (unless already drawn) and end the line."""
        if self._drawn != self.done or self.done == 0:
            self._draw(time.perf_counter())
        self.stream.write("\n")
        self.stream.flush()
