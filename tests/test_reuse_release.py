"""``release_above``: a reused connection lets go of its session while the server is nearly
full, proved on the server's side for every synchronous database client.

Each server here has ``max_connections=20`` and the threshold is 0.5: the test itself
holds ten other sessions open to push the server above it (the admin session, the kept
one and ten others are 12 of 20). Samples are counted by the server too: MariaDB's
general log (a table), PostgreSQL's statement log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import lambda_conn
from lambda_conn import (
    ConfigurationError,
    RDSConnector,
    ReusedConnection,
    _utilization,
    managed_connection,
    reused_connection,
)
from lambda_conn._utilization import MARIADB, POSTGRES
from tests.clients import SYNC_DB_CLIENTS, DBClient
from tests.servers.mariadb import MariaDBServer
from tests.servers.postgres import PostgresServer

MAX_CONNECTIONS = 20
THRESHOLD = 0.5
OTHERS = 10  # sessions the test holds open to push the server above the threshold


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    """A small MariaDB and PostgreSQL that log every statement, for this module."""
    with (
        MariaDBServer(
            max_connections=MAX_CONNECTIONS, general_log=True, log_output="TABLE"
        ) as mariadb,
        PostgresServer(max_connections=MAX_CONNECTIONS, log_statement="all") as postgres,
    ):
        yield {"mariadb": mariadb, "postgres": postgres}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Case:
    """One way of keeping a connection: a client's own connect, or RDSConnector.reused."""

    def __init__(self, label: str, client: DBClient, rds: str | None = None) -> None:
        self.label, self.client, self.rds = label, client, rds

    def __str__(self) -> str:
        return self.label

    def reused(self, server: Any, clock: Clock, **options: Any) -> Any:
        if self.rds is None:
            client = self.client
            return ReusedConnection(
                lambda: client.connect(server), name=self.label, clock=clock, **options
            )
        return RDSConnector(
            server.host,
            engine=self.rds,
            port=server.port,
            user=server.user,
            password=server.password,
            database=server.database,
            tls=False,
            clock=clock,
        ).reused(**options)


_BY_NAME = {client.name: client for client in SYNC_DB_CLIENTS}
CASES = [Case(client.name, client) for client in SYNC_DB_CLIENTS] + [
    Case("RDSConnector.reused-mysql", _BY_NAME["pymysql"], rds="mysql"),
    Case("RDSConnector.reused-postgresql", _BY_NAME["psycopg"], rds="postgresql"),
]


def session_id(case: Case, server: Any, conn: Any) -> int:
    return int(case.client.run(conn, server.session_id_sql)[0][0])


def samples(server: Any) -> int:
    """Sampling statements the server has run (every session's)."""
    if isinstance(server, MariaDBServer):
        rows = server.query(
            "SELECT COUNT(*) FROM mysql.general_log WHERE argument = %s", (MARIADB,)
        )
        return int(rows[0][0])
    return int(server.log_text().count(POSTGRES))


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]
    return [r for r in records if r["event"] == name]


def handler_for(case: Case, server: Any, db: Any, queries: int = 1) -> Callable[..., Any]:
    @managed_connection
    def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
        conn = db()
        for _ in range(queries):
            case.client.run(conn, "SELECT 1")
        return {"session": session_id(case, server, conn), "answer": 42}

    return handler


