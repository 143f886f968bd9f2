"""A returned object that still needs its connection is never silently cut.

Every client that reads lazily (requests/urllib3/httpx streamed responses, a PyMySQL
unbuffered cursor, a SQLAlchemy streamed result) against a real server: returned from a
decorated function, its caller reads all of it and the server sees the connection closed
afterwards; kept somewhere else instead, reading it raises ``ClosedByScopeError``.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pymysql
import pymysql.cursors
import pytest
import requests
import sqlalchemy as sa
import urllib3

from lambda_conn import ClosedByScopeError, managed_connection
from lambda_conn._returned import release_pending
from tests.servers.http import pattern_bytes

N_BYTES = 3_000_000  # well past what loopback socket buffers hold
N_ROWS = 20_000
ROWS_SQL = f"SELECT seq FROM seq_1_to_{N_ROWS}"


@pytest.fixture(autouse=True)
def _no_pending() -> Iterator[None]:
    yield
    release_pending()  # what a test's outermost scope handed out must not reach the next


class Lazy:
    """One client's lazily read object: how to open it inside a scope and read it all."""

    def __init__(
        self,
        name: str,
        server: str,
        open: Callable[[Any, str], Any],
        read: Callable[[Any], Any],
        close: Callable[[Any], None],
    ) -> None:
        self.name, self.server = name, server
        self.open, self.read, self.close = open, read, close
        # The database sessions there before the test (the server fixture takes it): the
        # shared servers may hold another test's, ending or not while this one runs.
        self.before: frozenset[int] = frozenset()

    def __repr__(self) -> str:
        return self.name

    def expected(self) -> Any:
        return (
            pattern_bytes(N_BYTES) if self.server == "http_server" else list(range(1, N_ROWS + 1))
        )

    def open_connections(self, server: Any) -> int:
        if self.server == "http_server":
            return int(server.open_connections)
        return len(server.new_sessions(self.before))

    def wait_closed(self, server: Any) -> int:
        if self.server == "http_server":
            return int(server.wait_open(0))
        return len(server.wait_new_sessions_gone(self.before))


def _requests_open(server: Any, chunked: str) -> Any:
    session = requests.Session()
    return session.get(f"{server.url}/bytes?n={N_BYTES}{chunked}", stream=True, timeout=10)


_KEPT_SESSION = requests.Session()  # deliberate reuse; each invocation mounts its own adapter


def _requests_adapter_open(server: Any, chunked: str) -> Any:
    # the adapter is the invocation's (tracked itself), the Session it is mounted on is not
    _KEPT_SESSION.mount("http://", requests.adapters.HTTPAdapter(max_retries=2))
    url = f"{server.url}/bytes?n={N_BYTES}{chunked}"
    return _KEPT_SESSION.get(url, stream=True, timeout=10)


def _urllib3_open(server: Any, chunked: str) -> Any:
    manager = urllib3.PoolManager()
    return manager.request("GET", f"{server.url}/bytes?n={N_BYTES}{chunked}", preload_content=False)


def _httpx_open(server: Any, chunked: str) -> Any:
    client = httpx.Client(timeout=10)
    return client.send(client.build_request("GET", f"{server.url}/bytes?n={N_BYTES}"), stream=True)


def _pymysql_open(server: Any, unused: str) -> Any:
    conn = pymysql.connect(**server.connect_kwargs())
    cursor = conn.cursor(pymysql.cursors.SSCursor)
    cursor.execute(ROWS_SQL)
    return cursor


def _sqlalchemy_open(server: Any, unused: str) -> Any:
    engine = sa.create_engine(server.url())
    conn = engine.connect().execution_options(stream_results=True)
    return conn.execute(sa.text(ROWS_SQL))


def _sqlalchemy_scalars_open(server: Any, unused: str) -> Any:
    return _sqlalchemy_open(server, unused).scalars()


def _rows(cursor: Any) -> list[int]:
    return [row[0] for row in cursor]


LAZY = [
    Lazy("requests", "http_server", _requests_open, lambda r: r.content, lambda r: r.close()),
    Lazy(
        "requests.adapter",
        "http_server",
        _requests_adapter_open,
        lambda r: r.content,
        lambda r: r.close(),
    ),
    Lazy("urllib3", "http_server", _urllib3_open, lambda r: r.read(), lambda r: r.close()),
    Lazy("httpx", "http_server", _httpx_open, lambda r: r.read(), lambda r: r.close()),
    Lazy("pymysql", "mariadb", _pymysql_open, _rows, lambda c: c.close()),
    Lazy("sqlalchemy", "mariadb", _sqlalchemy_open, _rows, lambda r: r.close()),
    Lazy(
        "sqlalchemy.scalars",
        "mariadb",
        _sqlalchemy_scalars_open,
        lambda r: list(r),
        lambda r: r.close(),
    ),
]


@pytest.fixture(params=LAZY, ids=repr)
def lazy(request: pytest.FixtureRequest) -> Lazy:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def server(lazy: Lazy, request: pytest.FixtureRequest) -> Any:
    server = request.getfixturevalue(lazy.server)
    if lazy.server != "http_server":
        lazy.before = server.session_ids(user=None)
    return server


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]
    return [line for line in lines if line["event"] == name]


@pytest.mark.parametrize("suffix", ["", "&chunked=1"], ids=["length", "chunked"])
def test_a_returned_stream_is_read_in_full_in_both_framings(http_server: Any, suffix: str) -> None:
    for opener, read in ((_requests_open, lambda r: r.content), (_urllib3_open, _read)):
        response = managed_connection(on_leak="raise")(opener)(http_server, suffix)
        assert http_server.open_connections == 1
        assert read(response) == pattern_bytes(N_BYTES)
        assert http_server.wait_open(0) == 0


