"""mysql-connector-python: every ``MySQLConnection`` built in a scope is closed with
COM_QUIT at its end.

Its ``close()`` skips COM_QUIT, silently, while a result is unread ("Unread result
found"), so the server would count an aborted client: the scope drops the unread result
first, then closes. A connection a ``MySQLConnectionPool`` makes belongs to the pool
(``connect(pool_name=...)`` keeps its pools for the life of the process).
"""

from __future__ import annotations

from lambda_conn._integrations._track import close_each, pool_probes, tracker
from lambda_conn._kinds import Kind, reconnects, register_kind
from lambda_conn._liveness import socket_idle_and_open
from lambda_conn._registry import Integration, Statements
from lambda_conn._scope import untracked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _socket(cnx: Any) -> Any:
    network = cnx._socket
    return network.sock if network is not None else None


def _is_open(cnx: Any) -> bool:
    sock = _socket(cnx)
    try:
        return sock is not None and sock.fileno() >= 0
    except (OSError, ValueError):
        return False


def _close(cnx: Any) -> None:
    if not _is_open(cnx):
        return
    if cnx.unread_result:
        cnx.unread_result = False  # else close() drops the socket without COM_QUIT
    cnx.close()


def _alive(cnx: Any) -> bool:
    return _is_open(cnx) and socket_idle_and_open(_socket(cnx))


def _remote(cnx: Any) -> list[str]:
    if cnx.unix_socket:
        return [str(cnx.unix_socket)]
    return [f"{cnx.server_host}:{cnx.server_port}"]


