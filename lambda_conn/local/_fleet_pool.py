"""The fleet's environments and its work: which environment takes the next request, when.

Lambda routes a request to a warm, idle execution environment and creates a new one only
when every warm one is busy, up to the function's concurrency. Here each environment slot
is one ``LocalLambda`` (one environment at a time, frozen between its invocations, reset
on its own); a slot whose environment was reset starts a new one on its next request.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambda_conn.local._lambda import LocalLambda

TYPE_CHECKING = False
if TYPE_CHECKING:
    from lambda_conn.local._fleet_shards import LiveCounter

__all__ = ["EnvironmentPool", "Schedule", "Slot"]

_JOIN_POLL_S = 0.05


@dataclass(eq=False)
class Slot:
    """One place for an execution environment, and the numbers of those it held."""

    fn: LocalLambda
    #: Its place in the pool (from 0): how a shard names it to the parent.
    key: int = 0
    #: True while an environment exists in it (warm, or starting for the invoke under way).
    live: bool = False
    #: LocalLambda's generation -> the fleet's environment number (from 1).
    numbers: dict[int, int] = field(default_factory=dict)


class EnvironmentPool:
    """Hands out slots as Lambda routes requests; counts environments alive at once."""

    def __init__(
        self, make: Callable[[], LocalLambda], limit: int, live: LiveCounter | None = None
    ) -> None:
        self._make = make
        self._limit = limit
        self._shared_live = live  # the whole fleet's, when this pool is one shard's
        self._cond = threading.Condition()
        self.slots: list[Slot] = []
        self._warm: list[Slot] = []  # idle, with a frozen environment (most recent last)
        self._empty: list[Slot] = []  # idle, their environment reset
        self.live = 0
        self.peak_live = 0

    def acquire(self) -> Slot:
        """A warm idle slot if any; else an empty one (a new environment starts in it on
        invoke), else a new slot while fewer than the limit exist; else wait for one."""
        with self._cond:
            while True:
                if self._warm:
                    return self._warm.pop()  # the most recently used, as a warm cache
                slot: Slot | None = None
                if self._empty:
                    slot = self._empty.pop()
                elif len(self.slots) < self._limit:
                    slot = Slot(self._make(), key=len(self.slots))
                    self.slots.append(slot)
                if slot is not None:
                    slot.live = True  # its invoke will start an environment
                    self.live += 1
                    self.peak_live = max(self.peak_live, self.live)
                    if self._shared_live is not None:
                        self._shared_live.change(1)
                    return slot
                self._cond.wait()

    def release(self, slot: Slot, *, reset: bool) -> None:
        """Back to idle: warm, or empty when its environment was thrown away."""
        with self._cond:
            if reset and slot.live:
                slot.live = False
                self.live -= 1
                if self._shared_live is not None:
                    self._shared_live.change(-1)
            (self._warm if slot.live else self._empty).append(slot)
            self._cond.notify()

    def abort_all(self) -> None:
        """SIGKILL every environment, busy or frozen (Ctrl-C)."""
        for slot in list(self.slots):
            slot.fn.abort()


class Schedule:
    """Which invocation comes next, and when a caller may ask for it.

    ``ramp_s``: caller ``k`` of ``concurrency`` joins at ``ramp_s * k / (concurrency - 1)``
    seconds, so concurrency rises linearly from 1 to ``concurrency`` over ``ramp_s``.
    ``idle_s``: once half the invocations have been handed out, no more are until every
    one in flight has ended; then every environment stays frozen for ``idle_s`` seconds.
    """

    def __init__(
        self,
        n: int,
        concurrency: int,
        *,
        ramp_s: float | None,
        idle_s: float | None,
        stop: threading.Event | Any,
        cond: Any = None,
    ) -> None:
        self.n = n
        self.concurrency = concurrency
        self.ramp_s = ramp_s or 0.0
        self.idle_s = idle_s
        self.stop = stop
        self._cond = threading.Condition() if cond is None else cond
        self._idle_at = n // 2 if idle_s is not None else -1
        self._init_state()
        self.started_at = time.monotonic()

    def _init_state(self) -> None:
        """The state every caller changes under ``_cond`` (in shared memory for shards)."""
        self._next = 0
        self._in_flight = 0
        #: Callers that have asked for their first request (``take(first=True)``).
        self._first_takes = 0
        self._idling = False
        #: (start, end) of the freeze in seconds on the schedule's clock, once done.
        self.idle_window: tuple[float, float] | None = None

    def join_time(self, caller: int) -> float:
        """Seconds after the start when caller ``caller`` (from 0) begins asking."""
        if self.concurrency <= 1 or not self.ramp_s:
            return 0.0
        return self.ramp_s * caller / (self.concurrency - 1)

    def _joined(self) -> int:
        """Callers whose join time has come, whether or not their thread has asked yet."""
        if self.concurrency <= 1 or not self.ramp_s:
            return self.concurrency
        elapsed = time.monotonic() - self.started_at
        return min(self.concurrency, int(elapsed * (self.concurrency - 1) / self.ramp_s) + 1)

    def wait_to_join(self, caller: int) -> bool:
        """Sleep until the caller's turn to join; False when the soak stopped meanwhile or
        every invocation was handed out before its turn (a ramp longer than the work
        ends with the work, not with the last caller's join time)."""
        join_at = self.started_at + self.join_time(caller)
        with self._cond:
            while not self.stop.is_set() and self._next < self.n:
                delay = join_at - time.monotonic()
                if delay <= 0:
                    return True
                # woken by done() after every invocation, and at least every 50 ms for stop
                self._cond.wait(min(delay, _JOIN_POLL_S))
        return False

    def take(self, *, first: bool = False) -> int | None:
        """The next invocation's index (from 0), or None when there is no more work.
        ``first``: the caller's first request (counted for ``take_now``)."""
        with self._cond:
            if first:
                self._first_takes += 1
            while True:
                if self.stop.is_set() or self._next >= self.n:
                    return None
                if self._next != self._idle_at or self.idle_window is not None:
                    break
                if self._idling or self._in_flight:
                    self._cond.wait(0.1)
                    continue
                self._idle_locked()
            index = self._next
            self._next += 1
            self._in_flight += 1
            return index

    def take_now(self) -> int | None:
        """The next invocation's index if it can be handed out without waiting (not the
        ``idle_s`` freeze's turn) and every caller that has joined has sent its first
        request, else None: a caller asks while its current invocation is still in
        flight, to hand the next one to the same environment at once. While a joined
        caller has not asked yet (its thread not started, or still busy starting), the
        request is its: Lambda sends concurrent requests to as many environments. Once
        each has, a caller between two requests is not counted: it sends its next at
        once, and counting it would stop the others handing over theirs, one freeze and
        thaw leading to the next."""
        with self._cond:
            if self.stop.is_set() or self._next >= self.n:
                return None
            if self._next == self._idle_at and self.idle_window is None:
                return None
            if self._first_takes < self._joined():
                return None
            index = self._next
            self._next += 1
            self._in_flight += 1
            return index

    def _idle_locked(self) -> None:
        """Every environment is frozen now (nothing in flight): keep them so for idle_s."""
        assert self.idle_s is not None
        self._idling = True
        start = time.monotonic()
        self._cond.release()
        try:
            self.stop.wait(self.idle_s)
        finally:
            self._cond.acquire()
        self._idling = False
        self.idle_window = (start - self.started_at, time.monotonic() - self.started_at)
        self._wake_all()

    def done(self) -> None:
        """An invocation taken has ended (or will never run)."""
        with self._cond:
            self._in_flight -= 1
            self._wake_all()

    def _wake_all(self) -> None:
        """Every caller waiting to join or to take (under ``_cond``)."""
        self._cond.notify_all()

    @property
    def handed_out(self) -> int:
        return self._next


def check_fleet_options(
    concurrency: object, ramp_s: object, idle_s: object, n: int
) -> tuple[int, float | None, float | None]:
    """The fleet's options validated: ValueError naming the setting, value and what is
    accepted."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(
            f"concurrency={concurrency!r} is not accepted: expected an integer >= 1 (the "
            "number of concurrent callers, hence of execution environments at most)"
        )
    ramp = _seconds("ramp_s", ramp_s, zero_ok=True)
    if ramp and concurrency == 1:
        raise ValueError(
            f"ramp_s={ramp_s!r} is not accepted with concurrency=1: a ramp raises concurrency "
            "from 1 to concurrency; expected None or a concurrency above 1"
        )
    idle = _seconds("idle_s", idle_s, zero_ok=False)
    if idle is not None and n < 2:
        raise ValueError(
            f"idle_s={idle_s!r} is not accepted with n={n}: the freeze comes after half of "
            "the invocations; expected n >= 2"
        )
    return concurrency, ramp, idle


def _seconds(name: str, value: object, *, zero_ok: bool) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
        or (value == 0 and not zero_ok)
    ):
        accepted = "0 or more" if zero_ok else "more than 0"
        raise ValueError(
            f"{name}={value!r} is not accepted: expected None or seconds, a finite number "
            f"{accepted}"
        )
    return float(value)