def _read(response: Any) -> bytes:
    return response.read()  # type: ignore[no-any-return]


def test_a_returned_lazy_object_is_read_in_full_then_closed(lazy: Lazy, server: Any) -> None:
    @managed_connection(on_leak="raise")
    def fetch() -> Any:
        return lazy.open(server, "")

    obj = fetch()
    assert lazy.open_connections(server) == 1  # still open: the caller has not read it
    assert lazy.read(obj) == lazy.expected()
    assert lazy.wait_closed(server) == 0  # and closed once read, with obj still referenced
    del obj


def test_a_returned_lazy_object_closed_early_closes_its_connection(lazy: Lazy, server: Any) -> None:
    fetch = managed_connection(on_leak="raise")(lambda: lazy.open(server, ""))
    obj = fetch()
    lazy.close(obj)
    assert lazy.wait_closed(server) == 0


def test_a_dropped_lazy_object_closes_its_connection(lazy: Lazy, server: Any) -> None:
    fetch = managed_connection(on_leak="raise")(lambda: lazy.open(server, ""))
    fetch()  # the value is dropped at once, as awslambdaric drops a serialized result
    gc.collect()  # only for a client version whose objects sit in a cycle
    assert lazy.wait_closed(server) == 0


def test_returned_through_a_tuple_and_an_enclosing_scope(lazy: Lazy, server: Any) -> None:
    @managed_connection(on_leak="raise")
    def fetch() -> tuple[str, Any]:
        return "meta", lazy.open(server, "")

    @managed_connection(on_leak="raise")
    def handler() -> Any:
        _meta, obj = fetch()  # the enclosing scope now holds the connection
        return obj  # and hands it on again

    obj = handler()
    assert lazy.read(obj) == lazy.expected()
    assert lazy.wait_closed(server) == 0


def test_an_enclosing_scope_that_does_not_return_it_closes_it_clearly(
    lazy: Lazy, server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    kept: list[Any] = []
    fetch = managed_connection(lambda: lazy.open(server, ""))

    @managed_connection
    def handler() -> str:
        kept.append(fetch())  # kept past the invocation, never returned
        return "done"

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        assert handler() == "done"
    assert lazy.wait_closed(server) == 0  # closed with the handler's scope
    _assert_cut(lazy, kept[0], caplog)


def test_an_outermost_return_left_unread_is_closed_by_the_next_invocation(
    lazy: Lazy, server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fetch = managed_connection(lambda: lazy.open(server, ""))
    first = fetch()
    assert lazy.open_connections(server) == 1
    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        second = fetch()  # the next invocation closes what the first one returned
    assert lazy.read(second) == lazy.expected()
    assert lazy.wait_closed(server) == 0
    _assert_cut(lazy, first, caplog)


def _assert_cut(lazy: Lazy, obj: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Reading ``obj`` raises the clear error, or (httpx) httpx's own: never a short read."""
    if lazy.name == "httpx":
        with pytest.raises(httpx.HTTPError):  # httpx refuses to read from a closed client
            lazy.read(obj)
        return
    with pytest.raises(ClosedByScopeError, match="closed when its @managed_connection scope"):
        lazy.read(obj)
    assert _events(caplog, "closed_under_returned_object")


@pytest.mark.parametrize("framing", ["", "&chunked=1"])
@pytest.mark.parametrize("client", ["requests", "urllib3"])
def test_a_streamed_response_kept_but_not_returned_raises_instead_of_a_short_body(
    http_server: Any, caplog: pytest.LogCaptureFixture, client: str, framing: str
) -> None:
    kept: list[Any] = []
    opener = _requests_open if client == "requests" else _urllib3_open

    @managed_connection
    def handler() -> int:
        response = opener(http_server, framing)
        kept.append(response)  # a cache, a global: not the return value
        return 200

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        assert handler() == 200
    assert http_server.wait_open(0) == 0  # the scope still closes the connection
    response = kept[0]
    for _ in range(2):  # and again: never an empty body after the first error
        with pytest.raises(ClosedByScopeError, match="before the body was read"):
            response.content if client == "requests" else response.read()
    [event] = _events(caplog, "closed_under_returned_object")
    assert event["remote"] == [f"{http_server.host}:{http_server.port}"]


@pytest.mark.parametrize("opener", [_pymysql_open, _sqlalchemy_open], ids=["pymysql", "sqlalchemy"])
def test_an_unbuffered_result_kept_but_not_returned_raises_clearly(
    mariadb: Any, caplog: pytest.LogCaptureFixture, opener: Callable[[Any, str], Any]
) -> None:
    before_ids = mariadb.session_ids(user=None)
    kept: list[Any] = []

    @managed_connection
    def handler() -> int:
        kept.append(opener(mariadb, ""))
        return 1

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        handler()
    assert mariadb.wait_new_sessions_gone(before_ids) == []
    with pytest.raises(ClosedByScopeError, match="before every row was read"):
        kept[0].fetchall()
    assert _events(caplog, "closed_under_returned_object")


def test_a_module_level_session_keeps_its_connection_for_a_returned_stream(
    http_server: Any,
) -> None:
    session = requests.Session()  # deliberate reuse: not the scope's
    fetch = managed_connection(
        lambda: session.get(f"{http_server.url}/bytes?n=1000", stream=True, timeout=5)
    )
    try:
        for _ in range(3):
            assert fetch().content == pattern_bytes(1000)
        assert http_server.wait_open(1) == 1  # one keep-alive connection, reused
        assert http_server.accepted == 1
    finally:
        session.close()
