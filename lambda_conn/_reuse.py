"""Deliberate reuse across invocations: one connection for the life of the container.

AWS recommends this behind RDS Proxy. The connection is opened outside any invocation
scope (so no scope sweeps it), validated once per invocation before the handler sees it
(a thawed container's socket may have been closed by the server or a proxy), replaced when
older than ``max_age``, and closed at shutdown.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from lambda_conn._errors import ConfigurationError
from lambda_conn._kinds import kind_of
from lambda_conn._liveness import connection_alive
from lambda_conn._scope import _close_failed, current_scope, untracked

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

_registry: list[weakref.ref[ReusedConnection[Any]]] = []
_atexit_registered = False

_UNSET: Any = object()


class ReusedConnection(Generic[T]):
    """A connection kept across invocations. Call it (or ``.get()``) for a live connection."""

    def __init__(
        self,
        connect: Callable[[], T],
        *,
        max_age: float | None = 3600.0,
        validate: Callable[[T], bool] | None = None,
        name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not callable(connect):
            raise ConfigurationError("connect", connect, "a callable that opens a connection")
        if max_age is not None and (
            isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age <= 0
        ):
            raise ConfigurationError("max_age", max_age, "a number of seconds > 0, or None")
        if validate is not None and not callable(validate):
            raise ConfigurationError("validate", validate, "a callable taking the connection")
        self._connect = connect
        self.max_age = max_age
        self._validate = validate if validate is not None else connection_alive
        self.name = name or getattr(connect, "__name__", "connection")
        self._clock = clock
        self._conn: T | None = None
        self._opened_at = 0.0
        self._checked_in: Any = _UNSET  # the scope in which we last validated
        self.reconnects = 0
        _remember(self)

    def __repr__(self) -> str:
        # Never the connection's own repr: some clients put credentials in it.
        if self._conn is None:
            return f"<ReusedConnection {self.name!r} not connected>"
        return f"<ReusedConnection {self.name!r} connected, age {self.age:.1f}s>"

    @property
    def age(self) -> float:
        return self._clock() - self._opened_at if self._conn is not None else 0.0

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def get(self) -> T:
        """A live connection: the kept one if it is healthy and young enough, else a new one."""
        conn = self._conn
        scope = current_scope()  # None once closed: a late worker always validates
        if conn is not None:
            if scope is not None and scope is self._checked_in:
                return conn  # validated already in this invocation
            if self.max_age is not None and self.age > self.max_age:
                self._discard("max_age")
            elif not self._is_alive(conn):
                self._discard("dead")
            else:
                self._checked_in = scope
                return conn
        with untracked():
            conn = self._connect()
        self._conn = conn
        self._opened_at = self._clock()
        self._checked_in = scope
        return conn

    __call__ = get

    def _is_alive(self, conn: T) -> bool:
        try:
            return bool(self._validate(conn))
        except Exception:
            return False

    def _discard(self, reason: str) -> None:
        self.reconnects += 1
        from lambda_conn._log import log_event

        log_event(20, "reused_connection_replaced", name=self.name, reason=reason)
        self.close()

    def close(self) -> None:
        """Close the kept connection (at shutdown, or to force a reconnect). Idempotent."""
        conn, self._conn = self._conn, None
        self._checked_in = _UNSET
        if conn is None:
            return
        kind = kind_of(conn)
        try:
            if kind.close is not None:
                kind.close(conn)
        except Exception as exc:
            _close_failed(kind, exc)


def _remember(reused: ReusedConnection[Any]) -> None:
    global _atexit_registered
    _registry.append(weakref.ref(reused))
    if not _atexit_registered:
        import atexit

        atexit.register(close_reused_connections)
        _atexit_registered = True


def close_reused_connections() -> int:
    """Close every kept connection (used at SIGTERM and exit). Returns how many were open."""
    closed = 0
    for ref in list(_registry):
        reused = ref()
        if reused is None:
            _registry.remove(ref)
        elif reused.connected:
            reused.close()
            closed += 1
    return closed


def reused_connection(
    connect: Callable[[], T] | None = None,
    /,
    *,
    max_age: float | None = 3600.0,
    validate: Callable[[T], bool] | None = None,
    name: str | None = None,
) -> Any:
    """Keep one connection across invocations: ``db = reused_connection(lambda: connect())``
    or as a decorator on the function that connects; then ``db()`` in the handler."""
    if connect is None:

        def decorate(fn: Callable[[], T]) -> ReusedConnection[T]:
            return ReusedConnection(fn, max_age=max_age, validate=validate, name=name)

        return decorate
    return ReusedConnection(connect, max_age=max_age, validate=validate, name=name)
