"""SQLAlchemy 2.x: per-invocation Engines, module-level pools, Connections and Sessions."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool, QueuePool

from lambda_conn import managed_connection
from tests.servers.fds import open_fds


@pytest.mark.parametrize("poolclass", [QueuePool, NullPool])
def test_engine_per_invocation_is_disposed(mariadb: Any, poolclass: type) -> None:
    before = mariadb.session_ids()
    engines: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> int:
        engine = sa.create_engine(mariadb.url(), poolclass=poolclass)
        engines.append(engine)  # kept alive: only disposal closes its pool
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT 1")).scalar_one())

    fds = open_fds()
    for _ in range(5):
        assert handler({}, None) == 1
        assert open_fds() == fds
    assert mariadb.wait_new_sessions_gone(before) == []


def test_connection_checked_out_and_never_returned_is_closed(mariadb: Any) -> None:
    before = mariadb.session_ids()
    kept: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> None:
        engine = sa.create_engine(mariadb.url())
        raw = engine.raw_connection()  # checked out of the pool, never returned
        kept.append(raw)
        conn = engine.connect()  # and a Connection never closed
        conn.execute(sa.text("SELECT 1"))
        kept.append(conn)

    fds = open_fds()
    handler({}, None)
    assert open_fds() == fds
    assert mariadb.wait_new_sessions_gone(before) == []


@pytest.mark.parametrize("clients", ["all", ["pymysql"]])
def test_module_level_engine_keeps_its_pool_across_invocations(mariadb: Any, clients: Any) -> None:
    # Also when the scope tracks only the driver: the pool's connections are the pool's.
    engine = sa.create_engine(mariadb.url())  # created outside any scope: deliberate reuse
    before = mariadb.session_ids()

    @managed_connection(clients=clients)
    def handler(event: object, context: object) -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one())

    try:
        first = handler({}, None)
        second = handler({}, None)
        assert handler({}, None) == first
        assert first == second  # the same pooled session served both invocations
        assert [s["id"] for s in mariadb.wait_new_sessions(before, 1)] == [first]
    finally:
        engine.dispose()


def test_module_level_engine_connection_left_open_is_closed_not_returned(mariadb: Any) -> None:
    engine = sa.create_engine(mariadb.url())
    before = mariadb.session_ids()
    leaked: list[Any] = []

    @managed_connection
    def handler(event: object, context: object) -> int:
        conn = engine.connect()  # never closed by the handler
        leaked.append(conn)
        conn.execute(sa.text("SET @request_state = 'dirty'"))
        return int(conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one())

    try:
        first = handler({}, None)
        assert leaked[0].closed
        assert engine.pool.checkedout() == 0
        second = handler({}, None)
        assert first != second  # the dirty session was closed, not handed back
        assert mariadb.wait_new_sessions_gone(before) == []
    finally:
        engine.dispose()


def test_session_left_open_is_closed(mariadb: Any) -> None:
    before = mariadb.session_ids()
    sessions: list[Session] = []

    @managed_connection
    def handler(event: object, context: object) -> int:
        engine = sa.create_engine(mariadb.url())
        session = Session(engine)
        sessions.append(session)
        return int(session.execute(sa.text("SELECT 1")).scalar_one())

    fds = open_fds()
    assert handler({}, None) == 1
    assert open_fds() == fds
    assert not sessions[0].in_transaction()
    assert mariadb.wait_new_sessions_gone(before) == []


def test_engine_of_a_failed_invocation_is_disposed(mariadb: Any) -> None:
    before = mariadb.session_ids()

    @managed_connection
    def handler(event: object, context: object) -> None:
        engine = sa.create_engine(mariadb.url())
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT no_such_column FROM no_such_table"))

    fds = open_fds()
    with pytest.raises(sa.exc.ProgrammingError):
        handler({}, None)
    assert open_fds() == fds
    assert mariadb.wait_new_sessions_gone(before) == []


def test_engine_per_invocation_over_a_module_level_pool_keeps_the_pool(mariadb: Any) -> None:
    from sqlalchemy.pool import QueuePool as Pool

    shared = Pool(lambda: __import__("pymysql").connect(**mariadb.connect_kwargs()))

    @managed_connection
    def handler(event: object, context: object) -> int:
        engine = sa.create_engine("mysql+pymysql://", pool=shared)  # per call, shared pool
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one())

    try:
        ids = {handler({}, None) for _ in range(4)}
        assert len(ids) == 1  # the pooled session served every invocation
        assert len(shared.dispatch.checkout) == 0  # no listener left behind per Engine
    finally:
        shared.dispose()


def test_clients_without_sqlalchemy_still_close_raw_pymysql_under_an_engine(
    mariadb: Any,
) -> None:
    @managed_connection(clients=["pymysql"])
    def handler(event: object, context: object) -> int:
        engine = sa.create_engine(mariadb.url(), poolclass=QueuePool)
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT CONNECTION_ID()")).scalar_one())

    # Checked by session id: a session an earlier test left to the garbage collector may
    # end meanwhile and would throw off a plain count.
    assert mariadb.wait_session_gone(handler({}, None))


@pytest.mark.parametrize("clients", ["all", ["pymysql"]])
def test_an_engine_built_lazily_in_the_first_invocation_keeps_working(
    mariadb: Any, clients: Any
) -> None:
    # GIVEN the common "global engine, built on first use" pattern
    holder: dict[str, Any] = {}
    before = mariadb.session_ids()

    @managed_connection(clients=clients)
    def handler(event: object, context: object) -> int:
        if "engine" not in holder:
            holder["engine"] = sa.create_engine(mariadb.url())
        with holder["engine"].connect() as conn:
            return int(conn.execute(sa.text("SELECT 1")).scalar_one())

    # THEN every invocation works: the first one's pool was disposed, never closed under
    # it; from then on the engine is a global like a module-level one, whose pool keeps
    # its one connection (bounded, never one more per invocation)
    try:
        assert handler({}, None) == 1
        assert mariadb.wait_new_sessions_gone(before) == []
        for _ in range(3):
            assert handler({}, None) == 1
            assert len(mariadb.wait_new_sessions(before, 1)) == 1
    finally:
        holder["engine"].dispose()


SYNC_DIALECTS = [
    pytest.param("pymysql", "mariadb", lambda s: s.url("pymysql"), id="pymysql"),
    pytest.param("mysqlclient", "mariadb", lambda s: s.url("mysqldb"), id="mysqlclient"),
    pytest.param(
        "mysql-connector",
        "mariadb",
        lambda s: s.url("mysqlconnector", ssl_disabled="True"),
        id="mysql-connector",
    ),
    pytest.param("psycopg", "postgres", lambda s: s.url("psycopg"), id="psycopg"),
    pytest.param("psycopg2", "postgres", lambda s: s.url("psycopg2"), id="psycopg2"),
]


@pytest.mark.parametrize("only_the_driver", [False, True], ids=["all", "driver"])
@pytest.mark.parametrize(("driver", "server_fixture", "url"), SYNC_DIALECTS)
def test_a_module_level_engine_over_each_driver_keeps_its_pooled_session(
    request: pytest.FixtureRequest,
    driver: str,
    server_fixture: str,
    url: Any,
    only_the_driver: bool,
) -> None:
    # The driver's own tracking sees the pool connect during the invocation: the
    # connection is the pool's all the same, whichever clients the scope tracks.
    server = request.getfixturevalue(server_fixture)
    engine = sa.create_engine(url(server))

    @managed_connection(clients=[driver] if only_the_driver else "all", on_leak="raise")
    def handler(event: object, context: object) -> int:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(server.session_id_sql)).scalar_one())

    try:
        first = handler({}, None)
        assert handler({}, None) == first
        assert engine.pool.checkedin() == 1
    finally:
        engine.dispose()
