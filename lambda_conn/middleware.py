"""Per-request scopes for ASGI and WSGI applications (FastAPI, Starlette, Flask, Django...).

On Lambda a web app runs behind Mangum (ASGI), a WSGI adapter, or the Lambda Web Adapter,
and one invocation may serve one request or, with the Web Adapter, the app is a plain web
server with no handler at all. These middlewares give every request its own scope: what
the request opens is closed once its response has been sent, also when the app raises.
They are plain ASGI 3 / PEP 3333 callables and import no framework.

They do not run the health guard: that belongs to the Lambda handler. With Mangum, put
``@managed_connection`` on the handler as well (``handler = managed_connection(Mangum(app))``)
to get the check after each invocation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lambda_conn import _tracking
from lambda_conn._managed import _parse_clients, _parse_on_leak
from lambda_conn._scope import Scope

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping

    ASGIScope = MutableMapping[str, Any]
    ASGIMessage = MutableMapping[str, Any]
    ASGIReceive = Callable[[], Awaitable[ASGIMessage]]
    ASGISend = Callable[[ASGIMessage], Awaitable[None]]
    ASGIApp = Callable[[ASGIScope, ASGIReceive, ASGISend], Awaitable[None]]
    WSGIEnviron = dict[str, Any]
    StartResponse = Callable[..., Any]
    WSGIApp = Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]

__all__ = ["ManagedConnectionASGIMiddleware", "ManagedConnectionWSGIMiddleware"]

# ASGI scope types that are requests; "lifespan" (startup/shutdown) passes through: what
# an app opens at startup is meant to outlive every request.
_REQUEST_TYPES = frozenset({"http", "websocket"})


def _check_app(middleware: str, app: object, kind: str) -> None:
    if not callable(app):
        raise TypeError(f"{middleware} wraps an {kind} application, got {type(app).__name__}")


class ManagedConnectionASGIMiddleware:
    """ASGI 3 middleware: one scope per HTTP request or WebSocket session.

    The scope closes when the app returns, which is after the last body chunk was sent (a
    streaming response included) and after Starlette's background tasks ran; also when the
    app raises or the task is cancelled. Options are those of ``@managed_connection``:
    ``clients`` and ``on_leak`` (keywords only, as ``app.add_middleware`` passes them).
    """

    __slots__ = ("app", "clients", "on_leak")

    def __init__(
        self, app: ASGIApp, *, clients: str | Iterable[str] = "all", on_leak: str = "report"
    ) -> None:
        _check_app("ManagedConnectionASGIMiddleware", app, "ASGI")
        self.app = app
        self.clients = _parse_clients(clients)
        self.on_leak = _parse_on_leak(on_leak)
        _tracking.install()

    def __repr__(self) -> str:
        return f"ManagedConnectionASGIMiddleware({self.app!r})"

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope.get("type") not in _REQUEST_TYPES:
            await self.app(scope, receive, send)
            return
        await Scope(self.clients, self.on_leak).arun(self.app, (scope, receive, send), {})


class ManagedConnectionWSGIMiddleware:
    """PEP 3333 middleware: one scope per request, closed when the body is done.

    The body is iterated by the server after the app has returned, so connections the body
    opens (a streamed query) are tracked too. The scope closes when the body is exhausted
    or when the server calls ``close()`` on it (PEP 3333 requires that, also after an
    error or a client disconnect), whichever comes first; the app's own ``close()`` runs
    before it. A list or tuple body is complete when the app returns: the scope closes at
    once and the body goes out unwrapped (servers may use its length).
    """

    __slots__ = ("app", "clients", "on_leak")

    def __init__(
        self, app: WSGIApp, *, clients: str | Iterable[str] = "all", on_leak: str = "report"
    ) -> None:
        _check_app("ManagedConnectionWSGIMiddleware", app, "WSGI")
        self.app = app
        self.clients = _parse_clients(clients)
        self.on_leak = _parse_on_leak(on_leak)
        _tracking.install()

    def __repr__(self) -> str:
        return f"ManagedConnectionWSGIMiddleware({self.app!r})"

    def __call__(self, environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        request_scope = Scope(self.clients, self.on_leak).enter()
        try:
            body = self.app(environ, start_response)
            # An iterable's __iter__ may open things too: call it inside the scope.
            iterator = None if isinstance(body, (list, tuple)) else iter(body)
        except BaseException:
            request_scope.exit(failed=True)
            raise
        if iterator is None:
            return request_scope.exit(body)  # type: ignore[no-any-return]
        request_scope.leave()  # resumed for each chunk, closed with the body
        return _ScopedBody(body, iterator, request_scope)


class _ScopedBody:
    """The app's body, iterated inside the request's scope; closing it closes the scope."""

    __slots__ = ("_body", "_done", "_failed", "_iterator", "_scope")

    def __init__(self, body: Iterable[bytes], iterator: Iterator[bytes], scope: Scope) -> None:
        self._body = body
        self._iterator = iterator
        self._scope = scope
        self._failed = False
        self._done = False

    def __iter__(self) -> _ScopedBody:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        self._scope.enter()
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._scope.leave()
            self.close()  # the app is done with this request
            raise
        except BaseException:
            self._scope.leave()
            self._failed = True
            raise
        self._scope.leave()
        return chunk

    def close(self) -> None:
        """PEP 3333 ``close()``: the app's close first (it may still use a connection),
        then the scope. Idempotent."""
        if self._done:
            return
        self._done = True
        self._scope.enter()
        try:
            close: Callable[[], object] | None = getattr(self._body, "close", None)
            if close is not None:
                close()
        except BaseException:
            self._failed = True
            raise
        finally:
            self._scope.exit(failed=self._failed)
