"""HTTP clients: requests Sessions, urllib3 PoolManagers and pools, httpx clients.

Pools that a PoolManager creates belong to it; only pools the handler builds itself are
tracked, so a module-level PoolManager or Session keeps its keep-alive connections.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from lambda_conn._integrations._track import tracker
from lambda_conn._kinds import Kind, register_kind
from lambda_conn._scope import untracked

# urllib3 2.x PoolManager.clear() only drops its pools (they close when collected), and a
# pool does not know the connections it has handed out (an unread streamed response holds
# one). So each pool remembers every connection it makes, and closing closes them all.
_CONNS = "_lambda_conn_connections"


def _remember_connection(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    conn = wrapped(*args, **kwargs)
    conns = instance.__dict__.get(_CONNS)
    if conns is None:
        import weakref

        conns = instance.__dict__[_CONNS] = weakref.WeakSet()
    conns.add(conn)
    return conn


def _close_pool(pool: Any) -> None:
    try:
        pool.close()  # the idle connections
    finally:
        for conn in list(pool.__dict__.get(_CONNS, ())):
            conn.close()  # and the ones still out with a response


def _pool_is_open(pool: Any) -> bool:
    return any(conn.sock is not None for conn in pool.__dict__.get(_CONNS, ()))


def _pools_of(manager: Any) -> list[Any]:
    container = getattr(manager.pools, "_container", None)
    return list(container.values()) if container is not None else []


def _close_pool_manager(manager: Any) -> None:
    pools = _pools_of(manager)
    manager.clear()
    _close_pools(pools)


def _close_pools(pools: list[Any]) -> None:
    errors = []
    for pool in pools:
        try:
            _close_pool(pool)
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


def _pool_manager_is_open(manager: Any) -> bool:
    return any(_pool_is_open(pool) for pool in _pools_of(manager))


def _managers_of(session: Any) -> list[Any]:
    managers = []
    for adapter in session.adapters.values():
        if getattr(adapter, "poolmanager", None) is not None:
            managers.append(adapter.poolmanager)
        managers.extend(getattr(adapter, "proxy_manager", {}).values())
    return managers


def _close_session(session: Any) -> None:
    pools = [pool for manager in _managers_of(session) for pool in _pools_of(manager)]
    try:
        session.close()  # clears the managers: take their pools first
    finally:
        _close_pools(pools)


def _pool_remote(pool: Any) -> str:
    return f"{pool.host}:{pool.port}"


def _pool_manager_remote(manager: Any) -> list[str]:
    """Where the manager's still-open connections go (for the leak report)."""
    return [_pool_remote(pool) for pool in _pools_of(manager) if _pool_is_open(pool)]


REQUESTS_SESSION = Kind(
    "requests.Session",
    "requests",
    close=_close_session,
    is_open=lambda session: any(_pool_manager_is_open(m) for m in _managers_of(session)),
    remote=lambda session: [r for m in _managers_of(session) for r in _pool_manager_remote(m)],
)


def patch_requests(requests: ModuleType) -> None:
    import wrapt
    from requests import sessions as module

    wrapt.wrap_function_wrapper(module, "Session.__init__", tracker("requests", REQUESTS_SESSION))
    register_kind(module.Session, REQUESTS_SESSION)


POOL_MANAGER = Kind(
    "urllib3.PoolManager",
    "urllib3",
    close=_close_pool_manager,
    is_open=_pool_manager_is_open,
    remote=_pool_manager_remote,
)


def _new_pool_untracked(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    with untracked():
        return wrapped(*args, **kwargs)


CONNECTION_POOL = Kind(
    "urllib3.HTTPConnectionPool",
    "urllib3",
    close=_close_pool,
    is_open=_pool_is_open,
    remote=lambda pool: [_pool_remote(pool)],
)


def patch_urllib3(urllib3: ModuleType) -> None:
    import wrapt
    from urllib3 import connectionpool, poolmanager

    wrapt.wrap_function_wrapper(
        poolmanager, "PoolManager.__init__", tracker("urllib3", POOL_MANAGER)
    )
    wrapt.wrap_function_wrapper(poolmanager, "PoolManager._new_pool", _new_pool_untracked)
    register_kind(poolmanager.PoolManager, POOL_MANAGER)
    wrapt.wrap_function_wrapper(
        connectionpool, "HTTPConnectionPool.__init__", tracker("urllib3", CONNECTION_POOL)
    )
    wrapt.wrap_function_wrapper(
        connectionpool, "HTTPConnectionPool._new_conn", _remember_connection
    )
    register_kind(connectionpool.HTTPConnectionPool, CONNECTION_POOL)


def _httpx_is_open(client: Any) -> bool:
    # UNOPENED clients hold no connection yet; CLOSED ones none any more.
    return str(client._state.name) == "OPENED"


def _httpx_remote(client: Any) -> list[str]:
    """The origins of the connections in the client's pool (httpcore's, when it is one)."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    remotes = []
    for conn in getattr(pool, "connections", ()):
        origin = getattr(conn, "_origin", None)
        if origin is not None:
            remotes.append(f"{origin.host.decode('ascii', 'replace')}:{origin.port}")
    return remotes


HTTPX_CLIENT = Kind(
    "httpx.Client",
    "httpx",
    close=lambda c: c.close(),
    is_open=_httpx_is_open,
    remote=_httpx_remote,
)


async def _aclose_httpx(client: Any) -> None:
    await client.aclose()


HTTPX_ASYNC_CLIENT = Kind(
    "httpx.AsyncClient",
    "httpx",
    close=None,
    aclose=_aclose_httpx,
    is_open=_httpx_is_open,
    remote=_httpx_remote,
)


def patch_httpx(httpx: ModuleType) -> None:
    import wrapt
    from httpx import _client as module

    wrapt.wrap_function_wrapper(module, "Client.__init__", tracker("httpx", HTTPX_CLIENT))
    wrapt.wrap_function_wrapper(
        module, "AsyncClient.__init__", tracker("httpx", HTTPX_ASYNC_CLIENT)
    )
    register_kind(module.Client, HTTPX_CLIENT)
    register_kind(module.AsyncClient, HTTPX_ASYNC_CLIENT)
