"""psycopg2's connect under one deadline, to the millisecond.

psycopg2's ``connect`` is libpq's ``PQconnectdb``, whose only bound is ``connect_timeout``:
whole seconds, at least 2, and per host address (libpq counts with ``time()``, so a value
of N waits between N-1 and N seconds for each address). A Lambda deadline is neither.
psycopg2 has another way in, meant for coroutine libraries: with a wait callback set
(``psycopg2.extensions.set_wait_callback``) ``connect`` runs libpq's non-blocking
``PQconnectStart``/``PQconnectPoll`` and calls the callback to wait. That callback is
process-wide, and psycopg2 reads it twice per operation in *every* thread: once when the
operation starts (is a callback set? then run it "green": ``PQsendQuery``, non-blocking
connect) and again when it first waits. A callback set and then taken away (back to
``None``) in between fails that other thread's query or connect with "wait callback not
available" and closes its connection. So the connector sets one only where no other
thread can be in the middle of a psycopg2 call:

- **Alone** (no Python thread but this one, apart from lambda_conn's own watchdog and
  extension threads, which never call psycopg2: the usual Lambda handler): the callback is
  set just before ``connect`` and put back to ``None`` as soon as psycopg2 first calls it
  from this thread; it waits on the socket against the attempt's end, so TCP, TLS and
  startup are bounded as a whole; past it the callback raises and psycopg2 frees the
  half-made connection at once. psycopg2 left libpq in non-blocking mode, which would let
  a large ``COPY ... FROM STDIN`` buffer all its data in memory, so
  ``PQsetnonblocking(conn, 0)`` is called on it (through ``connection.pgconn_ptr`` and the
  libpq psycopg2 itself links).
- **Other threads exist**: no callback is touched. The blocking ``psycopg2.connect`` runs
  in a helper thread with libpq's own ``connect_timeout`` (the limit rounded up, at least
  2 s), and the caller waits for it until the attempt's end, then raises the same timeout
  error. A connect that was given up on is not freed at once: libpq ends it by its own
  ``connect_timeout`` (or it finishes late and is closed with Terminate), in the helper
  thread. The connection a caller gets is registered with its scope in the caller's
  thread, as ``psycopg2.connect()`` would have.
- **An application wait callback is already set** (gevent, eventlet): psycopg2 is green
  anyway and every thread's operation waits through a callback. Ours is set for the
  connect (one such window at a time: a lock) and the application's put back as soon as
  psycopg2 first calls ours from the connecting thread, and only if the callback is still
  ours; another thread's operation that meets ours is handed to the application's.

Not bounded: the name resolution inside ``PQconnectStart`` (libpq resolves synchronously),
as with psycopg 3.
"""

from __future__ import annotations

import selectors
import sys
import threading
import time
from typing import Any

_lock = threading.Lock()  # held while the callback is installed: one window at a time
_nonblocking: Any = None  # libpq's PQsetnonblocking, as psycopg2 links it
# lambda_conn's own threads that never call psycopg2 (they do not make a process "shared").
_NEVER_PSYCOPG2 = frozenset({"lambda_conn-connect-watchdog", "lambda_conn-extension"})
_abandoned: set[threading.Thread] = set()  # helper threads whose connect was given up on


def connect(dsn: str, limit: float, factories: dict[str, Any]) -> Any:
    """``psycopg2.connect(dsn, **factories)``, bounded to ``limit`` seconds as a whole."""
    from psycopg2 import extensions

    if extensions.get_wait_callback() is not None:
        return _connect_green(dsn, limit, factories)
    if _alone():
        return _connect_alone(dsn, limit, factories)
    return _connect_beside(dsn, limit, factories)


def _alone() -> bool:
    """No thread but this one (and lambda_conn's own that never touch psycopg2) can be
    inside a psycopg2 call. ``sys._current_frames`` lists every thread running Python,
    also those not started through ``threading``."""
    me = threading.get_ident()
    others = set(sys._current_frames()) - {me}
    if not others:
        return True
    ours = {t.ident for t in threading.enumerate() if t.name in _NEVER_PSYCOPG2}
    return others <= ours


def _connect_with_callback(dsn: str, limit: float, factories: dict[str, Any]) -> Any:
    """The connect under our wait callback, put back as psycopg2 first calls it."""
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
            if extensions.get_wait_callback() is wait:  # not one set meanwhile
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
        return psycopg2.connect(dsn, **factories)
    except BaseException as exc:
        _release_failed_attempt(exc)
        raise
    finally:
        close_window()  # psycopg2 failed before it waited


def _connect_green(dsn: str, limit: float, factories: dict[str, Any]) -> Any:
    """An application callback is set: the connection stays green, as psycopg2 makes it."""
    return _connect_with_callback(dsn, limit, factories)


def _connect_alone(dsn: str, limit: float, factories: dict[str, Any]) -> Any:
    conn = _connect_with_callback(dsn, limit, factories)
    try:
        _blocking(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class _Attempt:
    __slots__ = ("abandoned", "conn", "done", "error", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.abandoned = False
        self.conn: Any = None
        self.error: BaseException | None = None


def _connect_beside(dsn: str, limit: float, factories: dict[str, Any]) -> Any:
    """The blocking connect in a helper thread, waited for until the attempt's end."""
    import math

    import psycopg2
    from psycopg2.extensions import make_dsn

    # libpq's own bound, for a connect given up on: it ends by itself in the helper.
    bounded = make_dsn(dsn, connect_timeout=max(2, math.ceil(limit)))
    attempt = _Attempt()

    def run() -> None:
        # A new thread starts in an empty context: psycopg2's tracking sees no scope here.
        try:
            conn = psycopg2.connect(bounded, **factories)
        except BaseException as exc:
            with attempt.lock:
                if not attempt.abandoned:
                    attempt.error = exc
                    attempt.done.set()
            return
        with attempt.lock:
            if not attempt.abandoned:
                attempt.conn = conn
                attempt.done.set()
                return
        conn.close()  # finished after the caller gave up: Terminate, socket closed

    helper = threading.Thread(target=run, name="lambda_conn-psycopg2-connect", daemon=True)
    helper.start()
    attempt.done.wait(max(limit, 0.0))
    with attempt.lock:
        if not attempt.done.is_set():
            attempt.abandoned = True
            _abandoned.add(helper)
            raise psycopg2.OperationalError(_expired(limit))
    helper.join()  # it has handed over: only its return is left
    if attempt.error is not None:
        error, attempt.error = attempt.error, None
        raise error
    from lambda_conn._integrations._psycopg2 import register

    return register(attempt.conn)


def settle(timeout: float) -> bool:
    """Wait up to ``timeout`` for connects given up on to end (tests); True if all did."""
    ends = time.monotonic() + timeout
    for helper in list(_abandoned):
        helper.join(max(0.0, ends - time.monotonic()))
        if not helper.is_alive():
            _abandoned.discard(helper)
    return not _abandoned


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
