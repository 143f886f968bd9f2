"""aiohttp: a ``ClientSession`` or connector built in a scope is closed at its end.

The session is tracked once: the connector it makes for itself is closed through it. An
async scope awaits ``close()``. A sync scope, or a scope closing after ``asyncio.run()``
has returned, closes synchronously: aiohttp's own close on a closed loop only forgets its
connections (their sockets stay open), so then the sockets are closed directly.
"""

from __future__ import annotations

from lambda_conn._integrations._track import tracker
from lambda_conn._integrations._transports import close_transport
from lambda_conn._kinds import Kind, register_kind
from lambda_conn._registry import Integration

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import ModuleType
    from typing import Any


def _protocols(connector: Any) -> list[Any]:
    protos = [proto for conns in connector._conns.values() for proto, _ in conns]
    protos.extend(connector._acquired)
    return protos


def _transport_open(proto: Any) -> bool:
    transport = proto.transport
    return transport is not None and not transport.is_closing()


def _close_connector(connector: Any) -> None:
    if connector.closed:
        return
    if connector._loop.is_closed():  # its loop is gone: close the sockets ourselves
        for proto in _protocols(connector):
            close_transport(proto.transport)
    connector._close()  # closes the transports (on a live loop), marks it closed


async def _aclose_connector(connector: Any) -> None:
    if connector._loop.is_closed():
        _close_connector(connector)
    else:
        await connector.close()


def _connector_is_open(connector: Any) -> bool:
    return any(_transport_open(proto) for proto in _protocols(connector))


def _connector_remote(connector: Any) -> list[str]:
    remotes = [f"{key.host}:{key.port}" for key in connector._conns]
    for proto in connector._acquired:
        peer = proto.transport.get_extra_info("peername") if proto.transport else None
        if peer:
            remotes.append(f"{peer[0]}:{peer[1]}")
    return remotes


def _usable(connector: Any) -> bool:
    """A reused connector needs its own event loop alive (asyncio.run() makes a new one)."""
    return not connector.closed and not connector._loop.is_closed()


CONNECTOR = Kind(
    "aiohttp.TCPConnector",
    "aiohttp",
    close=_close_connector,
    aclose=_aclose_connector,
    is_open=_connector_is_open,
    remote=_connector_remote,
    alive=_usable,
)


def _owned_connector(session: Any) -> Any:
    connector = session._connector
    return connector if connector is not None and session._connector_owner else None


def _close_session(session: Any) -> None:
    connector = _owned_connector(session)
    if connector is not None:
        _close_connector(connector)
    session._connector = None


async def _aclose_session(session: Any) -> None:
    connector = _owned_connector(session)
    if connector is not None:
        await _aclose_connector(connector)
    session._connector = None


def _session_is_open(session: Any) -> bool:
    connector = _owned_connector(session)
    return connector is not None and _connector_is_open(connector)


def _session_remote(session: Any) -> list[str]:
    connector = _owned_connector(session)
    return _connector_remote(connector) if connector is not None else []


SESSION = Kind(
    "aiohttp.ClientSession",
    "aiohttp",
    close=_close_session,
    aclose=_aclose_session,
    is_open=_session_is_open,
    remote=_session_remote,
    alive=lambda session: session._connector is not None and _usable(session._connector),
)


def patch_aiohttp(aiohttp: ModuleType) -> None:
    import wrapt
    from aiohttp import client, connector

    wrapt.wrap_function_wrapper(
        client, "ClientSession.__init__", tracker("aiohttp", SESSION, whole=True)
    )
    wrapt.wrap_function_wrapper(connector, "BaseConnector.__init__", tracker("aiohttp", CONNECTOR))
    register_kind(client.ClientSession, SESSION)
    register_kind(connector.BaseConnector, CONNECTOR)


INTEGRATION = Integration("aiohttp", hooks={"aiohttp": patch_aiohttp})
