"""psycopg 3: ``Connection`` and ``AsyncConnection`` built in a scope are closed at its end,
and so are psycopg_pool pools built in it.

Closing ends with libpq's ``PQfinish``, which sends the Terminate message (the server ends
the session without logging an unexpected EOF) and frees the socket, whatever state the
connection is in: psycopg's own ``close()`` returns early when the connection is already
"closed" in libpq's sense, and an ``AsyncConnection`` left behind by a sync handler (its
event loop gone) can still be finished synchronously.

A connection made by a pool belongs to that pool, not to the scope: a module-level pool
keeps its connections across invocations (deliberate reuse). A pool built inside a scope is
closed with it, including the connections it has handed out and not got back, which
``pool.close()`` alone leaves open.
"""

from __future__ import annotations

from lambda_conn._integrations._track import tracker
from lambda_conn._kinds import Kind, reconnects, register_kind
from lambda_conn._liveness import socket_idle_and_open
from lambda_conn._registry import Integration, Statements
from lambda_conn._scope import untracked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

# --------------------------------------------------------------------------- connections


def _finish(conn: Any) -> None:
    conn._closed = True  # what close() records: psycopg then reports closed, not broken
    conn.pgconn.finish()  # idempotent: sends Terminate if connected, frees the socket


def _close(conn: Any) -> None:
    try:
        if not conn.closed:
            conn.close()
    finally:
        _finish(conn)


async def _aclose(conn: Any) -> None:
    try:
        if not conn.closed:
            await conn.close()
    finally:
        _finish(conn)


def _is_open(conn: Any) -> bool:
    """Whether libpq still holds the socket (``closed`` is also True for a lost one)."""
    try:
        return int(conn.pgconn.socket) >= 0
    except Exception:  # OperationalError: "the connection is closed" or "... is lost"
        return False


def _remote(conn: Any) -> list[str]:
    info = conn.info
    return [f"{info.host}:{info.port}"]


def _alive(conn: Any) -> bool:
    """The socket behind libpq, polled: readable on an idle session means the server left."""
    return not conn.closed and socket_idle_and_open(conn)


CONNECTION = Kind(
    "psycopg.Connection",
    "psycopg",
    close=_close,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)