class Others:
    """Sessions held open by the test (outside any scope), closed on exit."""

    def __init__(self, case: Case, server: Any, n: int) -> None:
        self.conns = [case.client.connect(server) for _ in range(n)]

    def __enter__(self) -> Others:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self.conns:
            conn.close()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_released_while_the_server_is_nearly_full_and_kept_below(
    servers: dict[str, Any], case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    server = servers[case.client.server]
    clock = Clock()
    db = case.reused(server, clock, release_above=THRESHOLD, sample_every=5.0)
    handler = handler_for(case, server, db)
    released = lambda_conn.stats()["released"]
    try:
        # GIVEN a server above the threshold (the test's ten other sessions)
        with Others(case, server, OTHERS), caplog.at_level("INFO", logger="lambda_conn"):
            before = server.session_ids()
            every_user = server.session_ids(user=None)
            result = handler({}, None)
            # THEN the handler's result is intact and the kept session is gone server-side
            assert result["answer"] == 42
            assert server.wait_new_sessions_gone(before) == []
            # nor any user's (what Threads_connected counts): the sample's too
            assert server.wait_new_sessions_gone(every_user, user=None) == []
            assert result["session"] not in server.session_ids()
            assert not db.connected
            assert lambda_conn.stats()["released"] == released + 1
            [event] = events(caplog, "reused_connection_released")
            assert event["name"] == db.name and event["threshold"] == THRESHOLD
            assert event["share"] > THRESHOLD
            assert event["max_connections"] == MAX_CONNECTIONS
            assert event["in_use"] >= OTHERS + 1
        # WHEN the others have gone and the last sample is older than sample_every
        clock.now += 5.0
        after = handler({}, None)
        # THEN the next invocation reconnected, and below the threshold it keeps that one
        assert after["session"] != result["session"]
        assert after["session"] in server.session_ids()
        assert db.connected
        clock.now += 5.0
        assert handler({}, None)["session"] == after["session"]
        assert lambda_conn.stats()["released"] == released + 1
        # AND the sample left no transaction open on the kept session
        states = {s.get("id", s.get("pid")): s.get("state") for s in server.client_sessions()}
        if case.client.server == "postgres":
            assert states[after["session"]] == "idle"
        else:
            trx = server.query(
                "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = %s",
                (after["session"],),
            )
            assert trx == [(0,)]
    finally:
        db.close()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_sampled_at_most_every_sample_every_seconds_never_per_query(
    servers: dict[str, Any], case: Case
) -> None:
    server = servers[case.client.server]
    clock = Clock()
    db = case.reused(server, clock, release_above=THRESHOLD, sample_every=5.0)
    handler = handler_for(case, server, db, queries=3)
    start = samples(server)
    try:
        counted = []
        for _ in range(6):  # invocations at 0, 1, ..., 5 s: samples at 0 and at 5
            handler({}, None)
            counted.append(samples(server) - start)
            clock.now += 1.0
        assert counted == [1, 1, 1, 1, 1, 2]
        clock.now += 3.5  # 4.5 s after the last sample
        handler({}, None)
        assert samples(server) - start == 2
    finally:
        db.close()


@pytest.mark.parametrize("case", CASES[:1] + CASES[3:4], ids=str)
def test_off_by_default_nothing_is_asked(servers: dict[str, Any], case: Case) -> None:
    server = servers[case.client.server]
    db = case.reused(server, Clock())
    handler = handler_for(case, server, db)
    start = samples(server)
    try:
        with Others(case, server, OTHERS):
            first = handler({}, None)
            assert handler({}, None)["session"] == first["session"]  # full server: kept
        assert samples(server) == start
    finally:
        db.close()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_sample_that_fails_never_loses_the_handlers_result(
    servers: dict[str, Any], case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    server = servers[case.client.server]
    db = case.reused(server, Clock(), release_above=THRESHOLD)

    @managed_connection
    def handler(event: object, context: object) -> str:
        conn = db()
        own = session_id(case, server, conn)
        conn.commit()  # nothing left to roll back: the end of the invocation goes to the sample
        server.end_session(own)  # the server ends the session before the sample runs
        assert server.wait_session_gone(own)
        return "the handler's result"

    try:
        with caplog.at_level("INFO", logger="lambda_conn"):
            assert handler({}, None) == "the handler's result"
        [failed] = events(caplog, "reused_connection_sample_failed")
        assert failed["name"] == db.name and failed["error"]
        assert events(caplog, "scope_exit_hook_failed") == []
        # the next invocation gets a working connection
        assert handler_for(case, server, db)({}, None)["answer"] == 42
    finally:
        db.close()


def test_a_client_that_cannot_be_sampled_is_kept_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import sqlite3

    db = reused_connection(lambda: sqlite3.connect(":memory:"), release_above=THRESHOLD)

    @managed_connection
    def handler(event: object, context: object) -> int:
        return int(db().execute("SELECT 7").fetchone()[0])

    try:
        with caplog.at_level("INFO", logger="lambda_conn"):
            assert handler({}, None) == 7
            kept = db()
            assert handler({}, None) == 7
            assert db() is kept
        [unsupported] = events(caplog, "reused_connection_release_unsupported")
        assert "psycopg" in unsupported["accepted"]
    finally:
        db.close()


BAD = [0, 0.0, 1, 1.5, -0.2, "x", "80%", True, False, [0.8]]


@pytest.mark.parametrize("value", BAD, ids=repr)
@pytest.mark.parametrize("make", ["reused_connection", "ReusedConnection", "RDSConnector.reused"])
def test_bad_release_above_is_refused_naming_the_setting(make: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as refused:
        _make(make, release_above=value)
    assert refused.value.setting == "release_above"
    assert "above 0 and below 1" in str(refused.value)
    assert str(refused.value).startswith("release_above=")


@pytest.mark.parametrize("value", [0, -1, "5s", True, None], ids=repr)
@pytest.mark.parametrize("make", ["reused_connection", "ReusedConnection", "RDSConnector.reused"])
def test_bad_sample_every_is_refused_naming_the_setting(make: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as refused:
        _make(make, release_above=THRESHOLD, sample_every=value)
    assert refused.value.setting == "sample_every"
    assert "seconds > 0" in str(refused.value)


@pytest.mark.parametrize("client", [c for c in SYNC_DB_CLIENTS if c.server == "mariadb"], ids=str)
def test_mysqls_two_statement_form_reads_what_mariadbs_one_statement_reads(
    servers: dict[str, Any], client: DBClient
) -> None:
    # MySQL 8 has no information_schema.GLOBAL_STATUS: there the sample is SHOW GLOBAL
    # STATUS in two round trips, which MariaDB answers too; both must read the same.
    server = servers["mariadb"]
    conn = client.connect(server)
    try:
        assert _utilization.family(conn) == "mariadb"
        with Others(Case(client.name, client), server, 3):
            one = _utilization.sample(conn, "mariadb")
            two = _utilization.sample(conn, "mysql")
            assert one == two
            assert one[1] == MAX_CONNECTIONS
            assert one[0] == server.threads_connected() + 1  # + the admin session
    finally:
        conn.close()


def _make(make: str, **options: Any) -> Any:
    if make == "reused_connection":
        return reused_connection(lambda: None, **options)
    if make == "ReusedConnection":
        return ReusedConnection(lambda: None, **options)
    return RDSConnector("db.example", user="app", password="pw", tls=False).reused(**options)
