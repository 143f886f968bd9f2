"""Which connect errors deserve another attempt, and how long to wait before it.

Under a burst, hundreds of Lambda environments connect at once: the database answers
1040 "Too many connections" (RDS Proxy sheds load the same way) and a failover drops
connects for a few seconds. Another attempt a little later usually succeeds. Waiting a
random share of an exponentially growing delay ("full jitter") spreads the fleet's
retries out instead of sending them back in lockstep.

Errors that no retry can fix fail at once: wrong password (1045), unknown database (1049),
a certificate that does not verify, TLS required but not offered (2026).
"""

from __future__ import annotations

import random as _random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lambda_conn._errors import ConfigurationError
from lambda_conn._rds.deadline import seconds

#: MySQL/MariaDB error codes that are transient at connect time.
RETRYABLE_CODES: frozenset[int] = frozenset(
    {
        1040,  # ER_CON_COUNT_ERROR: too many connections (a burst; RDS Proxy load shedding)
        1053,  # ER_SERVER_SHUTDOWN: shutdown in progress (restart, failover)
        1203,  # ER_TOO_MANY_USER_CONNECTIONS: max_user_connections reached
        2003,  # CR_CONN_HOST_ERROR: refused, unreachable, TCP connect timed out
        2006,  # CR_SERVER_GONE_ERROR: the server closed the connection during login
        2013,  # CR_SERVER_LOST: lost or timed out during the handshake
    }
)

# TLS failures that are really a dropped connection (the peer went away mid-handshake).
_TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError)


def error_code(exc: BaseException) -> int | None:
    """The MySQL error number of a PyMySQL error (``exc.args[0]``), else None."""
    args = getattr(exc, "args", ())
    code = args[0] if args else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


def is_retryable(exc: BaseException) -> bool:
    """True for errors another connect attempt may not meet (see ``RETRYABLE_CODES``)."""
    # PyMySQL wraps OSErrors (TLS ones included) from the connect as 2003 and keeps the
    # original: a certificate that fails to verify must not be retried.
    original = getattr(exc, "original_exception", None)
    if isinstance(original, ssl.SSLError) and not isinstance(original, _TRANSIENT_SSL):
        return False
    if isinstance(exc, ssl.SSLError):
        return isinstance(exc, _TRANSIENT_SSL)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    import pymysql

    return isinstance(exc, pymysql.err.MySQLError) and error_code(exc) in RETRYABLE_CODES


@dataclass(frozen=True)
class Retry:
    """How many connect attempts, and the full-jitter backoff between them.

    Before attempt ``n + 1`` we sleep ``random() * min(max_delay, base_delay * 2 ** (n - 1))``
    seconds. The deadline bounds the whole sequence whatever ``attempts`` says. ``sleep``
    and ``random`` are injectable so tests never wait.
    """

    attempts: int = 6
    base_delay: float = 0.05
    max_delay: float = 2.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    random: Callable[[], float] = field(default=_random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigurationError("retry.attempts", self.attempts, "a whole number >= 1")
        if self.attempts < 1:
            raise ConfigurationError("retry.attempts", self.attempts, "a whole number >= 1")
        seconds("retry.base_delay", self.base_delay)
        seconds("retry.max_delay", self.max_delay)
        if self.max_delay < self.base_delay:
            raise ConfigurationError(
                "retry.max_delay", self.max_delay, f">= base_delay ({self.base_delay:g})"
            )
        for name in ("sleep", "random"):
            if not callable(getattr(self, name)):
                raise ConfigurationError(f"retry.{name}", getattr(self, name), "a callable")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1 for the first)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** max(0, failures - 1))
        return float(self.random()) * ceiling


#: No retry: one attempt, still bounded by the deadline.
NO_RETRY = Retry(attempts=1)
