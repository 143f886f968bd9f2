"""requests: a Session built in a scope is closed at its end, with its adapters' pools.

A module-level Session keeps its keep-alive connections (deliberate reuse); urllib3 under
it checks a pooled connection before reusing it, so a reused Session needs no probe.
"""

from __future__ import annotations

from lambda_conn._integrations._track import tracker
from lambda_conn._integrations._urllib3 import (
    close_pools,
    pool_manager_is_open,
    pool_manager_remote,
    pools_of,
)
from lambda_conn._kinds import Kind, reconnects, register_kind
from lambda_conn._registry import Integration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _managers_of(session: Any) -> list[Any]:
    managers = []
    for adapter in session.adapters.values():
        if getattr(adapter, "poolmanager", None) is not None:
            managers.append(adapter.poolmanager)
        managers.extend(getattr(adapter, "proxy_manager", {}).values())
    return managers


def _close_session(session: Any) -> None:
    pools = [pool for manager in _managers_of(session) for pool in pools_of(manager)]
    try:
        session.close()  # clears the managers: take their pools first
    finally:
        close_pools(pools)


REQUESTS_SESSION = Kind(
    "requests.Session",
    "requests",
    close=_close_session,
    is_open=lambda session: any(pool_manager_is_open(m) for m in _managers_of(session)),
    remote=lambda session: [r for m in _managers_of(session) for r in pool_manager_remote(m)],
    alive=reconnects,
)


def patch_requests(requests: ModuleType) -> None:
    import wrapt
    from requests import sessions as module

    wrapt.wrap_function_wrapper(module, "Session.__init__", tracker("requests", REQUESTS_SESSION))
    register_kind(module.Session, REQUESTS_SESSION)


INTEGRATION = Integration("requests", hooks={"requests": patch_requests})
