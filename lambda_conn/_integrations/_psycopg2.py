"""psycopg2: every connection made in a scope is closed at its end, and so is every pool
(``psycopg2.pool``) built in it, with the connections it has handed out.

psycopg2's ``connection`` is a C type whose ``__init__`` cannot be wrapped, so the hook is
``psycopg2._connect``, which ``psycopg2.connect`` looks up at every call: connections are
tracked however ``connect`` was imported, whatever ``connection_factory`` makes them.
``close()`` ends with libpq's ``PQfinish``, which sends Terminate (no "unexpected EOF" in
the server log, even inside a transaction) and frees the socket, also for a connection
psycopg2 already marked broken.

A connection a pool makes belongs to the pool: a module-level pool that grows during an
invocation keeps its connections.
"""

from __future__ import annotations

from lambda_conn._integrations._track import pool_probes, tracker, untracked_call
from lambda_conn._kinds import Kind, reconnects, register_kind
from lambda_conn._liveness import socket_idle_and_open
from lambda_conn._registry import Integration
from lambda_conn._scope import _current

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _close(conn: Any) -> None:
    conn.close()  # idempotent; also finishes a connection marked broken (closed == 2)


def _is_open(conn: Any) -> bool:
    return bool(conn.closed != 1)  # 0 open; 2 broken, libpq still holds the socket until close()


def _alive(conn: Any) -> bool:
    return bool(conn.closed == 0) and socket_idle_and_open(conn)


def _remote(conn: Any) -> list[str]:
    info = conn.info
    return [f"{info.host}:{info.port}"]


CONNECTION = Kind(
    "psycopg2.connection",
    "psycopg2",
    close=_close,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


def _track_connect(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    conn = wrapped(*args, **kwargs)
    scope = _current.get()
    if scope is not None and scope.tracks("psycopg2"):
        scope.register(conn, CONNECTION)
    return conn


# --------------------------------------------------------------------------- pools


def _pool_connections(pool: Any) -> list[Any]:
    return [*pool._pool, *pool._used.values()]


def _close_pool(pool: Any) -> None:
    if not pool.closed:
        pool.closeall()  # the idle connections and the ones handed out


_pool_is_open, _pool_remote = pool_probes(_pool_connections, _is_open, _remote)


POOL = Kind(
    "psycopg2.pool.AbstractConnectionPool",
    "psycopg2",
    close=_close_pool,
    is_open=_pool_is_open,
    remote=_pool_remote,
    alive=reconnects,
)


def patch_psycopg2(psycopg2: ModuleType) -> None:
    import wrapt

    wrapt.wrap_function_wrapper(psycopg2, "_connect", _track_connect)
    register_kind(psycopg2.extensions.connection, CONNECTION)


def patch_psycopg2_pool(pool: ModuleType) -> None:
    import wrapt

    wrapt.wrap_function_wrapper(pool, "AbstractConnectionPool.__init__", tracker("psycopg2", POOL))
    wrapt.wrap_function_wrapper(pool, "AbstractConnectionPool._connect", untracked_call)
    register_kind(pool.AbstractConnectionPool, POOL)


INTEGRATION = Integration(
    "psycopg2", hooks={"psycopg2": patch_psycopg2, "psycopg2.pool": patch_psycopg2_pool}
)
