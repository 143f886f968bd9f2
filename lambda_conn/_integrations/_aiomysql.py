"""aiomysql: every ``Connection`` built in a scope is closed with COM_QUIT at its end, and so
is every ``Pool`` built in it.

aiomysql's own ``close()`` drops the socket without COM_QUIT (the server counts an aborted
client); ``ensure_closed()`` says goodbye first but needs the event loop. In a sync scope,
or once the loop is gone (``asyncio.run()`` in a sync handler), COM_QUIT is written
straight to the socket, which is then closed directly.

A connection a pool makes belongs to the pool: a module-level pool that grows during an
invocation keeps its connections.
"""

from __future__ import annotations

from lambda_conn._integrations._asyncio_socket import (
    close_outside_loop,
    loop_usable,
    own_loop_usable,
    raw_socket,
    send_now,
    socket_open,
)
from lambda_conn._integrations._track import pool_probes, tracker, untracked_await
from lambda_conn._kinds import Kind, register_kind
from lambda_conn._liveness import socket_idle_and_open
from lambda_conn._registry import Integration, Statements

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

CLOSE_TIMEOUT = 5.0  # a server that does not read must not hold the end of the invocation
COM_QUIT = b"\x01\x00\x00\x00\x01"  # payload length 1, sequence 0, command 0x01
# The socket and transport, kept past close() (which forgets the writer).
_SOCK = "_lambda_conn_socket"
_TRANSPORT = "_lambda_conn_transport"


def _socket(conn: Any) -> Any:
    writer = conn._writer
    if writer is not None:
        sock = conn.__dict__[_SOCK] = raw_socket(writer.transport)
        return sock
    return conn.__dict__.get(_SOCK)


def _close(conn: Any) -> None:
    sock = _socket(conn)
    writer = conn._writer
    transport = writer.transport if writer is not None else conn.__dict__.get(_TRANSPORT)
    if writer is not None:
        conn.__dict__[_TRANSPORT] = transport
        send_now(transport, COM_QUIT)
        import contextlib  # here: integrations load when decorating, close paths later

        with contextlib.suppress(RuntimeError):  # "Event loop is closed": closed below
            transport.close()
        conn._writer = conn._reader = None  # what close() records
    if transport is not None:
        close_outside_loop(transport, sock, conn._loop)


async def _aclose(conn: Any) -> None:
    import asyncio

    sock = _socket(conn)
    try:
        writer = conn._writer
        if writer is not None and writer.transport.get_write_buffer_size():
            # Writes still queued: COM_QUIT goes behind them, and drain() waits (bounded)
            # until they are out. A session the server already ended fails to say
            # goodbye, which is no error: the socket is closed below all the same.
            import contextlib

            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(conn.ensure_closed(), CLOSE_TIMEOUT)
        _close(conn)  # else COM_QUIT written at once, then the transport closed
        await asyncio.sleep(0)  # the transport closes its socket on the next turn
    finally:
        _close(conn)
        if socket_open(sock):
            sock.close()


def _is_open(conn: Any) -> bool:
    return socket_open(_socket(conn))


def _alive(conn: Any) -> bool:
    return (
        conn._writer is not None and loop_usable(conn._loop) and socket_idle_and_open(_socket(conn))
    )


def _remote(conn: Any) -> list[str]:
    if conn.unix_socket:
        return [str(conn.unix_socket)]
    return [f"{conn.host}:{conn.port}"]


CONNECTION = Kind(
    "aiomysql.Connection",
    "aiomysql",
    close=_close,
    aclose=_aclose,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


# --------------------------------------------------------------------------- pools


def _pool_connections(pool: Any) -> list[Any]:
    return [*pool._free, *pool._used]


def _close_pool(pool: Any) -> None:
    conns = _pool_connections(pool)
    pool.close()
    pool._free.clear()
    pool._used.clear()
    pool._closed = True  # what wait_closed() records once every connection is back
    for conn in conns:
        _close(conn)


async def _aclose_pool(pool: Any) -> None:
    conns = _pool_connections(pool)
    try:
        pool.close()
        for conn in conns:
            await _aclose(conn)  # COM_QUIT for each, checked out or not
        pool._free.clear()
        pool._used.clear()
        await pool.wait_closed()
    finally:
        _close_pool(pool)


_pool_is_open, _pool_remote = pool_probes(_pool_connections, _is_open, _remote)


POOL = Kind(
    "aiomysql.Pool",
    "aiomysql",
    close=_close_pool,
    aclose=_aclose_pool,
    is_open=_pool_is_open,
    remote=_pool_remote,
    alive=own_loop_usable,
)


def patch_aiomysql(aiomysql: ModuleType) -> None:
    import wrapt
    from aiomysql import connection, pool

    wrapt.wrap_function_wrapper(connection, "Connection.__init__", tracker("aiomysql", CONNECTION))
    wrapt.wrap_function_wrapper(pool, "Pool.__init__", tracker("aiomysql", POOL))
    wrapt.wrap_function_wrapper(pool, "Pool._fill_free_pool", untracked_await)
    register_kind(connection.Connection, CONNECTION)
    register_kind(pool.Pool, POOL)


def observe_statements(aiomysql: ModuleType, check: Any) -> None:
    """Every cursor (buffered or ``SSCursor``) and ``init_command`` sends its statement
    through ``Connection.query`` (a coroutine: checked when it is called); aiomysql has no
    binary-protocol prepared statements."""
    from aiomysql import connection

    check.method(connection.Connection, "query", sql=(0, "sql"))


INTEGRATION = Integration(
    "aiomysql",
    hooks={"aiomysql": patch_aiomysql},
    statements=Statements("mysql", hooks={"aiomysql": observe_statements}),
)
