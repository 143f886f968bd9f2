"""Per-request scopes for web apps on Lambda, proved on a private PostgreSQL's side.

ASGI: a Starlette app wrapped by ManagedConnectionASGIMiddleware, driven through Mangum
with API Gateway HTTP API (payload 2.0) events and a fake Lambda context, exactly as
Lambda would call ``handler = Mangum(app)``. WSGI: a plain PEP 3333 app, checked by
``wsgiref.validate`` on both sides of the middleware, and once behind a real wsgiref server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
import wsgiref.simple_server
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import psycopg
import pytest
from mangum import Mangum
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from lambda_conn import ConfigurationError, current_scope, managed_connection
from lambda_conn.middleware import ManagedConnectionASGIMiddleware, ManagedConnectionWSGIMiddleware
from tests.servers.fds import open_fds


class FakeLambdaContext:
    """What Mangum and handlers read from the Lambda context object."""

    function_name = "web"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:web"
    memory_limit_in_mb = 512
    aws_request_id = "8f5c3b1e-0000-4000-8000-000000000001"
    log_group_name = "/aws/lambda/web"
    log_stream_name = "2024/01/01/[$LATEST]abc"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def http_api_event(path: str, method: str = "GET") -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": "abc.execute-api.us-east-1.amazonaws.com", "user-agent": "pytest"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc",
            "domainName": "abc.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "pytest",
            },
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Jan/2024:00:00:00 +0000",
            "timeEpoch": 1704067200000,
        },
        "isBase64Encoded": False,
    }


@pytest.fixture
def event_loop_for_mangum() -> Iterator[None]:
    """Mangum runs each request on the thread's current event loop (and makes one if
    there is none, never closing it): give it one, and close it after the test."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    loop.close()
    asyncio.set_event_loop(None)


# ----------------------------------------------------------------------------- ASGI


def build_app(postgres: Any, seen: dict[str, Any]) -> Starlette:
    """Routes that open connections and forget them, the way real code forgets."""
    kwargs = postgres.connect_kwargs()

    async def open_async(request: Request) -> JSONResponse:
        conn = await psycopg.AsyncConnection.connect(**kwargs)
        seen["conns"].append(conn)
        cur = await conn.execute("SELECT pg_backend_pid()")
        row = await cur.fetchone()
        assert row is not None
        return JSONResponse({"pid": row[0]})

    def open_sync(request: Request) -> JSONResponse:  # Starlette runs it in a thread
        conn = psycopg.connect(**kwargs)
        seen["conns"].append(conn)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return JSONResponse({"pid": row[0]})

    async def stream(request: Request) -> StreamingResponse:
        async def rows() -> AsyncIterator[bytes]:
            conn = await psycopg.AsyncConnection.connect(**kwargs)
            seen["conns"].append(conn)
            for n in range(3):
                cur = await conn.execute("SELECT %s::int", (n,))
                row = await cur.fetchone()
                assert row is not None
                # the connection is still open while the body is being sent
                seen.setdefault("open_while_streaming", []).append(not conn.closed)
                yield f"{row[0]}\n".encode()

        return StreamingResponse(rows(), media_type="text/plain")

    async def boom(request: Request) -> JSONResponse:
        conn = await psycopg.AsyncConnection.connect(**kwargs)
        seen["conns"].append(conn)
        await conn.execute("SELECT 1")
        raise RuntimeError("route failed")

    async def background(request: Request) -> JSONResponse:
        conn = await psycopg.AsyncConnection.connect(**kwargs)
        seen["conns"].append(conn)

        async def after_response() -> None:
            # runs after the response was sent, still inside the request's scope
            await conn.execute("SELECT 1")
            seen["background_ran_with_open_connection"] = not conn.closed

        return JSONResponse({"ok": True}, background=BackgroundTask(after_response))

    async def lifespan_conn(request: Request) -> JSONResponse:
        conn = request.state.conn  # opened at startup: must outlive the request
        cur = await conn.execute("SELECT pg_backend_pid()")
        row = await cur.fetchone()
        assert row is not None
        return JSONResponse({"pid": row[0]})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        conn = await psycopg.AsyncConnection.connect(**kwargs)
        seen["startup_scope"] = current_scope()
        try:
            yield {"conn": conn}
        finally:
            seen["lifespan_conn_open_at_shutdown"] = not conn.closed
            await conn.close()

    return Starlette(
        routes=[
            Route("/async", open_async),
            Route("/sync", open_sync),
            Route("/stream", stream),
            Route("/boom", boom),
            Route("/background", background),
            Route("/lifespan", lifespan_conn),
        ],
        lifespan=lifespan,
    )


