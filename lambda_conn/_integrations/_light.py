"""Closed means light: once a scope has closed a client, it drops what only an open
connection needs.

A handler that keeps a reference to every connection it opened (the habit lambda_conn
exists for) is protected from EMFILE by the close, but the closed objects still held a
TLS context and transports: about 0.8 MB each for a PyMySQL connection built with
PyMySQL's defaults or an httpx client, so a 128 MB function was killed for memory after
~116 invocations. What is dropped here is rebuilt or refused the way the client itself
does: a closed httpx client refuses to send ("the client has been closed"), and a closed
PyMySQL connection that reconnects (``ping(reconnect=True)``) gets an equal context back.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

_default_tls: Any = None  # PyMySQL's opportunistic TLS context, one for the process


def pymysql_closed(conn: Any) -> None:
    """Share the one context PyMySQL builds, per connection, when given no TLS options.

    PyMySQL 1.2 tries TLS by default with ``ssl.create_default_context()`` (the system CA
    store loaded: ~0.8 MB) and ``CERT_NONE``; every such context is the same, so a closed
    connection keeps the shared one, with which a reconnect is as before. A context from
    the user's own options (``ssl=``, ``ssl_ca=``...) is left alone.
    """
    global _default_tls
    if not getattr(conn, "ssl", False) or getattr(conn, "_ssl_required", True):
        return
    if _default_tls is None:
        _default_tls = conn._create_ssl_ctx({})
    conn.ctx = _default_tls
    conn._result = None  # the last result's rows: a cursor that reads them has its own


def httpx_closed(client: Any) -> None:
    """Swap a closed client's transports (their pools and TLS context) for one that
    refuses, as a closed client does before it ever reaches a transport."""
    if not client.is_closed:
        return
    import httpx

    closed: Any = _ClosedAsync() if isinstance(client, httpx.AsyncClient) else _Closed()
    client._transport = closed
    client._mounts = {
        pattern: None if t is None else closed for pattern, t in client._mounts.items()
    }


def _refuse(*args: object) -> NoReturn:
    raise RuntimeError("Cannot send a request, as the client has been closed.")


class _Closed:
    """The transport of a closed httpx.Client (httpx.BaseTransport's interface)."""

    __slots__ = ()
    handle_request = _refuse

    def close(self) -> None:
        """Already closed."""

    def __enter__(self) -> _Closed:
        _refuse()

    def __exit__(self, *exc: object) -> None:
        """Already closed."""


class _ClosedAsync:
    """The transport of a closed httpx.AsyncClient (httpx.AsyncBaseTransport's)."""

    __slots__ = ()

    async def handle_async_request(self, request: object) -> Any:
        _refuse()

    async def aclose(self) -> None:
        """Already closed."""

    async def __aenter__(self) -> _ClosedAsync:
        _refuse()

    async def __aexit__(self, *exc: object) -> None:
        """Already closed."""
