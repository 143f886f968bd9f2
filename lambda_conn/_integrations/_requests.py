"""requests: a Session built in a scope is closed at its end, with its adapters' pools.

A module-level Session keeps its keep-alive connections (deliberate reuse); urllib3 under
it checks a pooled connection before reusing it, so a reused Session needs no probe.
"""

from __future__ import annotations

from lambda_conn._integrations._track import tracker
from lambda_conn._integrations._urllib3 import (
    _CONNS,
    close_open,
    default_connections,
    pool_manager_is_open,
    pool_manager_remote,
)
from lambda_conn._kinds import SHUT, Kind, reconnects, register_kind
from lambda_conn._registry import Integration
from lambda_conn._scope import untracked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _adapter_managers(adapter: Any) -> list[Any]:
    """An adapter's PoolManager and the ProxyManagers it has made."""
    attrs = adapter.__dict__
    manager = attrs.get("poolmanager")
    managers = [manager] if manager is not None else []
    proxies = attrs.get("proxy_manager")
    if proxies:
        managers.extend(proxies.values())
    return managers


def _managers_of(session: Any) -> list[Any]:
    return [m for adapter in session.adapters.values() for m in _adapter_managers(adapter)]


def _close_session(session: Any) -> object:
    """``session.close()`` (each adapter's close clears its pool managers, closing their
    pools' idle connections), then the connections still out with an unread response.

    Written for the end of every invocation that built a Session, which should cost about
    what ``close()`` does: requests' ``Session.close()`` and ``HTTPAdapter.close()`` are
    each one loop, run here in the same pass (a subclass's own ``close()`` is called as it
    is), and every attribute is read directly: ``getattr()`` and ``__dict__`` take
    CPython's slow paths (a manager that never made a pool finds the class default None).
    """
    own_close = type(session).close is not _SESSION_CLOSE
    if own_close:
        session.close()
    for adapter in session.adapters.values():
        if own_close or type(adapter).close is not _ADAPTER_CLOSE:
            if not own_close:
                adapter.close()
            manager = getattr(adapter, "poolmanager", None)
            proxies = getattr(adapter, "proxy_manager", None)
            if manager is not None:
                close_open(getattr(manager, _CONNS, None))
        else:  # HTTPAdapter.close(), inline
            manager = adapter.poolmanager
            manager.clear()
            proxies = adapter.proxy_manager
            for proxy in proxies.values():
                proxy.clear()
            conns = manager._lambda_conn_connections
            if conns:  # made once the manager made a pool
                close_open(conns)
        if proxies:
            for proxy in proxies.values():
                close_open(getattr(proxy, _CONNS, None))
    return SHUT  # every close succeeded (close_open raises for one that failed)


def _session_is_open(session: Any) -> bool:
    return any(pool_manager_is_open(m) for m in _managers_of(session))


def _close_adapter(adapter: Any) -> object:
    """An adapter built in the invocation (``session.mount(..., HTTPAdapter(max_retries=3))``):
    its own ``close()``, then its managers' connections still out with a response."""
    adapter.close()
    for manager in _adapter_managers(adapter):
        close_open(manager.__dict__.get(_CONNS))
    return SHUT


HTTP_ADAPTER = Kind(
    "requests.HTTPAdapter",
    "requests",
    close=_close_adapter,
    is_open=lambda adapter: any(pool_manager_is_open(m) for m in _adapter_managers(adapter)),
    remote=lambda adapter: [r for m in _adapter_managers(adapter) for r in pool_manager_remote(m)],
    alive=reconnects,
)


def _proxy_manager_untracked(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    with untracked():  # the adapter's, made on its first proxied request: closed through it
        return wrapped(*args, **kwargs)


REQUESTS_SESSION = Kind(
    "requests.Session",
    "requests",
    close=_close_session,
    is_open=_session_is_open,
    remote=lambda session: [r for m in _managers_of(session) for r in pool_manager_remote(m)],
    alive=reconnects,
)


_SESSION_CLOSE: Any = None  # requests.Session.close, once requests is imported
_ADAPTER_CLOSE: Any = None  # requests.adapters.HTTPAdapter.close


def patch_requests(requests: ModuleType) -> None:
    global _SESSION_CLOSE, _ADAPTER_CLOSE
    import wrapt
    from requests import adapters
    from requests import sessions as module
    from urllib3 import poolmanager

    _SESSION_CLOSE = module.Session.close
    _ADAPTER_CLOSE = adapters.HTTPAdapter.close
    default_connections(poolmanager)  # the Session's close reads it, urllib3 patched or not

    # Tracked once: its adapters' PoolManagers are closed through the Session; an adapter
    # the handler builds is tracked itself, its PoolManager (and the ProxyManagers it makes
    # on its first proxied requests) through it.
    track = tracker("requests", REQUESTS_SESSION, whole=True)
    wrapt.wrap_function_wrapper(module, "Session.__init__", track)
    register_kind(module.Session, REQUESTS_SESSION)
    track_adapter = tracker("requests", HTTP_ADAPTER, whole=True)
    wrapt.wrap_function_wrapper(adapters, "HTTPAdapter.__init__", track_adapter)
    wrapt.wrap_function_wrapper(adapters, "HTTPAdapter.proxy_manager_for", _proxy_manager_untracked)
    register_kind(adapters.HTTPAdapter, HTTP_ADAPTER)


INTEGRATION = Integration("requests", hooks={"requests": patch_requests})
