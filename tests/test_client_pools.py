"""The pool contract of the clients that bring their own pool (psycopg2.pool, asyncpg,
aiomysql, mysql-connector's MySQLConnectionPool; and its named pools).

A connection a pool makes belongs to the pool, even when it is made during an invocation
(a module-level pool grows on demand): closing it with the scope would hand the next
invocation a dead connection. A pool built during an invocation is the scope's, and is
closed with every connection it made, the ones handed out and never given back too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.clients import DB_POOLS, DBPool, Driver
from tests.servers.fds import open_fds


@pytest.fixture(params=DB_POOLS, ids=str)
def pooled(request: pytest.FixtureRequest) -> Iterator[tuple[DBPool, Driver]]:
    spec: DBPool = request.param
    loop = asyncio.new_event_loop()
    try:
        yield spec, Driver(spec.client, request.getfixturevalue(spec.client.server), loop)
    finally:
        loop.close()


def _wrap(db: Driver, value: Any) -> Any:
    return db._wrap(value) if not db.client.is_async else value


async def _session_id(db: Driver, conn: Any) -> int:
    rows = await db.run(conn, db.server.session_id_sql)
    return int(rows[0][0])


def test_a_module_level_pool_that_grows_during_an_invocation_keeps_its_connections(
    pooled: tuple[DBPool, Driver],
) -> None:
    spec, db = pooled
    pool = db.now(lambda: _wrap(db, spec.make(db.server, 2)))  # module level, empty

    async def two_sessions() -> list[int]:
        first = await _wrap(db, spec.borrow(pool))  # both made now, inside the invocation
        second = await _wrap(db, spec.borrow(pool))
        try:
            return sorted([await _session_id(db, first), await _session_id(db, second)])
        finally:
            await _wrap(db, spec.give_back(pool, first))
            await _wrap(db, spec.give_back(pool, second))

    try:
        made = db.invoke(two_sessions, on_leak="raise")
        assert set(made) <= db.server.session_ids()  # still connected once the invocation ended
        assert db.invoke(two_sessions, on_leak="raise") == made  # and handed out again
    finally:
        db.now(lambda: _wrap(db, spec.close(pool)))


def test_a_pool_built_during_an_invocation_is_closed_with_what_it_handed_out(
    pooled: tuple[DBPool, Driver],
) -> None:
    spec, db = pooled
    before = db.server.session_ids()
    unclean = db.server.unclean_mark()
    kept: list[Any] = []

    async def body() -> None:
        pool = await _wrap(db, spec.make(db.server, 3))
        returned = await _wrap(db, spec.borrow(pool))
        held = await _wrap(db, spec.borrow(pool))  # never given back
        await db.run(returned, "SELECT 1")
        await db.run(held, "BEGIN")  # a dropped socket is logged (PostgreSQL) only in one
        await db.run(held, "SELECT 1")
        await _wrap(db, spec.give_back(pool, returned))
        kept.append((pool, held))  # the pool kept for later, as a module-level cache would

    fds = open_fds()
    db.invoke(body, on_leak="raise")
    assert open_fds() == fds
    assert db.server.wait_new_sessions_gone(before) == []
    assert db.server.unclean_closes_since(unclean) == 0


def test_a_pool_left_open_is_reported_with_its_kind_and_remote(
    pooled: tuple[DBPool, Driver], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    import json
    import logging

    from lambda_conn._kinds import registered_kind

    spec, db = pooled
    kept: list[Any] = []
    kinds: list[Any] = []

    async def noop(obj: Any) -> None:
        return None

    async def body() -> None:
        pool = await _wrap(db, spec.make(db.server, 2))
        conn = await _wrap(db, spec.borrow(pool))  # the pool's one open connection
        await db.run(conn, "SELECT 1")
        kept.append((pool, conn))
        # GIVEN a close rule that closes nothing, so the pool really stays open
        kind = registered_kind(pool)
        assert kind is not None
        kinds.append(kind)
        monkeypatch.setattr(kind, "close", lambda obj: None)
        if kind.aclose is not None:
            monkeypatch.setattr(kind, "aclose", noop)

    try:
        with caplog.at_level(logging.WARNING, logger="lambda_conn"):
            db.invoke(body)
        lines = [json.loads(r.getMessage()) for r in caplog.records]
        (leak,) = [e for e in lines if e["event"] == "connections_leaked"]
        # THEN the pool is reported once, by its kind and its open connections' server
        # (one per connection: mysql-connector's pool connects all of its size at once)
        assert leak["count"] == 1
        (reported,) = leak["connections"]
        assert reported["kind"] == kinds[0].name
        assert reported["remote"]
        assert set(reported["remote"]) == {f"127.0.0.1:{db.server.port}"}
    finally:
        monkeypatch.undo()
        for pool, conn in kept:
            db.now(lambda: _wrap(db, spec.give_back(pool, conn)))  # noqa: B023
            db.now(lambda: _wrap(db, spec.close(pool)))  # noqa: B023


def test_a_named_mysql_connector_pool_made_during_an_invocation_outlives_it(
    mariadb: Any,
) -> None:
    # connect(pool_name=...) keeps its pool in a process-wide registry: deliberate reuse.
    import mysql.connector

    from lambda_conn import managed_connection

    kwargs = {
        "host": mariadb.host,
        "port": mariadb.port,
        "user": mariadb.user,
        "password": mariadb.password,
        "database": mariadb.database,
        "ssl_disabled": True,
        "pool_name": "lc_contract",
        "pool_size": 1,
    }

    @managed_connection(on_leak="raise")
    def handler(event: object, context: object) -> int:
        conn = mysql.connector.connect(**kwargs)
        try:
            cursor = conn.cursor()
            cursor.execute(mariadb.session_id_sql)
            return int(cursor.fetchone()[0])
        finally:
            conn.close()  # back to the pool

    first = handler({}, None)
    assert first in mariadb.session_ids()
    assert handler({}, None) == first  # the pool's connection, not a reconnect
    pool_conn = mysql.connector.connect(**kwargs)
    pool_conn._cnx_pool._remove_connections()
    pool_conn._cnx.close()
    pool_conn._cnx = None


@pytest.fixture(params=[spec for spec in DB_POOLS if spec.client.is_async], ids=str)
def async_pooled(request: pytest.FixtureRequest) -> Iterator[tuple[DBPool, Driver]]:
    spec: DBPool = request.param
    yield spec, Driver(spec.client, request.getfixturevalue(spec.client.server), None)


def test_a_kept_async_pool_is_dead_once_its_event_loop_has_closed(
    async_pooled: tuple[DBPool, Driver],
) -> None:
    """A pool replaces its dead connections itself, but only on its own loop: one kept
    by a sync handler's ``asyncio.run()`` cannot serve the next one's loop."""
    from lambda_conn._kinds import kind_of
    from lambda_conn._liveness import connection_alive

    spec, db = async_pooled
    kept: list[Any] = []

    async def first_invocation() -> None:
        kept.append(await spec.make(db.server, 1))
        assert connection_alive(kept[0])

    before = db.server.session_ids()
    asyncio.run(first_invocation())
    pool = kept[0]
    try:
        assert not connection_alive(pool), "the probe trusts a pool of a closed loop"
    finally:
        kind = kind_of(pool)
        assert kind.close is not None
        kind.close(pool)
    assert db.server.wait_new_sessions_gone(before) == []
