"""boto3 / botocore: a client built during the invocation is closed at its end.

Each botocore client has its own urllib3 PoolManager (``client._endpoint.http_session``):
a client built per invocation and kept keeps its keep-alive sockets. The client is tracked
once (what ``create_client`` builds inside, its PoolManager, is closed through it), with the
connections still out with an unread ``StreamingBody``. A client built at module level is
never touched and keeps its pool. urllib3 checks a pooled connection before reusing it, so
a reused client needs no probe of ours.
"""

from __future__ import annotations

from lambda_conn._integrations._track import result_tracker
from lambda_conn._integrations._urllib3 import _CONNS, close_open
from lambda_conn._kinds import Kind, reconnects, register_kind
from lambda_conn._registry import Integration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _managers(client: Any) -> list[Any]:
    http = getattr(client._endpoint, "http_session", None)
    manager = getattr(http, "_manager", None)
    managers = [manager] if manager is not None else []
    managers.extend(getattr(http, "_proxy_managers", {}).values())
    return managers


def _close(client: Any) -> None:
    managers = _managers(client)
    client.close()  # clears its PoolManagers, closing their pools' idle connections
    for manager in managers:
        close_open(manager.__dict__.get(_CONNS))  # and those out with an unread body


def _is_open(client: Any) -> bool:
    return any(
        conn.sock is not None for m in _managers(client) for conn in m.__dict__.get(_CONNS, ())
    )


def _remote(client: Any) -> list[str]:
    from urllib.parse import urlsplit

    return [urlsplit(client._endpoint.host).netloc]


CLIENT = Kind(
    "botocore.client.BaseClient",
    "botocore",
    close=_close,
    is_open=_is_open,
    remote=_remote,
    alive=reconnects,
)


def patch_botocore(client_module: ModuleType) -> None:
    import wrapt

    wrapt.wrap_function_wrapper(
        client_module, "ClientCreator.create_client", result_tracker("botocore", CLIENT)
    )
    register_kind(client_module.BaseClient, CLIENT)


INTEGRATION = Integration("botocore", hooks={"botocore.client": patch_botocore})
