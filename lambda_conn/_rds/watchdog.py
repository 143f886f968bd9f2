"""One thread that cuts off a login attempt that outlives its time.

Why: PyMySQL's timeouts apply to each socket operation, not to the login as a whole, so a
server (or a proxy in front of it) that answers each step just before the timeout can
hold a connect for several timeouts, past the invocation's end. Shutting the socket down
at the attempt's end wakes whatever read, write or TLS handshake is blocked on it, so an
attempt ends on time whatever the server does. One thread for the process, started at the
first connect, rather than a ``threading.Timer`` per connect (a thread start per
invocation); like every thread it is frozen with the environment between invocations,
which is harmless since no attempt is pending then.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import threading
import time
from collections.abc import Callable

Action = Callable[[], object]


class Watchdog:
    """Runs each armed action at its time unless it is disarmed first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ids = itertools.count()
        self._start_empty()

    def _start_empty(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        # The attempts under way (a handful): an entry leaves when disarmed or run.
        self._heap: list[tuple[float, int, Action]] = []
        self._thread: threading.Thread | None = None
        self._wakes_at = math.inf  # when the thread's current wait ends by itself

    def arm(self, seconds: float, action: Action) -> int:
        """Run ``action`` ``seconds`` from now; returns a handle for :meth:`disarm`."""
        with self._cond:
            ident = next(self._ids)
            heapq.heappush(self._heap, (self._clock() + seconds, ident, action))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="lambda_conn-connect-watchdog", daemon=True
                )
                self._thread.start()
            elif self._heap[0][0] < self._wakes_at:  # earlier than the thread's alarm
                self._cond.notify()
        return ident

    def disarm(self, ident: int) -> bool:
        """Cancel an action; False if it already ran (the attempt was cut off)."""
        with self._cond:
            # Out of the heap at once, so the thread, when it wakes for a time that no
            # longer matters, sleeps on to the next pending one: about one wake per
            # connect timeout, not per connect.
            remaining = [entry for entry in self._heap if entry[1] != ident]
            if len(remaining) == len(self._heap):
                return False  # already run
            heapq.heapify(remaining)
            self._heap = remaining
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if not self._heap:
                        self._wakes_at = math.inf
                        self._cond.wait()
                        continue
                    self._wakes_at = self._heap[0][0]
                    delay = self._wakes_at - self._clock()
                    if delay > 0:
                        self._cond.wait(delay)
                        continue
                    _, _, action = heapq.heappop(self._heap)
                    # Under the lock, so that disarm() cannot report "in time" for an
                    # attempt whose socket is being shut down.
                    with contextlib.suppress(Exception):
                        action()

    def _after_fork(self) -> None:
        # The thread did not survive the fork (multi-concurrent mode forks workers).
        self._start_empty()


WATCHDOG = Watchdog()
os.register_at_fork(after_in_child=WATCHDOG._after_fork)