@pytest.fixture
def mangum_handler(
    postgres: Any, event_loop_for_mangum: None
) -> Iterator[tuple[Callable[[str], dict[str, Any]], dict[str, Any]]]:
    seen: dict[str, Any] = {"conns": []}
    app = ManagedConnectionASGIMiddleware(build_app(postgres, seen), on_leak="raise")
    handler = Mangum(app, lifespan="auto")

    def invoke(path: str) -> dict[str, Any]:
        return handler(http_api_event(path), FakeLambdaContext())  # type: ignore[arg-type]

    yield invoke, seen
    for conn in seen["conns"]:
        assert conn.closed


@pytest.mark.parametrize("path", ["/async", "/sync"])
def test_connection_opened_in_a_route_is_closed_after_the_response(
    postgres: Any, mangum_handler: Any, path: str
) -> None:
    before_ids = postgres.session_ids(user=None)
    invoke, seen = mangum_handler
    fds = open_fds()
    response = invoke(path)
    assert response["statusCode"] == 200
    pid = json.loads(response["body"])["pid"]
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []
    assert pid not in {s["pid"] for s in postgres.client_sessions()}
    assert open_fds() == fds


def test_streaming_response_closes_after_the_last_chunk(postgres: Any, mangum_handler: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    invoke, seen = mangum_handler
    response = invoke("/stream")
    assert response["statusCode"] == 200
    assert response["body"] == "0\n1\n2\n"
    assert seen["open_while_streaming"] == [True, True, True]
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_exception_in_a_route_still_closes(
    postgres: Any, mangum_handler: Any, caplog: pytest.LogCaptureFixture
) -> None:
    before_ids = postgres.session_ids(user=None)
    invoke, seen = mangum_handler
    unclean = postgres.unclean_mark()
    with caplog.at_level("ERROR", logger="mangum"):
        response = invoke("/boom")
    assert response["statusCode"] == 500  # Starlette's error page, the error logged
    assert any("route failed" in str(r.exc_info) for r in caplog.records if r.exc_info)
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []
    assert postgres.unclean_closes_since(unclean) == 0  # closed with Terminate, not dropped


def test_background_task_runs_before_the_scope_closes(postgres: Any, mangum_handler: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    invoke, seen = mangum_handler
    response = invoke("/background")
    assert response["statusCode"] == 200
    assert seen["background_ran_with_open_connection"] is True
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_lifespan_passes_through_untouched(postgres: Any, mangum_handler: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    invoke, seen = mangum_handler
    first = json.loads(invoke("/lifespan")["body"])["pid"]
    assert seen["startup_scope"] is None  # startup runs outside any request scope
    assert seen["lifespan_conn_open_at_shutdown"] is True  # the middleware left it alone
    assert postgres.wait_new_sessions_gone(before_ids) == []
    assert first not in {s["pid"] for s in postgres.client_sessions()}  # closed by shutdown


def test_many_requests_leave_nothing_behind(postgres: Any, mangum_handler: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    invoke, seen = mangum_handler
    fds = open_fds()
    for i in range(30):
        assert invoke(("/async", "/sync", "/stream")[i % 3])["statusCode"] == 200
    assert open_fds() == fds
    assert postgres.wait_new_sessions_gone(before_ids) == []
    assert len(seen["conns"]) == 30


def test_decorated_mangum_handler_adds_the_invocation_scope(
    postgres: Any, event_loop_for_mangum: None
) -> None:
    """handler = managed_connection(Mangum(app)): the middleware's scope is the innermost,
    the decorator's (and its health guard) wraps the whole invocation."""
    before_ids = postgres.session_ids(user=None)
    seen: dict[str, Any] = {"conns": []}
    app = ManagedConnectionASGIMiddleware(build_app(postgres, seen))
    handler = managed_connection(Mangum(app, lifespan="off"))
    response = handler(http_api_event("/async"), FakeLambdaContext())
    assert response["statusCode"] == 200
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


async def _drive(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def test_pure_asgi_scope_per_request_and_none_for_lifespan() -> None:
    scopes: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(current_scope())
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    wrapped = ManagedConnectionASGIMiddleware(app)
    asyncio.run(_drive(wrapped, {"type": "http", "path": "/"}))
    asyncio.run(_drive(wrapped, {"type": "http", "path": "/"}))
    asyncio.run(_drive(wrapped, {"type": "websocket", "path": "/ws"}))
    asyncio.run(_drive(wrapped, {"type": "lifespan"}))
    first, second, websocket, lifespan = scopes
    assert first is not None and second is not None and first is not second
    assert websocket is not None
    assert lifespan is None


def test_cancelled_request_closes_its_scope(postgres: Any) -> None:
    """A client that disconnects makes the server cancel the request's task."""
    before_ids = postgres.session_ids(user=None)
    conns: list[Any] = []
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        conns.append(await psycopg.AsyncConnection.connect(**postgres.connect_kwargs()))
        started.set()
        await asyncio.sleep(3600)

    async def main() -> None:
        wrapped = ManagedConnectionASGIMiddleware(app, on_leak="raise")
        task = asyncio.create_task(_drive(wrapped, {"type": "http", "path": "/"}))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert conns[0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_middleware_options_are_validated() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ConfigurationError):
        ManagedConnectionASGIMiddleware(app, clients=["mongodb"])
    with pytest.raises(ConfigurationError):
        ManagedConnectionWSGIMiddleware(lambda e, s: [], on_leak="panic")
    with pytest.raises(TypeError, match="wraps an ASGI application"):
        ManagedConnectionASGIMiddleware("app")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ManagedConnectionASGIMiddleware(app, "all")  # type: ignore[misc]


# ----------------------------------------------------------------------------- WSGI


def call_wsgi(app: Any, path: str = "/", *, stop_after: int | None = None) -> tuple[str, bytes]:
    """A minimal PEP 3333 server: iterate the body, then always call close().

    ``stop_after`` chunks simulates a client that went away mid-body.
    """
    environ: dict[str, Any] = {"PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": ""}
    setup_testing_defaults(environ)
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status[:] = [s]
        return lambda data: None

    result = app(environ, start_response)
    chunks: list[bytes] = []
    try:
        for chunk in result:
            chunks.append(chunk)
            if stop_after is not None and len(chunks) >= stop_after:
                break
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return status[0], b"".join(chunks)


def wsgi_app(postgres: Any, seen: dict[str, Any]) -> Callable[..., Iterable[bytes]]:
    kwargs = postgres.connect_kwargs()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        if path == "/list":  # the body is complete when the app returns
            conn = psycopg.connect(**kwargs)
            seen["conns"].append(conn)
            row = conn.execute("SELECT 7").fetchone()
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(row[0] if row else "").encode()]
        if path == "/raise":
            seen["conns"].append(psycopg.connect(**kwargs))
            raise RuntimeError("app failed")
        return body(path, start_response)

    def body(path: str, start_response: Any) -> Iterator[bytes]:
        # a generator: runs when the server iterates, after the app has returned
        start_response("200 OK", [("Content-Type", "text/plain")])
        conn = psycopg.connect(**kwargs)
        seen["conns"].append(conn)
        try:
            for n in range(3):
                if path == "/fail-midway" and n == 1:
                    raise RuntimeError("body failed")
                row = conn.execute("SELECT %s::int", (n,)).fetchone()
                seen.setdefault("open_while_iterating", []).append(not conn.closed)
                yield f"{row[0] if row else ''}\n".encode()
        finally:
            # the app's own cleanup (run by close()) still has its connection
            seen.setdefault("open_in_app_close", []).append(not conn.closed)

    return app


@pytest.fixture
def wsgi(postgres: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    seen: dict[str, Any] = {"conns": []}
    # validator on both sides: the app sees a correct server, the server a correct app
    app = validator(
        ManagedConnectionWSGIMiddleware(validator(wsgi_app(postgres, seen)), on_leak="raise")
    )
    yield app, seen
    assert all(conn.closed for conn in seen["conns"])


def test_wsgi_generator_body_closed_after_it_is_exhausted(postgres: Any, wsgi: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    app, seen = wsgi
    fds = open_fds()
    assert call_wsgi(app, "/stream") == ("200 OK", b"0\n1\n2\n")
    assert seen["open_while_iterating"] == [True, True, True]
    assert seen["open_in_app_close"] == [True]
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []
    assert open_fds() == fds


def test_wsgi_client_gone_midway_closes_on_close(postgres: Any, wsgi: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    app, seen = wsgi
    _, body = call_wsgi(app, "/stream", stop_after=1)
    assert body == b"0\n"
    assert seen["open_in_app_close"] == [True]  # GeneratorExit ran before the scope closed
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_wsgi_list_body_closed_when_the_app_returns(postgres: Any, wsgi: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    app, seen = wsgi
    assert call_wsgi(app, "/list") == ("200 OK", b"7")
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_wsgi_app_that_raises_still_closes(postgres: Any, wsgi: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    app, seen = wsgi
    with pytest.raises(RuntimeError, match="app failed"):
        call_wsgi(app, "/raise")
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_wsgi_body_that_raises_still_closes(postgres: Any, wsgi: Any) -> None:
    before_ids = postgres.session_ids(user=None)
    app, seen = wsgi
    with pytest.raises(RuntimeError, match="body failed"):
        call_wsgi(app, "/fail-midway")
    assert seen["conns"][0].closed
    assert postgres.wait_new_sessions_gone(before_ids) == []


def test_wsgi_behind_a_real_server(postgres: Any) -> None:
    """wsgiref's server over loopback HTTP: the server, not the test, calls close()."""
    before_ids = postgres.session_ids(user=None)
    seen: dict[str, Any] = {"conns": []}
    app = ManagedConnectionWSGIMiddleware(wsgi_app(postgres, seen), on_leak="raise")

    class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for path in ("/stream", "/list"):
            url = f"http://127.0.0.1:{server.server_port}{path}"
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200
                response.read()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert len(seen["conns"]) == 2
    assert all(conn.closed for conn in seen["conns"])
    assert postgres.wait_new_sessions_gone(before_ids) == []


# ----------------------------------------------------------------------------- examples


def load_example(name: str, monkeypatch: pytest.MonkeyPatch, postgres: Any) -> Any:
    """Import examples/<name>.py as the docs show it, with DATABASE_URL set."""
    import importlib.util
    from pathlib import Path

    monkeypatch.setenv("DATABASE_URL", postgres.conninfo())
    path = Path(__file__).resolve().parents[1] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_starlette_mangum(
    postgres: Any, monkeypatch: pytest.MonkeyPatch, event_loop_for_mangum: None
) -> None:
    before_ids = postgres.session_ids(user=None)
    example = load_example("starlette_mangum", monkeypatch, postgres)
    fds = open_fds()
    for path in ("/backend", "/report", "/numbers"):
        response = example.handler(http_api_event(path), FakeLambdaContext())
        assert response["statusCode"] == 200, response
        assert postgres.wait_new_sessions_gone(before_ids) == []
    assert response["body"] == "1\n2\n3\n4\n5\n"
    assert open_fds() == fds


def test_example_wsgi_app(postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    before_ids = postgres.session_ids(user=None)
    example = load_example("wsgi_app", monkeypatch, postgres)
    assert call_wsgi(validator(example.app)) == ("200 OK", b"1\n2\n3\n4\n5\n")
    assert postgres.wait_new_sessions_gone(before_ids) == []
