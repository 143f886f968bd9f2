"""HTTP clients under @managed_connection, counted on a real loopback server."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import httpx
import pytest
import requests
import urllib3

from lambda_conn import managed_connection
from tests.servers.fds import open_fds


def test_requests_session_closed(http_server: Any) -> None:
    kept: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> int:
        session = requests.Session()
        kept.append(session)
        return session.get(http_server.url, timeout=5).status_code

    fds = open_fds()
    assert handler({}, None) == 200
    assert http_server.wait_open(0) == 0  # first: the server's own socket counts in open_fds()
    assert open_fds() == fds


def test_a_requests_session_is_tracked_once_and_closes_its_pools_through_itself(
    http_server: Any,
) -> None:
    from lambda_conn._integrations._requests import REQUESTS_SESSION

    with managed_connection() as scope:
        session = requests.Session()
        session.get(http_server.url, timeout=5)
        streamed = session.get(http_server.url, timeout=5, stream=True)  # holds a connection
        # one object, the Session: not also its adapters' PoolManagers or their pools
        assert [kind for _, kind in scope._resources.values()] == [REQUESTS_SESSION]
    assert http_server.wait_open(0) == 0
    assert streamed.raw._connection is None or streamed.raw._connection.sock is None


def test_a_requests_session_subclass_is_closed_through_its_own_close(http_server: Any) -> None:
    # GIVEN a Session subclass whose close() does more than requests' own (the scope's
    # close runs requests' adapter loop itself for a plain Session)
    closed: list[str] = []

    class Audited(requests.Session):
        def close(self) -> None:
            closed.append("own close")
            super().close()

    with managed_connection():
        session = Audited()
        session.get(http_server.url, timeout=5)
    # THEN its own close() ran, and its connection is closed on the server's side
    assert closed == ["own close"]
    assert http_server.wait_open(0) == 0


def test_a_custom_adapter_is_closed_through_its_own_close_with_its_lent_connection(
    http_server: Any,
) -> None:
    # GIVEN an adapter subclass with its own close(), built before the invocation (a
    # configured adapter kept at module level) and mounted on the invocation's Session, so
    # it is reached only through the Session; a streamed response left unread (its
    # connection is lent out, not in the pool)
    closed: list[str] = []

    class Audited(requests.adapters.HTTPAdapter):
        def close(self) -> None:
            closed.append("own close")
            super().close()

    adapter = Audited(max_retries=2)
    with managed_connection() as scope:
        session = requests.Session()
        session.mount("http://", adapter)
        assert len(scope) == 1  # the Session; the adapter's manager only through it
        streamed = session.get(http_server.url, timeout=5, stream=True)
    # THEN the adapter's own close() ran, and the lent connection is closed server-side
    assert closed == ["own close"]
    assert http_server.wait_open(0) == 0
    assert streamed.raw._connection is None or streamed.raw._connection.sock is None


def test_an_adapter_built_in_the_invocation_is_tracked_once_with_its_lent_connection(
    http_server: Any,
) -> None:
    from lambda_conn._integrations._requests import HTTP_ADAPTER, REQUESTS_SESSION

    # GIVEN a handler that mounts an adapter it builds (retries configured), and leaves a
    # streamed response unread through it
    with managed_connection() as scope:
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(max_retries=3))
        streamed = session.get(http_server.url, timeout=5, stream=True)
        # the two objects the handler built, each once: not also the adapter's PoolManager
        kinds = [kind for _, kind in scope._resources.values()]
        assert kinds == [REQUESTS_SESSION, HTTP_ADAPTER]
    # THEN its lent connection is closed on the server's side
    assert http_server.wait_open(0) == 0
    assert streamed.raw._connection is None or streamed.raw._connection.sock is None


def test_an_adapter_built_in_the_invocation_on_a_kept_session_is_closed(http_server: Any) -> None:
    # GIVEN a Session kept across invocations, and an adapter an invocation builds and mounts
    # on it, with a streamed response left unread
    kept = requests.Session()
    try:
        with managed_connection():
            kept.mount("http://", requests.adapters.HTTPAdapter(max_retries=3))
            streamed = kept.get(http_server.url, timeout=5, stream=True)
        # THEN that adapter's connection is closed at the end of the invocation
        assert http_server.wait_open(0) == 0
        assert streamed.raw._connection is None or streamed.raw._connection.sock is None
    finally:
        kept.close()


def test_a_connection_lent_through_a_proxy_is_closed(http_server: Any) -> None:
    # GIVEN a Session whose HTTP goes through a proxy (the loopback server answers the
    # proxied request itself: nothing leaves loopback), a streamed response left unread
    from lambda_conn._integrations._requests import REQUESTS_SESSION

    with managed_connection() as scope:
        session = requests.Session()
        session.proxies = {"http": http_server.url}
        streamed = session.get("http://lambda-conn.invalid/", timeout=5, stream=True)
        assert streamed.status_code == 200
        assert http_server.wait_open(1) == 1
        # the ProxyManager the adapter made is the Session's, not tracked on its own
        assert [kind for _, kind in scope._resources.values()] == [REQUESTS_SESSION]
    # THEN the proxy manager's lent connection is closed on the server's side too
    assert http_server.wait_open(0) == 0


def test_requests_responses_kept_alive_do_not_keep_their_sockets(http_server: Any) -> None:
    kept: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> int:
        session = requests.Session()
        kept.append(session.get(http_server.url, timeout=5))  # a Response kept in a cache
        streamed = session.get(http_server.url, timeout=5, stream=True)  # body never read
        kept.append(streamed)
        return streamed.status_code

    fds = open_fds()
    assert handler({}, None) == 200
    assert http_server.wait_open(0) == 0
    assert open_fds() == fds


def test_module_level_requests_session_keeps_its_connection(http_server: Any) -> None:
    session = requests.Session()  # outside any scope: deliberate reuse

    @managed_connection
    def handler(event: object, context: object) -> int:
        return session.get(http_server.url, timeout=5).status_code

    try:
        for _ in range(3):
            assert handler({}, None) == 200
        assert http_server.wait_open(1) == 1
        assert http_server.accepted == 1  # one keep-alive connection served all three
    finally:
        session.close()


def test_urllib3_pool_manager_and_pool_closed(http_server: Any) -> None:
    @managed_connection
    def handler(event: object, context: object) -> tuple[int, int]:
        manager = urllib3.PoolManager()
        pool = urllib3.HTTPConnectionPool("127.0.0.1", http_server.port)
        return manager.request("GET", http_server.url).status, pool.request("GET", "/").status

    fds = open_fds()
    assert handler({}, None) == (200, 200)
    assert http_server.wait_open(0) == 0  # first: the server's own socket counts in open_fds()
    assert open_fds() == fds


def test_module_level_pool_manager_keeps_its_pools(http_server: Any) -> None:
    manager = urllib3.PoolManager()

    @managed_connection
    def handler(event: object, context: object) -> int:
        return manager.request("GET", http_server.url).status

    try:
        assert handler({}, None) == 200
        assert handler({}, None) == 200  # a swept pool would raise ClosedPoolError here
        assert http_server.accepted == 1
    finally:
        manager.clear()


def test_httpx_client_closed(http_server: Any) -> None:
    @managed_connection
    def handler(event: object, context: object) -> int:
        client = httpx.Client()
        return client.get(http_server.url).status_code

    fds = open_fds()
    assert handler({}, None) == 200
    assert http_server.wait_open(0) == 0  # first: the server's own socket counts in open_fds()
    assert open_fds() == fds


def test_async_handler_with_httpx_async_client(http_server: Any) -> None:
    clients: list[httpx.AsyncClient] = []

    @managed_connection
    async def handler(event: object, context: object) -> int:
        client = httpx.AsyncClient()
        clients.append(client)
        response = await client.get(http_server.url)
        return response.status_code

    assert inspect.iscoroutinefunction(handler)
    fds = open_fds()
    assert asyncio.run(handler({}, None)) == 200
    assert clients[0].is_closed
    assert http_server.wait_open(0) == 0  # first: the server's own socket counts in open_fds()
    assert open_fds() == fds


def test_async_handler_that_raises_closes_its_async_client(http_server: Any) -> None:
    @managed_connection
    async def handler(event: object, context: object) -> None:
        client = httpx.AsyncClient()
        await client.get(http_server.url)
        raise ValueError("after the request")

    fds = open_fds()
    try:
        asyncio.run(handler({}, None))
    except ValueError as exc:
        assert str(exc) == "after the request"
    else:
        raise AssertionError("the handler's exception was lost")
    assert http_server.wait_open(0) == 0  # first: the server's own socket counts in open_fds()
    assert open_fds() == fds


def test_with_one_client_closes_it_and_an_async_client_needs_async_with(http_server: Any) -> None:
    client = httpx.Client()
    with managed_connection(client) as same:
        assert same.get(http_server.url).status_code == 200
    assert client.is_closed
    assert http_server.wait_open(0) == 0

    aclient = httpx.AsyncClient()
    # Refused on entry, so it can never replace an exception raised in the body.
    body_ran = []
    with pytest.raises(TypeError, match="async with"), managed_connection(aclient):
        body_ran.append(True)
    assert body_ran == []

    async def main() -> None:
        async with managed_connection(aclient) as same:
            assert (await same.get(http_server.url)).status_code == 200

    asyncio.run(main())
    assert aclient.is_closed
    assert http_server.wait_open(0) == 0


@pytest.mark.parametrize("client", ["requests", "httpx"])
def test_a_client_left_open_is_reported_with_its_kind_and_remote(
    http_server: Any, client: str, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    import json
    import logging

    from lambda_conn._integrations import _httpx, _requests

    # GIVEN a close rule that fails, so the client really stays open after cleanup
    kind = _requests.REQUESTS_SESSION if client == "requests" else _httpx.HTTPX_CLIENT

    def broken(obj: Any) -> None:
        raise OSError("close failed")

    monkeypatch.setattr(kind, "close", broken)
    kept: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> int:
        session = requests.Session() if client == "requests" else httpx.Client()
        kept.append(session)
        return int(session.get(http_server.url + "/?token=hunter2").status_code)

    try:
        with caplog.at_level(logging.WARNING, logger="lambda_conn"):
            assert handler({}, None) == 200
        lines = [json.loads(r.getMessage()) for r in caplog.records]
        (leak,) = [e for e in lines if e["event"] == "connections_leaked"]
        # THEN one line names what stayed open and where it goes, and nothing more: the
        # client the handler created, once (not also a Session's PoolManagers)
        assert leak["count"] == 1
        assert leak["connections"] == [
            {"kind": kind.name, "remote": [f"127.0.0.1:{http_server.port}"]}
        ]
        assert "hunter2" not in caplog.text
    finally:
        for session in kept:
            session.close()
