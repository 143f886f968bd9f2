"""psycopg2's connect under one deadline, to the millisecond.

psycopg2's ``connect`` is libpq's ``PQconnectdb``, whose only bound is ``connect_timeout``:
whole seconds, at least 2, and per host address (libpq counts with ``time()``, so a value
of N waits between N-1 and N seconds for each address). A Lambda deadline is neither.
psycopg2 has another way in, meant for coroutine libraries: with a wait callback set
(``psycopg2.extensions.set_wait_callback``) ``connect`` runs libpq's non-blocking
``PQconnectStart``/``PQconnectPoll`` and calls the callback to wait. This module's callback
waits on the socket against the attempt's end, so TCP, TLS and startup are bounded as a
whole; past it the callback raises and psycopg2 frees the half-made connection.

The callback is process-wide, so it is installed for as short as it can be: set just
before ``connect``, and put back (to ``None`` or the application's own) as soon as psycopg2
first calls it, from the connecting thread. Another thread that starts a psycopg2
operation within that window (``PQconnectStart``: name resolution, the socket) waits
through it too, exactly as it would have, without a deadline. Afterwards the connection is
a normal blocking one: psycopg2 left libpq in non-blocking mode, which would let a large
``COPY ... FROM STDIN`` buffer all its data in memory, so ``PQsetnonblocking(conn, 0)`` is
called on it (through ``connection.pgconn_ptr`` and the libpq psycopg2 itself links).
With an application wait callback already set (gevent, eventlet), psycopg2 is green
anyway: the connect waits through ours, then the application's callback is back.

Not bounded: the name resolution inside ``PQconnectStart`` (libpq resolves synchronously),
as with psycopg 3.
"""

from __future__ import annotations

import selectors
import threading
import time
from typing import Any

_lock = threading.Lock()  # held while the callback is installed: one window at a time
_nonblocking: Any = None  # libpq's PQsetnonblocking, as psycopg2 links it


def connect(dsn: str, limit: float, factories: dict[str, Any]) -> Any:
    """``psycopg2.connect(dsn, **factories)``, bounded to ``limit`` seconds as a whole."""
    import psycopg2
    from psycopg2 import extensions

    ends = time.monotonic() + limit
    me = threading.get_ident()
    # Connects in other threads wait for this one's window only, within their own limit.
    if not _lock.acquire(timeout=max(limit, 0.0)):
        raise psycopg2.OperationalError(_expired(limit))
    previous = extensions.get_wait_callback()
    window = [True]  # open: the callback is ours and the lock held

    def close_window() -> None:
        if window[0]:
            window[0] = False
            extensions.set_wait_callback(previous)
            _lock.release()

    def wait(conn: Any) -> None:
        if window[0] and threading.get_ident() == me:
            close_window()
            _poll(conn, ends, limit)
        elif previous is not None:
            previous(conn)
        else:
            _poll(conn, None, limit)  # another thread's operation, begun in the window

    extensions.set_wait_callback(wait)
    try:
        conn = psycopg2.connect(dsn, **factories)
    except BaseException as exc:
        _release_failed_attempt(exc)
        raise
    finally:
        close_window()  # psycopg2 failed before it waited
    if previous is None:
        try:
            _blocking(conn)
        except BaseException:
            conn.close()
            raise
    return conn


def _poll(conn: Any, ends: float | None, limit: float) -> None:
    """Drive ``conn.poll()`` until done, waiting on its socket, until ``ends``."""
    import psycopg2
    from psycopg2 import extensions

    with selectors.DefaultSelector() as selector:
        while True:
            state = conn.poll()
            if state == extensions.POLL_OK:
                return
            if state == extensions.POLL_READ:
                event = selectors.EVENT_READ
            elif state == extensions.POLL_WRITE:
                event = selectors.EVENT_WRITE
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state!r}")
            fd = conn.fileno()  # libpq may move to the host's next address
            selector.register(fd, event)
            try:
                left = None if ends is None else ends - time.monotonic()
                if left is None:
                    selector.select()
                elif left <= 0 or not selector.select(left):
                    raise psycopg2.OperationalError(_expired(limit))
            finally:
                selector.unregister(fd)


def _release_failed_attempt(exc: BaseException) -> None:
    """The error's traceback holds our callback's frames, whose locals hold the half-made
    connection (and its socket) for as long as the error lives: clear them, so psycopg2
    frees it now rather than when the caller drops the error."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_globals.get("__name__") == __name__ and frame.f_code.co_name != "connect":
            try:  # noqa: SIM105
                frame.clear()
            except RuntimeError:  # still executing: not ours to clear
                pass
        tb = tb.tb_next


def _expired(limit: float) -> str:
    return (
        "connection timeout expired: the connect (TCP, TLS and startup) did not finish "
        f"within {limit * 1000:.0f} ms (the connect timeout, cut to the invocation's deadline)"
    )


def _blocking(conn: Any) -> None:
    """Put libpq back in blocking mode, as a connect without a wait callback leaves it."""
    global _nonblocking
    ptr = getattr(conn, "pgconn_ptr", None)  # psycopg2 2.8+
    if ptr is None:
        return
    if _nonblocking is None:
        import ctypes

        from psycopg2 import _psycopg  # type: ignore[attr-defined, unused-ignore]

        # Looked up from psycopg2's own extension: the libpq it links (a wheel bundles one).
        function = ctypes.CDLL(_psycopg.__file__).PQsetnonblocking
        function.argtypes = [ctypes.c_void_p, ctypes.c_int]
        function.restype = ctypes.c_int
        _nonblocking = function
    if _nonblocking(ptr, 0) != 0:
        import psycopg2

        raise psycopg2.OperationalError("PQsetnonblocking(0) failed after the connect")
