"""Process-wide counters, read by the health guard and by tests."""

from __future__ import annotations


class Counters:
    """Cumulative since the process started (one execution environment)."""

    __slots__ = (
        "close_errors",
        "closed",
        "invocations",
        "leaked",
        "leaked_descriptors",
        "opened_after_scope_closed",
        "pinning",
        "released",
        "rollbacks",
    )

    def __init__(self) -> None:
        self.invocations = 0
        self.closed = 0
        self.close_errors = 0
        self.leaked = 0
        self.leaked_descriptors = 0
        self.opened_after_scope_closed = 0
        self.rollbacks = 0
        self.pinning = 0
        self.released = 0

    def snapshot(self) -> dict[str, int]:
        return {
            "invocations": self.invocations,
            "closed": self.closed,
            "close_errors": self.close_errors,
            "leaked": self.leaked,
            "leaked_descriptors": self.leaked_descriptors,
            "opened_after_scope_closed": self.opened_after_scope_closed,
            "rollbacks": self.rollbacks,
            "pinning": self.pinning,
            "released": self.released,
        }


counters = Counters()


def stats() -> dict[str, int]:
    """Counters since the container started: invocations, connections closed, close errors,
        connections leaked (still open after cleanup), descriptors left open (audit only),
        connections opened from the context of an invocation that had ended (not tracked),
        transactions a reused connection left open that were rolled back, statement classes
        that pin an RDS Proxy connection (with the pinning check on; once per connection), kept
    connections released because the server was nearly full (``release_above``)."""
    return counters.snapshot()
