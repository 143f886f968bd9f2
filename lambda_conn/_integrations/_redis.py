"""redis-py: clients (``redis.Redis``, ``redis.asyncio.Redis``) and ``ConnectionPool``s
built in a scope are closed at its end.

A client is tracked once: the pool it makes for itself (``Redis(...)``, ``from_url``) is
disconnected through it, with the connections checked out of it. A client over a pool the
handler passed in (``connection_pool=``) leaves that pool alone, so a module-level pool
keeps its connections. redis-py checks a pooled connection before handing it out and
reconnects, so a reused client or pool needs no probe of ours.
"""

from __future__ import annotations

from lambda_conn._integrations._track import result_tracker, tracker
from lambda_conn._integrations._transports import close_transport
from lambda_conn._kinds import Kind, reconnects, register_kind
from lambda_conn._registry import Integration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _connections(pool: Any) -> list[Any]:
    return [*getattr(pool, "_available_connections", ()), *getattr(pool, "_in_use_connections", ())]


def _connected(conn: Any) -> bool:
    # sync connections hold a socket; asyncio ones a stream reader/writer pair
    return getattr(conn, "_sock", None) is not None or getattr(conn, "_writer", None) is not None


def _pool_is_open(pool: Any) -> bool:
    return any(_connected(conn) for conn in _connections(pool))


def _pool_remote(pool: Any) -> list[str]:
    kwargs = pool.connection_kwargs
    if kwargs.get("path"):
        return [str(kwargs["path"])]
    return [f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"]


def _owned_pool(client: Any) -> Any:
    return client.connection_pool if getattr(client, "auto_close_connection_pool", False) else None


def _client_is_open(client: Any) -> bool:
    single = getattr(client, "connection", None)
    if single is not None and _connected(single):
        return True
    pool = _owned_pool(client)
    return pool is not None and _pool_is_open(pool)


def _client_remote(client: Any) -> list[str]:
    return _pool_remote(client.connection_pool)


CLIENT = Kind(
    "redis.Redis",
    "redis",
    close=lambda client: client.close(),  # releases its connection; disconnects its own pool
    is_open=_client_is_open,
    remote=_client_remote,
    alive=reconnects,
)
POOL = Kind(
    "redis.ConnectionPool",
    "redis",
    close=lambda pool: pool.disconnect(),  # idle and checked-out connections
    is_open=_pool_is_open,
    remote=_pool_remote,
    alive=reconnects,
)


def _loop_gone(conn: Any) -> bool:
    writer = getattr(conn, "_writer", None)
    loop = getattr(writer, "_loop", None)
    return loop is not None and loop.is_closed()


def _drop_streams(pool: Any) -> None:
    """Close an asyncio pool's connections without awaiting: their loop may be gone
    (``asyncio.run()`` returned), where redis-py's own disconnect cannot run."""
    for conn in _connections(pool):
        writer = getattr(conn, "_writer", None)
        if writer is None:
            continue
        close_transport(writer.transport)
        conn._reader = conn._writer = None


def _close_async_client(client: Any) -> None:
    pool = _owned_pool(client)
    single = getattr(client, "connection", None)
    if single is not None and pool is None:
        return  # a single connection of a pool the handler passed in: the pool's
    if pool is not None:
        _drop_streams(pool)


def _async_alive(obj: Any) -> bool:
    """A reused asyncio client needs its connections' loop (asyncio.run() makes a new one)."""
    pool = getattr(obj, "connection_pool", obj)
    return not any(_loop_gone(conn) for conn in _connections(pool))


async def _aclose_client(client: Any) -> None:
    if _async_alive(client):
        await client.aclose()
    else:
        _close_async_client(client)


async def _aclose_pool(pool: Any) -> None:
    if _async_alive(pool):
        await pool.disconnect()
    else:
        _drop_streams(pool)


# An async scope awaits their close; a sync one (or one after the loop ended) closes the
# streams directly.
ASYNC_CLIENT = Kind(
    "redis.asyncio.Redis",
    "redis",
    close=_close_async_client,
    aclose=_aclose_client,
    is_open=_client_is_open,
    remote=_client_remote,
    alive=_async_alive,
)
ASYNC_POOL = Kind(
    "redis.asyncio.ConnectionPool",
    "redis",
    close=_drop_streams,
    aclose=_aclose_pool,
    is_open=_pool_is_open,
    remote=_pool_remote,
    alive=_async_alive,
)


def patch_redis(redis: ModuleType) -> None:
    import wrapt
    from redis import client, connection
    from redis.asyncio import client as aclient
    from redis.asyncio import connection as aconnection

    for module, name, kind, pool_module, pool_kind in (
        (client, "Redis", CLIENT, connection, POOL),
        (aclient, "Redis", ASYNC_CLIENT, aconnection, ASYNC_POOL),
    ):
        cls = getattr(module, name)
        wrapt.wrap_function_wrapper(cls, "__init__", tracker("redis", kind, whole=True))
        wrapt.wrap_function_wrapper(cls, "from_url", result_tracker("redis", kind))
        register_kind(cls, kind)
        pool_cls = pool_module.ConnectionPool
        wrapt.wrap_function_wrapper(pool_cls, "__init__", tracker("redis", pool_kind))
        register_kind(pool_cls, pool_kind)


INTEGRATION = Integration("redis", hooks={"redis": patch_redis})
