"""The contract every database client integration keeps, proved on the server side.

One body per promise, run for each client of tests/clients.py in its own kind of handler
(sync clients in a sync handler, async ones in an async handler): built during an
invocation and kept by a reference, it is closed at the end with the protocol's goodbye
(COM_QUIT / Terminate: the server counts no aborted client, logs no unexpected EOF even
inside a transaction); it is reported with its server's host:port; a reused one is probed
cheaply and replaced once the server has ended it; what was opened outside the invocation,
or belongs to a client the scope does not track, is left alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lambda_conn import managed_connection, reused_connection
from lambda_conn._kinds import kind_of
from lambda_conn._liveness import connection_alive
from tests.clients import ASYNC_DB_CLIENTS, DB_CLIENTS, SYNC_DB_CLIENTS, DBClient, Driver
from tests.servers.fds import open_fds


def _driver(request: pytest.FixtureRequest) -> Iterator[Driver]:
    client: DBClient = request.param
    loop = asyncio.new_event_loop()
    try:
        yield Driver(client, request.getfixturevalue(client.server), loop)
    finally:
        loop.close()


@pytest.fixture(params=DB_CLIENTS, ids=str)
def db(request: pytest.FixtureRequest) -> Iterator[Driver]:
    yield from _driver(request)


@pytest.fixture(params=SYNC_DB_CLIENTS, ids=str)
def sync_db(request: pytest.FixtureRequest) -> Iterator[Driver]:
    yield from _driver(request)


@pytest.fixture(params=ASYNC_DB_CLIENTS, ids=str)
def async_db(request: pytest.FixtureRequest) -> Iterator[Driver]:
    yield from _driver(request)


def _is_open(conn: Any) -> bool:
    return kind_of(conn).is_open(conn)


def _close(db: Driver, conn: Any) -> None:
    """Close ``conn`` outside any handler, as its owner would (awaited for async clients)."""
    kind = kind_of(conn)
    if kind.aclose is not None:
        db.loop.run_until_complete(kind.aclose(conn))
    else:
        assert kind.close is not None
        kind.close(conn)


def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


async def _session_id(db: Driver, conn: Any) -> int:
    rows = await db.run(conn, db.server.session_id_sql)
    return int(rows[0][0])


def test_a_kept_connection_is_closed_with_a_goodbye_inside_a_transaction(db: Driver) -> None:
    server = db.server
    before = server.session_ids()
    unclean = server.unclean_mark()
    kept: list[Any] = []

    async def body() -> Any:
        conn = await db.connect()
        kept.append(conn)  # the reference that would keep it open for the container's life
        await db.run(conn, "BEGIN")
        await db.run(conn, "SELECT 1")
        return await _session_id(db, conn)

    fds = open_fds()
    session = db.invoke(body, on_leak="raise")
    assert open_fds() == fds
    assert not _is_open(kept[0])
    assert server.wait_new_sessions_gone(before) == []
    assert session not in server.session_ids()
    assert server.unclean_closes_since(unclean) == 0  # COM_QUIT / Terminate reached the server


def test_a_result_left_unread_does_not_make_the_close_unclean(db: Driver) -> None:
    server = db.server
    before = server.session_ids()
    unclean = server.unclean_mark()

    async def body() -> None:
        conn = await db.connect()
        await db.run(conn, "BEGIN")
        await db.start(conn, "SELECT 1")  # never fetched

    db.invoke(body, on_leak="raise")
    assert server.wait_new_sessions_gone(before) == []
    assert server.unclean_closes_since(unclean) == 0


def test_a_raising_handler_still_closes_and_its_exception_reaches_the_caller(
    db: Driver,
) -> None:
    server = db.server
    before = server.session_ids()
    error = LookupError("handler failed")

    async def body() -> Any:
        conn = await db.connect()
        await db.run(conn, "SELECT 1")
        raise error

    fds = open_fds()
    with pytest.raises(LookupError) as raised:
        db.invoke(body)
    assert raised.value is error
    assert open_fds() == fds
    assert server.wait_new_sessions_gone(before) == []


def test_an_async_client_left_by_a_sync_handler_is_closed_with_a_goodbye(
    async_db: Driver,
) -> None:
    # A sync handler running asyncio.run(main()): the loop is closed when the scope ends,
    # so the transport cannot close its socket itself any more.
    db, server = async_db, async_db.server
    before = server.session_ids()
    unclean = server.unclean_mark()
    kept: list[Any] = []

    async def main() -> None:
        conn = await db.connect()
        kept.append(conn)
        await db.run(conn, "BEGIN")
        await db.run(conn, "SELECT 1")

    @managed_connection(on_leak="raise")
    def handler(event: object, context: object) -> None:
        asyncio.run(main())

    fds = open_fds()
    handler({}, None)
    assert open_fds() == fds
    assert not _is_open(kept[0])
    assert server.wait_new_sessions_gone(before) == []
    assert server.unclean_closes_since(unclean) == 0


def test_the_connection_is_described_by_its_servers_host_and_port(db: Driver) -> None:
    conn = db.now(db.connect)
    try:
        kind = kind_of(conn)
        assert kind.client == db.client.name
        assert kind.remote(conn) == [f"127.0.0.1:{db.server.port}"]
        assert _is_open(conn)
    finally:
        _close(db, conn)
    assert not _is_open(conn)


def test_a_reused_connection_is_probed_and_found_dead_once_the_server_ended_it(
    db: Driver,
) -> None:
    conn = db.now(db.connect)
    try:
        assert connection_alive(conn)
        session = db.now(lambda: _session_id(db, conn))
        assert connection_alive(conn)  # an answered query leaves nothing unread
        db.server.end_session(session)
        assert _wait(lambda: not connection_alive(conn)), "the probe trusts a dead connection"
    finally:
        _close(db, conn)
    assert not connection_alive(conn)


def test_a_reused_async_connection_is_dead_once_its_event_loop_has_closed(
    async_db: Driver,
) -> None:
    """A sync handler that runs ``asyncio.run()`` per invocation: the connection it kept
    is bound to a loop that closed when ``asyncio.run()`` returned, and cannot serve the
    next one's loop ("attached to a different loop", "Event loop is closed"): the probe
    must say dead, though the server still holds the session and the socket is open."""
    import asyncio

    kept: list[Any] = []

    async def first_invocation() -> None:
        kept.append(await async_db.client.connect(async_db.server))
        assert connection_alive(kept[0])  # on its own running loop

    before = async_db.server.session_ids()
    asyncio.run(first_invocation())
    conn = kept[0]
    try:
        assert _is_open(conn)  # the socket and the server's session are still there
        assert not connection_alive(conn), "the probe trusts a connection of a closed loop"

        async def on_another_loop() -> bool:
            return connection_alive(conn)

        assert not asyncio.run(on_another_loop())
    finally:
        kind = kind_of(conn)
        assert kind.close is not None
        kind.close(conn)  # outside any loop: the scope's close path for a closed loop
    assert async_db.server.wait_new_sessions_gone(before) == []


def test_a_reused_async_connection_on_another_running_loop_is_dead(async_db: Driver) -> None:
    """Bound to a loop that is still open but not the one running here: unusable too."""
    conn = async_db.now(async_db.connect)  # on the driver's own loop, left open
    try:
        assert connection_alive(conn)  # no loop running here: its own loop can still run it
        import asyncio

        async def on_another_loop() -> bool:
            return connection_alive(conn)

        assert not asyncio.run(on_another_loop())
        assert connection_alive(conn)
    finally:
        _close(async_db, conn)


def test_reused_connection_replaces_one_the_server_ended(sync_db: Driver) -> None:
    db = sync_db
    reused = reused_connection(lambda: db.client.connect(db.server), name=db.client.name)

    async def session_now() -> int:
        return await _session_id(db, reused())

    try:
        first = db.invoke(session_now)
        db.server.end_session(first)
        assert db.server.wait_session_gone(first)
        time.sleep(0.05)  # the server's FIN reaches the client socket
        second = db.invoke(session_now)  # a dead connection is replaced, not handed out
        assert second != first
        assert reused.reconnects == 1
        assert db.invoke(session_now) == second  # a live one is kept
    finally:
        reused.close()


def test_a_connection_opened_outside_the_invocation_is_left_alone(db: Driver) -> None:
    conn = db.now(db.connect)  # module level, at import
    try:

        async def body() -> Any:
            return await db.run(conn, "SELECT 1")

        assert db.invoke(body, on_leak="raise")[0][0] == 1
        assert _is_open(conn)
        assert db.now(body)[0][0] == 1
    finally:
        _close(db, conn)


def test_clients_option_tracks_only_the_clients_it_names(db: Driver) -> None:
    other = next(c.name for c in DB_CLIENTS if c.name != db.client.name)
    kept: list[Any] = []

    async def body() -> None:
        kept.append(await db.connect())

    db.invoke(body, clients=[other])
    try:
        assert _is_open(kept[0])
    finally:
        _close(db, kept[0])
    db.invoke(body, clients=[db.client.name])
    assert not _is_open(kept[1])