# An async scope awaits close(); a sync scope (the loop that made it is gone) finishes it.
ASYNC_CONNECTION = Kind(
    "psycopg.AsyncConnection",
    "psycopg",
    close=_finish,
    aclose=_aclose,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


# A connect that fails raises an error whose traceback holds psycopg's connect() frame,
# whose locals hold that error again (a reference cycle) and the half-open libpq
# connection: after a timeout its socket stays open, and the server still sees the client,
# until the cyclic GC runs. Clearing that one frame's locals breaks the cycle, so the socket
# is freed as soon as the attempt is dropped, without a collection.
_CONNECT_MODULES = frozenset({"psycopg.connection", "psycopg.connection_async"})


def _release_failed_attempt(exc: BaseException) -> None:
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "connect" and frame.f_globals.get("__name__") in (
            _CONNECT_MODULES
        ):
            try:  # noqa: SIM105  (contextlib would be one more import when decorating)
                frame.clear()
            except RuntimeError:  # still executing: not ours to clear
                pass
        tb = tb.tb_next


def _connect(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        return wrapped(*args, **kwargs)
    except Exception as exc:
        _release_failed_attempt(exc)
        raise


async def _aconnect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    try:
        return await wrapped(*args, **kwargs)
    except Exception as exc:
        _release_failed_attempt(exc)
        raise


def patch_psycopg(psycopg: ModuleType) -> None:
    import wrapt
    from psycopg import connection, connection_async

    wrapt.wrap_function_wrapper(connection, "Connection.__init__", tracker("psycopg", CONNECTION))
    wrapt.wrap_function_wrapper(
        connection_async, "AsyncConnection.__init__", tracker("psycopg", ASYNC_CONNECTION)
    )
    # psycopg.connect is Connection.connect bound at import: wrap both names. A name
    # imported before lambda_conn patched psycopg keeps the unwrapped one.
    wrapt.wrap_function_wrapper(connection, "Connection.connect", _connect)
    wrapt.wrap_function_wrapper(psycopg, "connect", _connect)
    wrapt.wrap_function_wrapper(connection_async, "AsyncConnection.connect", _aconnect)
    register_kind(connection.Connection, CONNECTION)
    register_kind(connection_async.AsyncConnection, ASYNC_CONNECTION)


# --------------------------------------------------------------------------- pools

# Every connection a pool makes, so that closing a scope-owned pool closes the ones that
# are checked out too (the pool itself only knows its idle ones).
_CONNS = "_lambda_conn_connections"


def _remember(pool: Any, conn: Any) -> Any:
    conns = pool.__dict__.get(_CONNS)
    if conns is None:
        import weakref

        conns = pool.__dict__[_CONNS] = weakref.WeakSet()
    conns.add(conn)
    return conn


def _connect_for_pool(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    with untracked():  # the pool owns it, even when it connects in the handler's thread
        conn = wrapped(*args, **kwargs)
    return _remember(instance, conn)


async def _aconnect_for_pool(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    # Worker tasks of an AsyncConnectionPool copy the context they were created in, so
    # without this a pool opened inside a scope would hand its connections to the scope.
    with untracked():
        conn = await wrapped(*args, **kwargs)
    return _remember(instance, conn)


def _pool_connections(pool: Any) -> list[Any]:
    return list(pool.__dict__.get(_CONNS, ()))


def _close_pool(pool: Any) -> None:
    try:
        pool.close()  # stops the workers, closes the idle connections
    finally:
        for conn in _pool_connections(pool):
            _close(conn)  # and the ones still checked out


async def _aclose_pool(pool: Any) -> None:
    try:
        await pool.close()
    finally:
        for conn in _pool_connections(pool):
            await _aclose(conn)


def _pool_is_open(pool: Any) -> bool:
    return not pool.closed or any(_is_open(conn) for conn in _pool_connections(pool))


def _pool_remote(pool: Any) -> list[str]:
    for conn in _pool_connections(pool):
        if _is_open(conn):
            return _remote(conn)
    return [f"pool {pool.name!r}"]


POOL = Kind(
    "psycopg_pool.ConnectionPool",
    "psycopg",
    close=_close_pool,
    is_open=_pool_is_open,
    remote=_pool_remote,
    alive=reconnects,  # the pool checks its connections
)
ASYNC_POOL = Kind(
    "psycopg_pool.AsyncConnectionPool",
    "psycopg",
    close=None,  # stopping its worker tasks needs the event loop
    aclose=_aclose_pool,
    is_open=_pool_is_open,
    remote=_pool_remote,
    alive=reconnects,
)


def patch_psycopg_pool(psycopg_pool: ModuleType) -> None:
    import wrapt
    from psycopg_pool import pool, pool_async

    wrapt.wrap_function_wrapper(pool, "ConnectionPool.__init__", tracker("psycopg", POOL))
    wrapt.wrap_function_wrapper(pool, "ConnectionPool._connect", _connect_for_pool)
    wrapt.wrap_function_wrapper(
        pool_async, "AsyncConnectionPool.__init__", tracker("psycopg", ASYNC_POOL)
    )
    wrapt.wrap_function_wrapper(pool_async, "AsyncConnectionPool._connect", _aconnect_for_pool)
    register_kind(pool.ConnectionPool, POOL)
    register_kind(pool_async.AsyncConnectionPool, ASYNC_POOL)


# --------------------------------------------------------------------------- statements

SERVER_PREPARED = "server-side prepared statement (psycopg prepare_threshold)"


def _text(query: Any, cursor: Any) -> Any:
    if isinstance(query, (str, bytes)):
        return query
    try:
        return str(query.as_string(cursor))  # sql.SQL / sql.Composed
    except Exception:
        return None


def _checked_execute(check: Any) -> Any:
    def execute(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        conn = instance.connection
        check.statement(conn, _text(args[0] if args else kwargs.get("query"), instance))
        if getattr(instance, "_withhold", False):
            check.found(conn, "cursor WITH HOLD")
        result = wrapped(*args, **kwargs)
        # psycopg prepared a statement on the server (prepare_threshold runs of it).
        if getattr(getattr(conn, "_prepared", None), "_names", None):
            check.found(conn, SERVER_PREPARED)
        return result

    return execute


def observe_statements(psycopg: ModuleType, check: Any) -> None:
    """``Cursor.execute``/``executemany`` (``Connection.execute`` goes through them) and the
    server-side cursor's; after each, whether psycopg server-prepared a statement."""
    import wrapt

    wrapper = _checked_execute(check)
    for cls in (psycopg.Cursor, psycopg.ServerCursor):
        for method in ("execute", "executemany"):
            if method in vars(cls):
                wrapt.wrap_function_wrapper(cls, method, wrapper)


INTEGRATION = Integration(
    "psycopg",
    hooks={"psycopg": patch_psycopg, "psycopg_pool": patch_psycopg_pool},
    statements=Statements("postgresql", hooks={"psycopg": observe_statements}),
)
