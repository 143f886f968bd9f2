"""The contract every client integration keeps, one parametrized test per property.

For each client (a real server on loopback that the suite starts itself):
- built in an invocation and kept by a reference, it is closed at the end: the server sees
  its session end and this process is back at its descriptor count;
- it is tracked once: the scope holds the object the handler created, not its internals;
- left open (its close rule broken), it is reported with its kind and ``host:port``;
- built at module level, it is never touched and keeps its connection;
- kept with ``reused_connection`` and dropped by the server, the next invocation gets a
  working client.

Adding a client: add a :class:`Case` to ``CASES`` (and its server fixture to ``SERVERS``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from lambda_conn import managed_connection, reused_connection
from lambda_conn._kinds import registered_kind
from tests.servers.fds import open_fds


class Case:
    """One client: how to build it, make it hold a connection, and count server sessions.

    ``tracked`` is how many objects the handler itself creates (all tracked once each);
    ``drop`` makes the server end the client's sessions (default: the server fixture's
    ``drop_connections()``); ``tracks`` gives the object an integration tracks from what
    ``make`` built (itself, or a boto3 resource's client).
    """

    def __init__(
        self,
        name: str,
        server: str,
        make: Callable[[Any], Any],
        use: Callable[[Any, Any], Any],
        *,
        is_async: bool = False,
        tracked: int = 1,
        drop: Callable[[Any], None] | None = None,
        tracks: Callable[[Any], Any] = lambda built: built,
    ) -> None:
        self.name = name
        self.server = server
        self.make = make
        self.use = use
        self.is_async = is_async
        self.tracked = tracked
        self.drop = drop or (lambda server: server.drop_connections())
        self.tracks = tracks  # the tracked object of what make() built (a boto3 resource's client)

    def __repr__(self) -> str:
        return self.name


SERVERS: dict[str, tuple[Callable[[Any], int], Callable[[Any], str]]] = {
    # fixture: (server-side session count, the host:port clients connect to)
    "http_server": (lambda s: s.open_connections, lambda s: f"127.0.0.1:{s.port}"),
    "redis_server": (lambda s: s.clients(), lambda s: f"127.0.0.1:{s.port}"),
    "moto": (lambda s: s.sessions(), lambda s: f"127.0.0.1:{s.port}"),
}


def _requests_session(server: Any) -> Any:
    import requests

    return requests.Session()


def _httpx_client(server: Any) -> Any:
    import httpx

    return httpx.Client()


def _pool_manager(server: Any) -> Any:
    import urllib3

    return urllib3.PoolManager()


def _aiohttp_session(server: Any) -> Any:
    import aiohttp

    return aiohttp.ClientSession()


async def _aiohttp_get(session: Any, server: Any) -> int:
    async with session.get(server.url) as response:
        await response.read()
        return int(response.status)


def _redis(server: Any) -> Any:
    import redis

    return redis.Redis(host=server.host, port=server.port)


def _redis_from_url(server: Any) -> Any:
    import redis

    return redis.Redis.from_url(server.url)


def _redis_pool(server: Any) -> Any:
    import redis

    return redis.ConnectionPool(host=server.host, port=server.port)


def _redis_pool_ping(pool: Any, server: Any) -> Any:
    conn = pool.get_connection()
    try:
        conn.send_command("PING")
        return conn.read_response()
    finally:
        pool.release(conn)


def _async_redis(server: Any) -> Any:
    import redis.asyncio

    return redis.asyncio.Redis(host=server.host, port=server.port)


def _async_redis_pool(server: Any) -> Any:
    import redis.asyncio

    return redis.asyncio.ConnectionPool(host=server.host, port=server.port)


async def _async_redis_pool_ping(pool: Any, server: Any) -> Any:
    conn = await pool.get_connection()
    try:
        await conn.send_command("PING")
        return await conn.read_response()
    finally:
        await pool.release(conn)


async def _aping(client: Any, server: Any) -> Any:
    return await client.ping()


def _boto3_client(server: Any) -> Any:
    import boto3

    return boto3.client("s3", **server.client_kwargs())


def _aiohttp_connector(server: Any) -> Any:
    import aiohttp

    return aiohttp.TCPConnector()


async def _aiohttp_get_on(connector: Any, server: Any) -> int:
    """A session on the connector that does not own it: closing the session leaves the
    connector's pooled connection open, so only the connector's own tracking closes it."""
    import aiohttp

    async with aiohttp.ClientSession(connector=connector, connector_owner=False) as session:
        return await _aiohttp_get(session, server)


def _redis_over_pool(server: Any) -> Any:
    import redis

    pool = redis.ConnectionPool(host=server.host, port=server.port)
    return redis.Redis(connection_pool=pool)


def _boto3_session_client(server: Any) -> Any:
    import boto3.session

    return boto3.session.Session().client("s3", **server.client_kwargs())


def _boto3_resource(server: Any) -> Any:
    import boto3

    return boto3.resource("s3", **server.client_kwargs())


CASES = [
    Case("requests", "http_server", _requests_session, lambda c, s: c.get(s.url, timeout=5)),
    Case("httpx", "http_server", _httpx_client, lambda c, s: c.get(s.url)),
    Case("urllib3", "http_server", _pool_manager, lambda c, s: c.request("GET", s.url)),
    Case("aiohttp", "http_server", _aiohttp_session, _aiohttp_get, is_async=True),
    Case(
        "aiohttp-connector",
        "http_server",
        _aiohttp_connector,
        _aiohttp_get_on,
        is_async=True,
        tracked=2,  # the connector and the session the handler builds on it
    ),
    Case(
        "redis",
        "redis_server",
        _redis,
        lambda c, s: c.ping(),
    ),
    Case("redis-from-url", "redis_server", _redis_from_url, lambda c, s: c.ping()),
    Case(
        "redis-over-pool",  # a pool built in the invocation, passed as connection_pool=
        "redis_server",
        _redis_over_pool,
        lambda c, s: c.ping(),
        tracked=2,
        tracks=lambda client: client.connection_pool,
    ),
    Case(
        "redis-pool",
        "redis_server",
        _redis_pool,
        _redis_pool_ping,
    ),
    Case(
        "redis.asyncio",
        "redis_server",
        _async_redis,
        _aping,
        is_async=True,
    ),
    Case(
        "redis.asyncio-pool",
        "redis_server",
        _async_redis_pool,
        _async_redis_pool_ping,
        is_async=True,
    ),
    Case("boto3", "moto", _boto3_client, lambda c, s: c.list_buckets()),
    Case("boto3-session", "moto", _boto3_session_client, lambda c, s: c.list_buckets()),
    Case(
        "boto3-resource",
        "moto",
        _boto3_resource,
        lambda r, s: {"buckets": list(r.buckets.all())},  # truthy, as every use returns
        tracks=lambda resource: resource.meta.client,
    ),
]


@pytest.fixture(params=CASES, ids=repr)
def case(request: pytest.FixtureRequest) -> tuple[Case, Any]:
    c: Case = request.param
    return c, request.getfixturevalue(c.server)


def sessions(case: Case, server: Any) -> int:
    return SERVERS[case.server][0](server)


def wait_sessions(case: Case, server: Any, n: int, timeout: float = 10.0) -> int:
    from tests.servers._private import wait_for_count

    return wait_for_count(lambda: sessions(case, server), n, timeout)


def invoke(case: Case, server: Any, body: Callable[[Any], Any]) -> Any:
    """One invocation of a decorated handler running ``body(client_or_none)``."""
    if case.is_async:

        @managed_connection
        async def ahandler(event: object, context: object) -> Any:
            return await body(None)

        return asyncio.run(ahandler({}, None))

    @managed_connection
    def handler(event: object, context: object) -> Any:
        return body(None)

    return handler({}, None)


def open_and_keep(case: Case, server: Any, kept: list[Any]) -> Callable[[Any], Any]:
    """The leak: build a client in the invocation, use it, keep a reference."""
    if case.is_async:

        async def abody(_: Any) -> Any:
            client = case.make(server)
            kept.append(client)
            return await case.use(client, server)

        return abody

    def body(_: Any) -> Any:
        client = case.make(server)
        kept.append(client)
        return case.use(client, server)

    return body


def test_closed_at_the_end_of_the_invocation(case: tuple[Case, Any]) -> None:
    c, server = case
    before = sessions(c, server)
    fds = open_fds()
    kept: list[Any] = []
    invoke(c, server, open_and_keep(c, server, kept))
    assert kept and registered_kind(c.tracks(kept[0])) is not None  # an integration knows it
    assert wait_sessions(c, server, before) == before  # the server saw the session end
    assert open_fds() == fds


def test_tracked_once(case: tuple[Case, Any]) -> None:
    c, server = case
    kept: list[Any] = []
    held: list[int] = []
    body = open_and_keep(c, server, kept)

    def scope_size() -> int:
        from lambda_conn import current_scope

        scope = current_scope()
        assert scope is not None
        return len(scope)

    if c.is_async:

        async def abody(_: Any) -> None:
            await body(None)
            held.append(scope_size())

        invoke(c, server, abody)
    else:

        def sbody(_: Any) -> None:
            body(None)
            held.append(scope_size())

        invoke(c, server, sbody)
    assert held == [c.tracked]


def test_left_open_is_reported_with_kind_and_remote(
    case: tuple[Case, Any], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    c, server = case
    kept: list[Any] = []
    kinds: list[Any] = []

    def break_close(client: Any) -> None:
        """A close rule that closes nothing, so the client really stays open."""
        kind = registered_kind(client)
        assert kind is not None
        kinds.append(kind)
        monkeypatch.setattr(kind, "close", lambda obj: None)
        if kind.aclose is not None:

            async def noop(obj: Any) -> None:
                return None

            monkeypatch.setattr(kind, "aclose", noop)

    body = open_and_keep(c, server, kept)
    if c.is_async:

        async def abody(_: Any) -> Any:
            result = await body(None)
            break_close(c.tracks(kept[0]))
            return result

        run: Callable[[Any], Any] = abody
    else:

        def sbody(_: Any) -> Any:
            result = body(None)
            break_close(c.tracks(kept[0]))
            return result

        run = sbody
    try:
        with caplog.at_level(logging.WARNING, logger="lambda_conn"):
            invoke(c, server, run)
        lines = [json.loads(r.getMessage()) for r in caplog.records]
        (leak,) = [e for e in lines if e["event"] == "connections_leaked"]
        assert leak["count"] == 1
        assert leak["connections"][0]["kind"] == kinds[0].name
        assert leak["connections"][0]["remote"] == [SERVERS[c.server][1](server)]
    finally:
        monkeypatch.undo()
        for client in kept:
            _close_outside(c, client)


def test_built_at_module_level_is_never_touched(case: tuple[Case, Any]) -> None:
    c, server = case
    before = sessions(c, server)
    client = None if c.is_async else c.make(server)  # outside any scope: deliberate reuse

    try:
        if c.is_async:

            async def both() -> None:  # one loop: an asyncio client lives in its loop
                nonlocal client
                client = c.make(server)  # in the loop, outside any scope

                @managed_connection
                async def handler(event: object, context: object) -> Any:
                    return await c.use(client, server)

                await handler({}, None)
                assert wait_sessions(c, server, before + 1) == before + 1
                await handler({}, None)
                assert wait_sessions(c, server, before + 1) == before + 1
                await _aclose_outside(c.tracks(client))

            asyncio.run(both())
        else:

            @managed_connection
            def handler(event: object, context: object) -> Any:
                return c.use(client, server)

            handler({}, None)
            assert wait_sessions(c, server, before + 1) == before + 1  # still connected
            handler({}, None)  # the same connection serves the next invocation
            assert wait_sessions(c, server, before + 1) == before + 1
    finally:
        if client is not None:
            _close_outside(c, client)
    assert wait_sessions(c, server, before) == before


def test_reused_and_dropped_by_the_server_works_in_the_next_invocation(
    case: tuple[Case, Any],
) -> None:
    c, server = case
    db = reused_connection(lambda: c.make(server), name=c.name)
    try:
        for _ in range(2):
            if c.is_async:

                async def abody(_: Any) -> Any:
                    return await c.use(db(), server)

                # a new loop per invocation, as asyncio.run() in a Lambda handler does: the
                # client of the last loop is dead, and the probe must say so
                assert invoke(c, server, abody)
            else:
                assert invoke(c, server, lambda _: c.use(db(), server))
            c.drop(server)
    finally:
        client = db._conn
        db._conn = None
        if client is not None:
            _close_outside(c, client)


async def _aclose_outside(client: Any) -> None:
    kind = registered_kind(client)
    assert kind is not None
    if kind.aclose is not None:
        await kind.aclose(client)
    elif kind.close is not None:
        kind.close(client)


def _close_outside(c: Case, client: Any) -> None:
    client = c.tracks(client)
    kind = registered_kind(client)
    if kind is None:
        return
    assert kind.close is not None, f"{kind}: every client here can also close without a loop"
    kind.close(client)


def test_a_redis_client_over_a_module_level_pool_leaves_the_pool_alone(redis_server: Any) -> None:
    """``Redis(connection_pool=pool)`` in the handler over a module-level pool: the client
    is closed, the pool and its connection are not (the same server-side connection serves
    the next invocation). The ``redis-over-pool`` case is the per-invocation pool, closed."""
    import redis

    from tests.servers._private import wait_for_count

    pool = redis.ConnectionPool(host=redis_server.host, port=redis_server.port)
    before = redis_server.clients()

    @managed_connection
    def handler(event: object, context: object) -> int:
        client = redis.Redis(connection_pool=pool)
        kept.append(client)  # the leak form: a reference outlives the invocation
        return int(client.client_id())

    kept: list[Any] = []
    try:
        first = handler({}, None)
        assert handler({}, None) == first  # the pool's connection was not closed between
        assert wait_for_count(redis_server.clients, before + 1, 10.0) == before + 1
        (conn,) = pool._available_connections
        assert conn._sock is not None
    finally:
        pool.disconnect()
    assert wait_for_count(redis_server.clients, before, 10.0) == before
