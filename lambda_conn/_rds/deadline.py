"""How long a connect may take, and the socket timeouts that follow from it.

Lambda ends an invocation at its timeout. A connect still retrying (or a server that
accepted the TCP connection and never answers) then takes the whole invocation with it,
and the caller sees "Task timed out" instead of a database error it could handle. A
``Deadline`` turns ``context.get_remaining_time_in_millis()``, less a margin, into a point on
the monotonic clock; every retry and every socket timeout is measured against it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambda_conn._errors import ConfigurationError

Clock = Callable[[], float]

#: Time kept back from the invocation's remaining time: enough for the handler to turn a
#: connect failure into a response (or an error the platform reports) before Lambda kills it.
DEFAULT_MARGIN = 0.5


def seconds(setting: str, value: object, *, minimum: float = 0.0, strict: bool = False) -> float:
    """``value`` as a finite number of seconds ``>= minimum`` (``> minimum`` if strict)."""
    op = ">" if strict else ">="
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(setting, value, f"a finite number of seconds {op} {minimum:g}")
    if value < minimum or (strict and value == minimum):
        raise ConfigurationError(setting, value, f"a finite number of seconds {op} {minimum:g}")
    return float(value)


@dataclass(frozen=True)
class Deadline:
    """A point on ``clock`` (monotonic by default) by which a connect must be over."""

    at: float
    clock: Clock = field(default=time.monotonic, repr=False, compare=False)

    @classmethod
    def after(cls, seconds_from_now: float, *, clock: Clock = time.monotonic) -> Deadline:
        """A deadline ``seconds_from_now`` away (zero or less: already passed)."""
        if (
            isinstance(seconds_from_now, bool)
            or not isinstance(seconds_from_now, (int, float))
            or not math.isfinite(seconds_from_now)
        ):
            raise ConfigurationError(
                "deadline", seconds_from_now, "a Deadline or a finite number of seconds from now"
            )
        return cls(clock() + float(seconds_from_now), clock)

    @classmethod
    def from_context(
        cls, context: Any, *, margin: float = DEFAULT_MARGIN, clock: Clock = time.monotonic
    ) -> Deadline:
        """The invocation's end, less ``margin`` seconds, from a Lambda context object."""
        remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
        if not callable(remaining_ms):
            raise ConfigurationError(
                "context",
                context,  # shown as its type only: a context may carry anything
                "the handler's Lambda context (it has get_remaining_time_in_millis())",
            )
        margin = seconds("margin", margin)
        return cls(clock() + remaining_ms() / 1000.0 - margin, clock)

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self.at - self.clock()

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0

    def __repr__(self) -> str:
        return f"Deadline({self.remaining():.3f}s left)"


def earliest(*deadlines: Deadline | None) -> Deadline | None:
    """The first of several deadlines to pass (None when there are none)."""
    present = [d for d in deadlines if d is not None]
    return min(present, key=Deadline.remaining) if present else None


#: The smallest socket timeout we hand PyMySQL (it rejects zero): a deadline already
#: reached is caught before an attempt starts, so this only covers the last few ms.
_MIN_TIMEOUT = 0.001


@dataclass(frozen=True)
class Timeouts:
    """Socket timeouts in seconds, each cut down to the deadline when there is one.

    ``connect`` bounds each attempt's TCP connect, TLS handshake and login: PyMySQL's own
    ``connect_timeout`` covers only the TCP connect, so a server that accepts and never
    greets would otherwise hold the invocation until Lambda kills it. ``read`` and ``write``
    apply to queries afterwards; None means "until the deadline" (no limit without one).
    """

    connect: float = 5.0
    read: float | None = None
    write: float | None = None

    def __post_init__(self) -> None:
        seconds("timeouts.connect", self.connect, strict=True)
        for name in ("read", "write"):
            value = getattr(self, name)
            if value is not None:
                seconds(f"timeouts.{name}", value, strict=True)

    def within(self, deadline: Deadline | None) -> Timeouts:
        """These timeouts, none longer than the time left before ``deadline``."""
        if deadline is None:
            return self
        left = max(deadline.remaining(), _MIN_TIMEOUT)
        return Timeouts(
            connect=min(self.connect, left),
            read=left if self.read is None else min(self.read, left),
            write=left if self.write is None else min(self.write, left),
        )
