"""Streamed HTTP responses returned from a scope (see ``lambda_conn._returned``), and the
clear error for one the scope had to cut.

requests and urllib3: the response's connection leaves its pool's and PoolManager's
bookkeeping, so closing the Session or PoolManager spares it, and its pool is closed, so
urllib3 closes the connection itself once the body has been read or the response closed. httpx: the
response's Client leaves the scope and is closed when the response is.
"""

from __future__ import annotations

import functools

from lambda_conn._errors import ClosedByScopeError
from lambda_conn._returned import Hold, subclass, tracked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from lambda_conn._returned import Need
    from lambda_conn._scope import Scope

_UNREAD = "_HTTPConnection__response"  # http.client's response, until the next request


# --------------------------------------------------------------------------- requests, urllib3


def requests_response(response: Any) -> Need | None:
    if response._content_consumed or response.raw is None:
        return None
    return _urllib3_need(response.raw, "requests.Response")


def urllib3_response(response: Any) -> Need | None:
    return _urllib3_need(response, "urllib3.HTTPResponse")


def _urllib3_need(response: Any, name: str) -> Need | None:
    conn, pool = getattr(response, "_connection", None), getattr(response, "_pool", None)
    if conn is None or pool is None or conn.sock is None:
        return None  # preloaded, read in full, or released: nothing to keep
    return response, lambda scope: _hold_connection(scope, pool, conn, name)


def _hold_connection(scope: Scope, pool: Any, conn: Any, name: str) -> Hold | None:
    from lambda_conn._integrations._urllib3 import _CONNS, _MANAGER_CONNS

    # The books of every connection a pool (and its PoolManager) made, which closing
    # the pool, manager or Session closes; one of them belongs to what this scope closes,
    # or the connection is not the scope's (a module-level Session's).
    books = [pool.__dict__.get(_CONNS), pool.__dict__.get(_MANAGER_CONNS)]
    books = [book for book in books if book is not None and conn in book]
    owned = {id(book) for owner in tracked(scope) for book in _books_of(owner, _CONNS)}
    if not any(id(book) in owned for book in books):
        return None
    for book in books:
        book.discard(conn)  # closing the pool, manager or Session now spares it
    # Closed pools close what is released into them: so the connection closes once the
    # response is read to the end or closed (urllib3 2 PoolManager.clear() closes no pool).
    pool.close()
    return Hold(
        name,
        lambda cut: close_connection(conn, cut=cut),
        lambda: conn.sock is not None,
        [f"{pool.host}:{pool.port}"],
    )


def _books_of(owner: Any, attr: str) -> list[Any]:
    """The connection books of a tracked pool, PoolManager, requests Session or adapter."""
    attrs = getattr(owner, "__dict__", {})
    books = [attrs.get(attr)]
    if isinstance(getattr(owner, "adapters", None), dict):  # a requests Session
        from lambda_conn._integrations._requests import _managers_of

        books.extend(manager.__dict__.get(attr) for manager in _managers_of(owner))
    elif "poolmanager" in attrs:  # a requests adapter the handler built
        from lambda_conn._integrations._requests import _adapter_managers

        books.extend(manager.__dict__.get(attr) for manager in _adapter_managers(owner))
    return [book for book in books if book is not None]


def close_connection(conn: Any, *, cut: bool = True) -> None:
    """Close a urllib3 connection; a response still reading from it then raises
    ``ClosedByScopeError`` instead of returning a short body (http.client would answer
    ``b""`` from then on, and urllib3 and requests pass that on as the end of the body)."""
    response = conn.__dict__.get(_UNREAD)
    if not cut or response is None or response.isclosed():
        conn.close()
        return
    # Detach the response first, so conn.close() does not mark it closed (urllib3 reads
    # nothing from a closed one), and give it a file that raises.
    conn.__dict__[_UNREAD] = None
    fp, response.fp = response.fp, _Cut(f"HTTP response from {conn.host}:{conn.port}")
    # And keep it from being marked closed after the first error (urllib3 closes it then),
    # so a second read raises too instead of answering the end of the body.
    response.__class__ = subclass(type(response), "cut", _never_closed)
    try:
        fp.close()
    finally:
        conn.close()
    _log_cut("HTTP response", f"{conn.host}:{conn.port}")


def _never_closed(cls: type) -> dict[str, Any]:
    def close(self: Any) -> None:
        """Its socket is gone already; staying open keeps every read raising."""

    return {"close": close}


class _Cut:
    """The file of a response whose connection the scope closed: every read raises."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def _raise(self, *args: object) -> Any:
        raise ClosedByScopeError(
            f"the connection behind this {self.what} was closed when its @managed_connection "
            "scope ended (the end of the invocation), before the body was read: read the "
            "body inside the scope, or return the response from the decorated function, "
            "which keeps its connection open until the body is read or the response closed"
        )

    read = read1 = readinto = readinto1 = readline = peek = _raise

    def close(self) -> None:
        """Nothing to close: the socket is gone already."""

    flush = close
    closed = False


def _log_cut(kind: str, remote: str) -> None:
    from lambda_conn._log import WARNING, log_event

    log_event(WARNING, "closed_under_returned_object", kind=kind, remote=[remote])


# --------------------------------------------------------------------------- httpx


def httpx_response(response: Any) -> Need | None:
    if response.is_closed or response.is_stream_consumed:
        return None
    stream = response.stream  # httpx's, within ours once handed over
    while stream is not None and not hasattr(stream, "_httpcore_stream"):
        stream = getattr(stream, "_stream", None)
    pool = getattr(getattr(stream, "_httpcore_stream", None), "_pool", None)
    if pool is None:
        return None  # a custom transport: which client it needs is unknowable
    return response, lambda scope: _hold_client(scope, response, pool)


def _hold_client(scope: Scope, response: Any, pool: Any) -> Hold | None:
    import httpx

    if not isinstance(response.stream, httpx.SyncByteStream):
        return None  # an AsyncClient's: closed with the scope (httpx then raises)
    for client in tracked(scope):
        if isinstance(client, httpx.Client) and getattr(client._transport, "_pool", None) is pool:
            break
    else:
        return None
    scope.forget(client)
    url = response.url
    hold = Hold(
        "httpx.Response",
        lambda cut: _close_client(client),
        lambda: not client.is_closed,
        [f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"],
    )
    response.stream = _releasing_stream()(response.stream, hold)
    return hold


def _close_client(client: Any) -> None:
    from lambda_conn._integrations._httpx import HTTPX_CLIENT

    HTTPX_CLIENT.close(client)  # type: ignore[misc]


@functools.cache
def _releasing_stream() -> type:
    import httpx

    class ReleasingStream(httpx.SyncByteStream):
        """The response's stream: closing it (httpx does once the body is read) closes
        the Client the scope handed over."""

        def __init__(self, stream: Any, hold: Hold) -> None:
            self._stream = stream
            self._hold = hold

        def __iter__(self) -> Any:
            return iter(self._stream)

        def close(self) -> None:
            try:
                self._stream.close()
            finally:
                self._hold.release(cut=False)

    return ReleasingStream
