"""httpx: ``Client`` and ``AsyncClient`` built in a scope are closed at its end.

httpcore checks a pooled connection before reusing it; a closed client refuses requests,
so that is what a reused one is probed for.
"""

from __future__ import annotations

from lambda_conn._integrations._light import httpx_closed
from lambda_conn._integrations._track import tracker
from lambda_conn._kinds import Kind, register_kind
from lambda_conn._registry import Integration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


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


def _close_httpx(client: Any) -> None:
    try:
        client.close()
    finally:
        httpx_closed(client)


HTTPX_CLIENT = Kind(
    "httpx.Client",
    "httpx",
    close=_close_httpx,
    is_open=_httpx_is_open,
    remote=_httpx_remote,
    alive=lambda client: not client.is_closed,
)


async def _aclose_httpx(client: Any) -> None:
    try:
        await client.aclose()
    finally:
        httpx_closed(client)


HTTPX_ASYNC_CLIENT = Kind(
    "httpx.AsyncClient",
    "httpx",
    close=None,
    aclose=_aclose_httpx,
    is_open=_httpx_is_open,
    remote=_httpx_remote,
    alive=lambda client: not client.is_closed,
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


INTEGRATION = Integration("httpx", hooks={"httpx": patch_httpx})
