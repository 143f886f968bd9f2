"""Deliberate reuse across invocations: one connection for the life of the container.

AWS recommends this behind RDS Proxy. The connection is opened outside any invocation
scope (so no scope sweeps it), validated once per invocation before the handler sees it
(a thawed container's socket may have been closed by the server or a proxy), replaced when
older than ``max_age``, and closed at shutdown. With ``release_above``, it is also closed
at the end of an invocation while the server reports more than that share of its
``max_connections`` in use (sampled on the connection itself, at most every
``sample_every`` seconds): a fleet of idle environments then gives sessions back to a
nearly full server instead of holding them. Under awslambdaric a sample that is due is
taken once the response is posted (``_after_response``): the caller never waits for it.
That holds in multi-concurrent mode too, in each worker process after its own post; a
worker whose post failed (awslambdaric logs it and goes on) still samples. Elsewhere (tests,
scripts, another runtime) the sample is taken where the invocation's scope ends.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from lambda_conn._errors import ConfigurationError, LambdaConnError
from lambda_conn._kinds import kind_of
from lambda_conn._liveness import connection_alive
from lambda_conn._scope import _close_failed, current_scope, untracked
from lambda_conn._stats import counters
from lambda_conn._transactions import OPEN, transaction_state

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

_registry: list[weakref.ref[ReusedConnection[Any]]] = []
_atexit_registered = False

_UNSET: Any = object()


class ReusedConnection(Generic[T]):
    """A connection kept across invocations. Call it (or ``.get()``) for a live connection.

    Within an invocation (the outermost ``@managed_connection`` scope) it belongs to the
    first thread that takes it; another thread of that invocation gets a connection of its
    own, closed when the invocation ends. When the invocation ends, a transaction left
    open on it is rolled back, so no later ``commit()`` commits an earlier request's writes.
    """

    def __init__(
        self,
        connect: Callable[[], T],
        *,
        max_age: float | None = 3600.0,
        validate: Callable[[T], bool] | None = None,
        name: str | None = None,
        release_above: float | None = None,
        sample_every: float = 5.0,
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
        if release_above is not None and (
            not _is_number(release_above) or not 0 < release_above < 1
        ):
            raise ConfigurationError(
                "release_above",
                release_above,
                "a share of the server's max_connections above 0 and below 1 (0.8), or None",
            )
        if not _is_number(sample_every) or sample_every <= 0:
            raise ConfigurationError("sample_every", sample_every, "a number of seconds > 0")
        self._connect = connect
        self.max_age = max_age
        self._validate = validate if validate is not None else connection_alive
        self.name = name or getattr(connect, "__name__", "connection")
        self._clock = clock
        self._conn: T | None = None
        self._opened_at = 0.0
        self._checked_in: Any = _UNSET  # the invocation (root scope) we last validated in
        self._owner: threading.Thread | None = None  # the thread it is handed to
        self._used_unscoped = False  # handed out outside any scope since the last check
        self._lock = threading.Lock()
        # Connections of other threads, by (invocation serial, thread): closed by the scope.
        self._extras: dict[tuple[int, int], T] = {}
        self.reconnects = 0
        self.release_above = release_above
        self.sample_every = sample_every
        self._sampled_at: float | None = None  # when the server's utilisation was last read
        self._reading: tuple[int, int] | None = None  # what it was: (in use, maximum)
        self._deferred_for: T | None = None  # the kept one, sampled after the response
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
        """A live connection: the kept one if it is healthy and young enough, else a new one.

        From a second thread while the first still holds it: that thread's own connection.
        """
        scope = current_scope()  # None once closed: a late worker gets no invocation
        root = scope.root if scope is not None and not scope.root.closed else None
        me = threading.current_thread()
        with self._lock:
            if self._conn is not None and self._held_elsewhere(me):
                extra_key = None if root is None else (root.serial, me.ident or 0)
                extra = self._extras.get(extra_key) if extra_key is not None else None
                if extra is not None:
                    return extra
            else:
                return self._take(root, me)
        return self._other_thread(root, me)

    __call__ = get

    def _take(self, root: Any, me: threading.Thread) -> T:
        """The kept connection for ``me`` (lock held): validated once per invocation."""
        conn = self._conn
        if conn is not None and root is not None and root is self._checked_in:
            self._owner = me
            return conn  # validated already in this invocation
        if conn is not None:
            if self.max_age is not None and self.age > self.max_age:
                self._discard("max_age")
            elif not self._is_alive(conn):
                self._discard("dead")
            elif root is not None and self._used_unscoped:
                # Used outside any invocation since (at Init, or by a handler without a
                # scope): what that left open, this invocation must not commit.
                self._settle(conn, "before_use", handler_failed=False)
        if self._conn is None:
            with untracked():
                conn = self._connect()
            self._conn = conn
            self._opened_at = self._clock()
        self._owner = me
        self._used_unscoped = root is None
        if root is not self._checked_in:
            self._checked_in = _UNSET if root is None else root
            if root is not None:
                root.at_exit(functools.partial(self._end_invocation, root))
        return self._conn

    def _held_elsewhere(self, me: threading.Thread) -> bool:
        """Another live thread holds the kept connection in an invocation still running."""
        owner = self._owner
        if owner is None or owner is me:
            return False
        if not owner.is_alive():
            self._owner = None
            return False
        return True

    def _other_thread(self, root: Any, me: threading.Thread) -> T:
        """A connection of ``me``'s own, for as long as the invocation runs."""
        holder = self._owner.name if self._owner is not None else "another thread"
        if root is None:
            raise LambdaConnError(
                f"reused connection {self.name!r} is in use by thread {holder!r}: a connection "
                "serves one thread at a time, and this thread runs outside any "
                "@managed_connection scope, so lambda_conn cannot give it a connection of its "
                "own and close it. Run the thread's function under "
                "contextvars.copy_context().run(...) from the handler (it then gets its own "
                "connection, closed at the end of the invocation), or open one yourself."
            )
        with untracked():
            conn = self._connect()
        root.register(conn)  # closed with the invocation's own connections
        with self._lock:
            first = not any(key[0] == root.serial for key in self._extras)
            self._extras[(root.serial, me.ident or 0)] = conn
        if first and root is not self._checked_in:
            root.at_exit(functools.partial(self._end_invocation, root))
        from lambda_conn._log import INFO, log_event

        log_event(
            INFO, "reused_connection_per_thread", name=self.name, thread=me.name, holder=holder
        )
        return conn

    def _end_invocation(self, root: Any, handler_failed: bool) -> None:
        """At the end of an invocation that used this connection: roll back what it left."""
        with self._lock:
            if self._extras:
                for key in [key for key in self._extras if key[0] == root.serial]:
                    del self._extras[key]  # the scope closes them
            if self._checked_in is not root:
                return
            self._checked_in = _UNSET
            self._owner = None
            conn = self._conn
            if conn is not None:
                self._settle(conn, "end_of_invocation", handler_failed)
            if self.release_above is not None and self._conn is not None:
                self._release_if_server_full(self._conn, may_defer=True)

    def _release_if_server_full(self, conn: T, *, may_defer: bool) -> None:
        """Close the kept connection (lock held) while the last sample of the server's
        utilisation, at most ``sample_every`` seconds old, is above ``release_above``.

        A sample that is due costs a round trip: with ``may_defer``, it is taken after
        awslambdaric has posted the response instead, when it can be."""
        now = self._clock()
        if self._sampled_at is None or now - self._sampled_at >= self.sample_every:
            if may_defer and self._defer_release(conn):
                return
            self._sampled_at = now
            self._reading = self._sample(conn)
            if self._conn is not conn:
                return  # the sample failed and discarded it
        reading, threshold = self._reading, self.release_above
        if reading is None or threshold is None or reading[1] <= 0:
            return
        share = reading[0] / reading[1]
        if share <= threshold:
            return
        counters.released += 1
        from lambda_conn._log import INFO, log_event

        log_event(
            INFO,
            "reused_connection_released",
            name=self.name,
            share=round(share, 3),
            threshold=threshold,
            in_use=reading[0],
            max_connections=reading[1],
            sample_age_s=round(now - (self._sampled_at or now), 3),
            why="the server is nearly out of connections: this environment reconnects on "
            "its next invocation instead of holding a session while it waits",
        )
        self._close_kept()

    def _defer_release(self, conn: T) -> bool:
        """Schedule the sample and the decision for after the response (lock held). False
        when they must happen now: not under awslambdaric, or the last deferred one never
        ran (its post failed, or did not go through the hook)."""
        if self._deferred_for is not None:
            self._deferred_for = None
            return False
        from lambda_conn import _after_response

        if not _after_response.defer(self._release_after_response):
            return False
        self._deferred_for = conn
        return True

    def _release_after_response(self) -> None:
        """After the post: sample and decide, unless the connection changed hands since
        the invocation ended (replaced, closed, or taken again): then do nothing."""
        with self._lock:
            conn, self._deferred_for = self._deferred_for, None
            if conn is None or conn is not self._conn or self.release_above is None:
                return
            if self._checked_in is not _UNSET or self._owner is not None:
                return
            self._release_if_server_full(conn, may_defer=False)

    def _sample(self, conn: T) -> tuple[int, int] | None:
        """``(in use, max_connections)`` read on ``conn`` (lock held); None when it cannot
        be read. Never leaves a transaction open, never raises."""
        from lambda_conn import _utilization
        from lambda_conn._log import WARNING, log_event

        family = _utilization.family(conn)
        if family is None:
            log_event(
                WARNING,
                "reused_connection_release_unsupported",
                name=self.name,
                kind=kind_of(conn).name,
                accepted="PyMySQL, mysqlclient, mysql-connector (sync), psycopg 3 or psycopg2",
            )
            self.release_above = None  # said once; the connection is kept as without it
            return None
        reading: tuple[int, int] | None = None
        try:
            reading = _utilization.sample(conn, family)
        except Exception as exc:
            log_event(
                WARNING, "reused_connection_sample_failed", name=self.name, error=type(exc).__name__
            )
        self._end_sample_transaction(conn)
        return reading

    def _end_sample_transaction(self, conn: T) -> None:
        """Roll back what the sample opened (PostgreSQL without autocommit), or discard."""
        state = transaction_state(conn)
        if state is None:
            return
        if state == OPEN:
            try:
                conn.rollback()  # type: ignore[attr-defined]
                return
            except Exception:
                pass
        self._discard("sample_failed")

    def _settle(self, conn: T, when: str, handler_failed: bool) -> None:
        """Roll back an open transaction (lock held); discard the connection if that fails."""
        state = transaction_state(conn)
        if state is None:
            return  # the common case: one attribute read
        from lambda_conn._log import WARNING, log_event

        if state == OPEN:
            try:
                conn.rollback()  # type: ignore[attr-defined]
            except Exception as exc:
                log_event(
                    WARNING,
                    "reused_connection_rollback_failed",
                    name=self.name,
                    when=when,
                    error=type(exc).__name__,
                )
            else:
                counters.rollbacks += 1
                # After a failed handler this is the expected clean-up; after one that
                # succeeded, its uncommitted writes are gone: say so loudly.
                level = 20 if handler_failed else 30
                log_event(
                    level,
                    "reused_connection_rolled_back",
                    name=self.name,
                    when=when,
                    handler_failed=handler_failed,
                    why="a transaction was left open; commit() in the handler to keep writes",
                )
                return
        self._discard("rollback_failed" if state == OPEN else "transaction_state")

    def _is_alive(self, conn: T) -> bool:
        try:
            return bool(self._validate(conn))
        except Exception:
            return False

    def _discard(self, reason: str) -> None:
        self.reconnects += 1
        from lambda_conn._log import INFO, log_event

        log_event(INFO, "reused_connection_replaced", name=self.name, reason=reason)
        self._close_kept()

    def close(self) -> None:
        """Close the kept connection (at shutdown, or to force a reconnect). Idempotent."""
        self._close_kept()
        self._owner = None

    def _close_kept(self) -> None:
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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _remember(reused: ReusedConnection[Any]) -> None:
    global _atexit_registered
    _registry.append(weakref.ref(reused))
    budget = sys.modules.get("lambda_conn._budget")  # loaded once a handler is decorated
    if budget is not None:
        budget.reused_connection_declared()
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
    release_above: float | None = None,
    sample_every: float = 5.0,
) -> Any:
    """Keep one connection across invocations: ``db = reused_connection(lambda: connect())``
    or as a decorator on the function that connects; then ``db()`` in the handler."""
    options: dict[str, Any] = {
        "max_age": max_age,
        "validate": validate,
        "name": name,
        "release_above": release_above,
        "sample_every": sample_every,
    }
    if connect is None:

        def decorate(fn: Callable[[], T]) -> ReusedConnection[T]:
            return ReusedConnection(fn, **options)

        return decorate
    return ReusedConnection(connect, **options)
