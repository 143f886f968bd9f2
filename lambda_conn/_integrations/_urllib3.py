"""urllib3: PoolManagers and connection pools built in a scope are closed at its end.

Pools that a PoolManager creates belong to it; only pools the handler builds itself are
tracked, so a module-level PoolManager (or requests Session) keeps its keep-alive
connections. urllib3 checks a pooled connection before reusing it, so a reused manager
needs no probe of ours.
"""

from __future__ import annotations

from lambda_conn._integrations._returned_http import close_connection
from lambda_conn._integrations._track import close_each, tracker
from lambda_conn._kinds import Kind, reconnects, register_kind
from lambda_conn._registry import Integration
from lambda_conn._scope import untracked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any

# urllib3 2.x PoolManager.clear() only drops its pools (they close when collected), and a
# pool does not know the connections it has handed out (an unread streamed response holds
# one). So each pool remembers every connection it makes, and closing closes them all.
# A pool a PoolManager made also records them in its manager's set, so closing a manager
# (or a requests Session) finds them without walking its pools.
_CONNS = "_lambda_conn_connections"
_MANAGER_CONNS = "_lambda_conn_manager_connections"


def connections_of(owner: Any) -> Any:
    """The WeakSet of connections a pool or a PoolManager has made (created on first use)."""
    conns = owner.__dict__.get(_CONNS)
    if conns is None:
        import weakref

        conns = owner.__dict__[_CONNS] = weakref.WeakSet()
    return conns


def _remember_connection(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    conn = wrapped(*args, **kwargs)
    connections_of(instance).add(conn)
    manager_conns = instance.__dict__.get(_MANAGER_CONNS)
    if manager_conns is not None:
        manager_conns.add(conn)
    return conn


def default_connections(poolmanager: ModuleType) -> None:
    """What a manager that never made a pool reads for its connections (connections_of
    sets the instance's own): a direct attribute read, not getattr's slow missing-name path.
    Set by every patch whose close reads it (urllib3's and requests'), whichever runs first."""
    poolmanager.PoolManager._lambda_conn_connections = None


def close_open(conns: Any) -> None:
    """Close the connections of ``conns`` that still hold a socket (lent to a response)."""
    close_each([conn for conn in list(conns or ()) if conn.sock is not None], close_connection)


def close_pool(pool: Any) -> None:
    try:
        pool.close()  # the idle connections
    finally:
        for conn in list(pool.__dict__.get(_CONNS, ())):
            close_connection(conn)  # and the ones still out with a response


def pool_is_open(pool: Any) -> bool:
    return any(conn.sock is not None for conn in pool.__dict__.get(_CONNS, ()))


def pools_of(manager: Any) -> list[Any]:
    container = getattr(manager.pools, "_container", None)
    return list(container.values()) if container is not None else []


def _close_pool_manager(manager: Any) -> None:
    manager.clear()  # closes its pools' idle connections
    close_open(manager.__dict__.get(_CONNS))  # and the ones out with a response


def close_pools(pools: list[Any]) -> None:
    close_each(pools, close_pool)


def pool_manager_is_open(manager: Any) -> bool:
    return any(conn.sock is not None for conn in manager.__dict__.get(_CONNS, ()))


def _pool_remote(pool: Any) -> str:
    return f"{pool.host}:{pool.port}"


def pool_manager_remote(manager: Any) -> list[str]:
    """Where the manager's still-open connections go (for the leak report)."""
    return [_pool_remote(pool) for pool in pools_of(manager) if pool_is_open(pool)]


POOL_MANAGER = Kind(
    "urllib3.PoolManager",
    "urllib3",
    close=_close_pool_manager,
    is_open=pool_manager_is_open,
    remote=pool_manager_remote,
    alive=reconnects,
)


def _new_pool_untracked(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    with untracked():  # the manager's pool, not the scope's
        pool = wrapped(*args, **kwargs)
    pool.__dict__[_MANAGER_CONNS] = connections_of(instance)
    return pool


CONNECTION_POOL = Kind(
    "urllib3.HTTPConnectionPool",
    "urllib3",
    close=close_pool,
    is_open=pool_is_open,
    remote=lambda pool: [_pool_remote(pool)],
    alive=lambda pool: pool.pool is not None,  # closed pools raise ClosedPoolError
)


def patch_urllib3(urllib3: ModuleType) -> None:
    import wrapt
    from urllib3 import connectionpool, poolmanager

    wrapt.wrap_function_wrapper(
        poolmanager, "PoolManager.__init__", tracker("urllib3", POOL_MANAGER)
    )
    wrapt.wrap_function_wrapper(poolmanager, "PoolManager._new_pool", _new_pool_untracked)
    register_kind(poolmanager.PoolManager, POOL_MANAGER)
    default_connections(poolmanager)
    wrapt.wrap_function_wrapper(
        connectionpool, "HTTPConnectionPool.__init__", tracker("urllib3", CONNECTION_POOL)
    )
    wrapt.wrap_function_wrapper(
        connectionpool, "HTTPConnectionPool._new_conn", _remember_connection
    )
    register_kind(connectionpool.HTTPConnectionPool, CONNECTION_POOL)


INTEGRATION = Integration("urllib3", hooks={"urllib3": patch_urllib3})
