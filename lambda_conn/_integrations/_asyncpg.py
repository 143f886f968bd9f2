"""asyncpg: every ``Connection`` built in a scope is closed at its end, and so is every
``Pool`` built in it.

An async scope awaits ``close()``: the Terminate message, then the server drops the
session (it logs no unexpected EOF, even inside a transaction). A sync scope, or a
connection whose event loop is gone (``asyncio.run()`` in a sync handler), gets
``terminate()``, which also sends Terminate before aborting the transport, and then its
socket closed directly, which the transport can no longer do without its loop.

A connection a pool makes belongs to the pool: a module-level pool that grows during an
invocation keeps its connections.
"""

from __future__ import annotations

from lambda_conn._integrations._asyncio_socket import (
    close_outside_loop,
    loop_usable,
    own_loop_usable,
    raw_socket,
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

# A graceful close waits for the server to hang up; one that does not answer (frozen,
# partitioned) must not hold the end of the invocation: then the connection is aborted.
CLOSE_TIMEOUT = 5.0


def _socket(conn: Any) -> Any:
    return raw_socket(conn._transport)


def _terminate(conn: Any) -> None:
    transport = conn._transport
    sock = raw_socket(transport)
    import contextlib  # here: integrations load when decorating, close paths later

    try:
        with contextlib.suppress(RuntimeError):  # "Event loop is closed": Terminate is sent
            conn.terminate()
    finally:
        close_outside_loop(transport, sock, conn._loop)


async def _aclose(conn: Any) -> None:
    """Terminate written at once (the server ends the session on reading it), the socket
    closed on the loop's next turn: asyncpg's own ``close()`` would also wait for the
    server to hang up, a round trip plus the backend's exit (~15 ms measured here) per
    invocation. Only with writes still queued does the graceful close run (bounded):
    aborting then would drop the Terminate queued behind them."""
    import asyncio

    transport = conn._transport
    try:
        if not conn.is_closed() and transport.get_write_buffer_size():
            await conn.close(timeout=CLOSE_TIMEOUT)
    finally:
        _terminate(conn)  # no-op once closed; aborts after a timeout or a cancellation
    await asyncio.sleep(0)  # the transport's scheduled close runs


def _is_open(conn: Any) -> bool:
    return socket_open(_socket(conn))


def _alive(conn: Any) -> bool:
    return not conn.is_closed() and loop_usable(conn._loop) and socket_idle_and_open(_socket(conn))


def _remote(conn: Any) -> list[str]:
    addr = conn._addr
    if isinstance(addr, tuple):
        return [f"{addr[0]}:{addr[1]}"]
    return [str(addr)]  # a unix socket path


CONNECTION = Kind(
    "asyncpg.Connection",
    "asyncpg",
    close=_terminate,
    aclose=_aclose,
    is_open=_is_open,
    remote=_remote,
    alive=_alive,
)


# --------------------------------------------------------------------------- pools


def _pool_connections(pool: Any) -> list[Any]:
    return [holder._con for holder in pool._holders if holder._con is not None]


def _terminate_pool(pool: Any) -> None:
    import contextlib

    conns = _pool_connections(pool)
    try:
        if pool._initialized:  # else terminate() raises; what it has opened is closed below
            with contextlib.suppress(RuntimeError):  # "Event loop is closed": see below
                pool.terminate()
    finally:
        for conn in conns:
            _terminate(conn)


async def _aclose_pool(pool: Any) -> None:
    import asyncio

    try:
        # close() waits until every acquired connection is released: one the handler kept
        # would hold the end of the invocation, so those pools are terminated instead.
        idle = not any(holder._in_use is not None for holder in pool._holders)
        if pool._initialized and not pool._closed and idle:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
    finally:
        _terminate_pool(pool)


_pool_is_open, _pool_remote = pool_probes(_pool_connections, _is_open, _remote)


POOL = Kind(
    "asyncpg.Pool",
    "asyncpg",
    close=_terminate_pool,
    aclose=_aclose_pool,
    is_open=_pool_is_open,
    remote=_pool_remote,
    alive=own_loop_usable,
)


def patch_asyncpg(asyncpg: ModuleType) -> None:
    import wrapt
    from asyncpg import connection, pool

    wrapt.wrap_function_wrapper(connection, "Connection.__init__", tracker("asyncpg", CONNECTION))
    wrapt.wrap_function_wrapper(pool, "Pool.__init__", tracker("asyncpg", POOL))
    wrapt.wrap_function_wrapper(pool, "Pool._get_new_connection", untracked_await)
    register_kind(connection.Connection, CONNECTION)
    register_kind(pool.Pool, POOL)


def observe_statements(asyncpg: ModuleType, check: Any) -> None:
    """Two ways in: ``Connection._get_statement``, where every statement run with the
    extended protocol is parsed (``fetch*``, ``execute`` with arguments, ``executemany``,
    ``prepare``, cursors, and asyncpg's own type introspection, which runs
    ``set_config('jit', 'off', false)`` on servers with JIT), and ``execute`` without
    arguments, the simple protocol (possibly several statements; the first is classified,
    as for the other clients). Both are coroutines: checked when called."""
    import wrapt
    from asyncpg import connection

    cls = connection.Connection
    check.method(cls, "_get_statement", sql=(0, "query"))

    def simple(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: Any) -> Any:
        if len(args) <= 1:  # execute(query): no arguments, so no _get_statement
            check.statement(instance, args[0] if args else kwargs.get("query"))
        return wrapped(*args, **kwargs)

    wrapt.wrap_function_wrapper(cls, "execute", simple)


INTEGRATION = Integration(
    "asyncpg",
    hooks={"asyncpg": patch_asyncpg},
    statements=Statements("postgresql", hooks={"asyncpg": observe_statements}),
)