CONNECTION = Kind(
    "mysql.connector.MySQLConnection",
    "mysql-connector",
    close=_close,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


def _pools_own(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    with untracked():
        return wrapped(*args, **kwargs)


# A MySQLConnectionPool knows only the connections in its queue, not the ones it has
# handed out: each pool remembers every connection it adds, so closing a pool built during
# an invocation closes those too (with COM_QUIT, as any connection of the scope).
_MADE = "_lambda_conn_connections"


def _pool_connections(pool: Any) -> list[Any]:
    return pool.__dict__.get(_MADE, [])  # type: ignore[no-any-return]


def _remember_added(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    with untracked():  # the pool's connection, not the scope's
        result = wrapped(*args, **kwargs)
    queued = instance._cnx_queue.queue
    if queued:
        made = instance.__dict__.setdefault(_MADE, [])
        if not any(conn is queued[-1] for conn in made):
            made.append(queued[-1])
    return result


def _close_pool(pool: Any) -> None:
    queue = pool._cnx_queue
    with queue.mutex:  # what it holds now belongs to no one: closed below
        queue.queue.clear()
    close_each(_pool_connections(pool), _close)


_pool_is_open, _pool_remote = pool_probes(_pool_connections, _is_open, _remote)

POOL = Kind(
    "mysql.connector.pooling.MySQLConnectionPool",
    "mysql-connector",
    close=_close_pool,
    is_open=_pool_is_open,
    remote=_pool_remote,
    alive=reconnects,
)


# The C extension's CMySQLConnection (what connect() returns when the extension loads):
# its close() drops an unread result itself, then mysql_close sends COM_QUIT. Its handle
# exposes no socket to poll, so a reused one is probed with mysql_ping: one round trip.


def _c_is_open(cnx: Any) -> bool:
    handle = cnx._cmysql
    return handle is not None and bool(handle.connected())


def _c_close(cnx: Any) -> None:
    if _c_is_open(cnx):
        cnx.close()


def _c_alive(cnx: Any) -> bool:
    if not _c_is_open(cnx) or cnx.unread_result:
        return False
    try:
        return bool(cnx._cmysql.ping())
    except Exception:  # the extension's MySQLInterfaceError: the server has gone
        return False


C_CONNECTION = Kind(
    "mysql.connector.CMySQLConnection",
    "mysql-connector",
    close=_c_close,
    is_open=_c_is_open,
    remote=_remote,
    alive=_c_alive,
)


def patch_mysql_connector(connector: ModuleType) -> None:
    import sys

    import wrapt
    from mysql.connector import connection, pooling

    # Loaded by mysql.connector's own __init__ when the extension imports; when it does not
    # (here: it needs an OpenSSL the system lacks), connect() returns MySQLConnection.
    cext = getattr(sys.modules.get("mysql.connector.connection_cext"), "CMySQLConnection", None)
    if cext is not None:
        wrapt.wrap_function_wrapper(cext, "__init__", tracker("mysql-connector", C_CONNECTION))
        register_kind(cext, C_CONNECTION)

    wrapt.wrap_function_wrapper(
        connection, "MySQLConnection.__init__", tracker("mysql-connector", CONNECTION)
    )
    register_kind(connection.MySQLConnection, CONNECTION)
    # A pool built during an invocation is the scope's, with what it made; a named pool
    # (connect(pool_name=...)) lives in a process-wide registry: deliberate reuse.
    wrapt.wrap_function_wrapper(
        pooling, "MySQLConnectionPool.__init__", tracker("mysql-connector", POOL, whole=True)
    )
    wrapt.wrap_function_wrapper(pooling, "MySQLConnectionPool.set_config", _pools_own)
    wrapt.wrap_function_wrapper(pooling, "MySQLConnectionPool.add_connection", _remember_added)
    wrapt.wrap_function_wrapper(pooling, "_get_pooled_connection", _pools_own)
    register_kind(pooling.MySQLConnectionPool, POOL)


async def _apools_own(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    with untracked():
        return await wrapped(*args, **kwargs)


# --------------------------------------------------------------------------- asyncio
# mysql.connector.aio: the same protocol over an asyncio stream. Its ``close()`` needs the
# loop; in a sync scope (``asyncio.run()`` in a sync handler) COM_QUIT is written straight
# to the socket, which is then closed, as for aiomysql.

COM_QUIT = b"\x01\x00\x00\x00\x01"  # payload length 1, sequence 0, command 0x01
_AIO_PARTS = "_lambda_conn_stream"  # (transport, socket, loop), kept past close()


def _aio_parts(cnx: Any) -> tuple[Any, Any, Any] | None:
    writer = getattr(cnx._socket, "_writer", None)
    if writer is not None and writer.transport is not None:
        from lambda_conn._integrations._asyncio_socket import raw_socket

        transport = writer.transport
        parts = (transport, raw_socket(transport), transport._loop)
        cnx.__dict__[_AIO_PARTS] = parts
        return parts
    return cnx.__dict__.get(_AIO_PARTS)  # type: ignore[no-any-return]


def _aio_is_open(cnx: Any) -> bool:
    from lambda_conn._integrations._asyncio_socket import socket_open

    parts = _aio_parts(cnx)
    return parts is not None and socket_open(parts[1])


def _aio_close(cnx: Any) -> None:
    from lambda_conn._integrations._asyncio_socket import close_outside_loop, send_now

    parts = _aio_parts(cnx)
    if parts is None:
        return
    transport, sock, loop = parts
    if cnx._socket is not None:
        send_now(transport, COM_QUIT)
        import contextlib  # here: integrations load when decorating, close paths later

        with contextlib.suppress(RuntimeError):  # "Event loop is closed": closed below
            transport.close()
        cnx._socket = None  # what close() records
    if loop is not None:
        close_outside_loop(transport, sock, loop)


async def _aio_aclose(cnx: Any) -> None:
    import asyncio

    _aio_parts(cnx)  # remember the socket: close() forgets it
    if cnx._socket is not None:
        if cnx.unread_result:
            cnx.unread_result = False  # else close() skips COM_QUIT, as the sync one does
        import contextlib

        # COM_QUIT, then the stream closed; a session already gone fails to say goodbye,
        # which is no error: the socket is closed below all the same.
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(cnx.close(), 5.0)
    _aio_close(cnx)


def _aio_alive(cnx: Any) -> bool:
    from lambda_conn._integrations._asyncio_socket import loop_usable, socket_open

    parts = _aio_parts(cnx)
    return (
        cnx._socket is not None
        and parts is not None
        and loop_usable(parts[2])
        and socket_open(parts[1])
        and socket_idle_and_open(parts[1])
    )


AIO_CONNECTION = Kind(
    "mysql.connector.aio.MySQLConnection",
    "mysql-connector",
    close=_aio_close,
    aclose=_aio_aclose,
    is_open=_aio_is_open,
    remote=_remote,
    alive=_aio_alive,
)


def patch_mysql_connector_aio(aio: ModuleType) -> None:
    import wrapt
    from mysql.connector.aio import connection, pooling

    wrapt.wrap_function_wrapper(
        connection, "MySQLConnection.__init__", tracker("mysql-connector", AIO_CONNECTION)
    )
    for method in ("initialize_pool", "set_config", "add_connection"):
        wrapt.wrap_function_wrapper(pooling, f"MySQLConnectionPool.{method}", _apools_own)
    register_kind(connection.MySQLConnection, AIO_CONNECTION)


BINARY_PREPARE = "binary-protocol prepared statement (COM_STMT_PREPARE)"


def _observe(connection_class: type, check: Any) -> None:
    # Text statements (cursors, executemany's batched INSERT, multi-statement runs), and
    # the binary protocol's prepare (``cursor(prepared=True)``), which pins whatever it says.
    check.method(connection_class, "cmd_query", sql=(0, "query"))
    check.method(connection_class, "cmd_query_iter", sql=(0, "statements"))
    check.method(connection_class, "cmd_stmt_prepare", statement_class=BINARY_PREPARE)


def observe_statements(connector: ModuleType, check: Any) -> None:
    import sys

    from mysql.connector import connection

    _observe(connection.MySQLConnection, check)
    # The C extension's class, where it loaded (mysql.connector imports it when it can).
    cext = getattr(sys.modules.get("mysql.connector.connection_cext"), "CMySQLConnection", None)
    if cext is not None:
        _observe(cext, check)


def observe_aio_statements(aio: ModuleType, check: Any) -> None:
    from mysql.connector.aio import connection

    _observe(connection.MySQLConnection, check)


INTEGRATION = Integration(
    "mysql-connector",
    hooks={
        "mysql.connector": patch_mysql_connector,
        "mysql.connector.aio": patch_mysql_connector_aio,
    },
    statements=Statements(
        "mysql",
        hooks={
            "mysql.connector": observe_statements,
            "mysql.connector.aio": observe_aio_statements,
        },
    ),
)
