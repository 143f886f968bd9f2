"""Pinning you can see: statements classified by RDS Proxy's documented pinning rules on
tracked and reused connections (real MariaDB and PostgreSQL), logged once per connection
and class, never with values; counted by ``lambda-conn soak``; nothing wrapped when off."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from lambda_conn import managed_connection, reused_connection, stats, untracked
from lambda_conn._kinds import kind_of
from lambda_conn._pinning import classify_mysql, classify_postgres, enable_pinning_check
from lambda_conn._rds.connector import RDSConnector
from lambda_conn._registry import integrations
from tests.clients import DB_CLIENTS, Driver

VALUE = "Distinctive-Value-7731"  # must never reach a log line


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (f"SET @tenant = '{VALUE}'", "SET user variable"),
        ("set session wait_timeout = 5", "SET session variable (not tracked by the proxy)"),
        (
            "SET @@session.max_execution_time = 10",
            "SET session variable (not tracked by the proxy)",
        ),
        ("SET autocommit = 1, sql_mode = 'ANSI'", None),
        ("SET NAMES utf8mb4", None),
        ("SET time_zone = '+00:00'", None),
        ("SET TRANSACTION ISOLATION LEVEL READ COMMITTED", None),
        ("SET GLOBAL max_connections = 10", None),
        ("/* app */ PREPARE s FROM 'SELECT 1'", "PREPARE/EXECUTE (server-side prepared statement)"),
        ("CREATE TEMPORARY TABLE t (id INT)", "temporary table"),
        ("CREATE TABLE t (id INT)", None),
        ("LOCK TABLES t WRITE", "LOCK TABLES"),
        (f"SELECT GET_LOCK('{VALUE}', 1)", "GET_LOCK()"),
        ("SELECT 'x' " + "-- " * 6000, "statement over 16 KB"),
        ("SELECT * FROM settings WHERE name = 'SET @x'", None),
        (b"SET @x = 1", "SET user variable"),
    ],
)
def test_mysql_classes(sql: str | bytes, expected: str | None) -> None:
    assert classify_mysql(sql) == expected


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SET search_path = app", "SET session parameter"),
        ("set statement_timeout to 1000", "SET session parameter"),
        ("SET LOCAL statement_timeout = 1000", None),
        ("RESET ALL", "SET session parameter"),
        (f"SELECT set_config('app.user', '{VALUE}', false)", "set_config()"),
        ("PREPARE q AS SELECT 1", "PREPARE/DEALLOCATE"),
        ("DISCARD ALL", "DISCARD"),
        ("CREATE TEMP TABLE t (id int)", "temporary table"),
        ("CREATE TEMPORARY SEQUENCE s", "temporary sequence"),
        ("CREATE TABLE t (id int)", None),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "cursor WITH HOLD"),
        ("DECLARE c CURSOR FOR SELECT 1", None),
        ("LISTEN jobs", "LISTEN"),
        ("SELECT pg_advisory_lock(42)", "session advisory lock"),
        ("SELECT pg_try_advisory_lock(42)", "session advisory lock"),
        ("SELECT pg_advisory_xact_lock(42)", None),
        ("SELECT * FROM t WHERE note = 'LISTEN'", None),
    ],
)
def test_postgres_classes(sql: str, expected: str | None) -> None:
    assert classify_postgres(sql) == expected


def _pinning_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    out = []
    for record in caplog.records:
        if record.name == "lambda_conn" and "rds_proxy_pinning" in record.getMessage():
            out.append(json.loads(record.getMessage()))
    return out


def test_nothing_is_wrapped_until_the_check_is_on() -> None:
    code = """
import json, os
os.environ.pop("LAMBDA_CONN_PINNING_CHECK", None)
import pymysql, psycopg, wrapt, MySQLdb.connections, mysql.connector, mysql.connector.aio
import psycopg2, psycopg2.extras
from lambda_conn import managed_connection
@managed_connection
def handler(event, context): return 1
handler({}, None)
def wrapped():
    return [
        isinstance(vars(cls)[name], wrapt.FunctionWrapper)
        for cls, name in (
            (pymysql.connections.Connection, "query"),
            (MySQLdb.connections.Connection, "query"),
            (mysql.connector.connection.MySQLConnection, "cmd_query"),
            (mysql.connector.connection.MySQLConnection, "cmd_stmt_prepare"),
            (mysql.connector.aio.connection.MySQLConnection, "cmd_query"),
            (psycopg.Cursor, "execute"),
            (psycopg2.extras.RealDictCursor, "execute"),
        )
    ] + [isinstance(psycopg2.connect, wrapt.FunctionWrapper)]
print(json.dumps(wrapped()))
os.environ["LAMBDA_CONN_PINNING_CHECK"] = "1"
import lambda_conn._tracking as t; t._installed = False; t.install()
print(json.dumps(wrapped()))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert [json.loads(line) for line in out] == [[False] * 8, [True] * 8]


# --------------------------------------------------------------------------- every client

#: A statement that pins on each server, carrying a value that must never be logged.
PINNING_STATEMENTS = {
    "mariadb": ("mysql", f"SET @tenant = '{VALUE}'", "SET user variable"),
    "postgres": ("postgresql", f"SELECT set_config('app.user', '{VALUE}', false)", "set_config()"),
}
DECLARED = {i.name for i in integrations() if i.statements is not None}


def test_the_database_clients_declare_how_their_statements_are_observed() -> None:
    assert {"pymysql", "mysqlclient", "mysql-connector", "psycopg", "psycopg2"} == DECLARED


@pytest.fixture(params=[c for c in DB_CLIENTS if c.name in DECLARED], ids=str)
def db(request: pytest.FixtureRequest) -> Any:
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        yield Driver(request.param, request.getfixturevalue(request.param.server), loop)
    finally:
        loop.close()


def test_each_declared_client_logs_a_pinning_class_once_per_connection_without_values(
    db: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    enable_pinning_check()
    engine, sql, statement_class = PINNING_STATEMENTS[db.client.server]

    async def body() -> Any:
        conn = await db.connect()
        await db.run(conn, "SELECT 1")
        await db.run(conn, sql)
        await db.run(conn, sql)  # the same class on the same connection: not again
        return conn

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        db.invoke(body)
        db.invoke(body)  # a new connection: logged again
        with untracked():  # neither tracked nor reused: not checked
            conn = db.now(body)
        kind = kind_of(conn)
        if kind.aclose is not None:
            db.loop.run_until_complete(kind.aclose(conn))
        else:
            assert kind.close is not None
            kind.close(conn)
    events = _pinning_events(caplog)
    assert [(e["engine"], e["statement_class"]) for e in events] == [(engine, statement_class)] * 2
    assert VALUE not in caplog.text


def test_mysql_connector_binary_protocol_prepares_are_reported(
    mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import mysql.connector

    enable_pinning_check()

    @managed_connection
    def handler(event: Any, context: Any) -> Any:
        conn = mysql.connector.connect(
            host=mariadb.host,
            port=mariadb.port,
            user=mariadb.user,
            password=mariadb.password,
            database=mariadb.database,
            ssl_disabled=True,
        )
        cur = conn.cursor(prepared=True)  # COM_STMT_PREPARE, whatever the statement says
        cur.execute("SELECT %s", (VALUE,))
        return cur.fetchall()

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        assert handler({}, None) == [(VALUE,)]
    classes = [e["statement_class"] for e in _pinning_events(caplog)]
    assert classes == ["binary-protocol prepared statement (COM_STMT_PREPARE)"]
    assert VALUE not in caplog.text


def test_psycopg2_cursor_factories_and_held_cursors_are_checked(
    postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg2
    import psycopg2.extras

    enable_pinning_check()

    @managed_connection
    def handler(event: Any, context: Any) -> None:
        # a cursor_factory given to connect(): executemany too
        conn = psycopg2.connect(
            **postgres.connect_kwargs(), cursor_factory=psycopg2.extras.RealDictCursor
        )
        with conn.cursor() as cur:
            cur.executemany("SET search_path = %s", [(VALUE,)])
        # one given to cursor(): psycopg2.extras' own execute
        with conn.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor) as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (7731,))
            cur.execute("SELECT pg_advisory_unlock(%s)", (7731,))
        # a named cursor WITH HOLD, and psycopg2.sql
        from psycopg2 import sql

        with conn.cursor("held", withhold=True) as cur:
            cur.execute(sql.SQL("SELECT {}").format(sql.Literal(VALUE)))
            cur.fetchall()
        conn.commit()

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        handler({}, None)
    classes = [e["statement_class"] for e in _pinning_events(caplog)]
    assert classes == ["SET session parameter", "session advisory lock", "cursor WITH HOLD"]
    assert all(e["connection"] == "psycopg2.connection" for e in _pinning_events(caplog))
    assert VALUE not in caplog.text


def test_mysql_tracked_and_reused_connections_log_each_class_once(
    mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    enable_pinning_check()
    before = stats()["pinning"]

    @managed_connection
    def handler(event: Any, context: Any) -> None:
        conn = mariadb.connect()
        with conn.cursor() as cur:
            for _ in range(3):
                cur.execute("SET @tenant = %s", (VALUE,))
            cur.execute("SET NAMES utf8mb4")  # tracked by the proxy: no pin
            cur.execute("SELECT GET_LOCK(%s, 1)", (VALUE,))
            cur.execute("SELECT 1")

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        handler({}, None)
        handler({}, None)  # a new connection: logged again
        db = reused_connection(mariadb.connect)

        @managed_connection
        def reusing(event: Any, context: Any) -> None:
            with db().cursor() as cur:
                cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS tmp_pin (id INT)")

        reusing({}, None)
        reusing({}, None)  # the same kept connection: not again
        db.close()
        with untracked():  # neither tracked nor reused: not checked
            conn = mariadb.connect()
            with conn.cursor() as cur:
                cur.execute("SET @x = 1")
            conn.close()
    events = _pinning_events(caplog)
    assert [e["statement_class"] for e in events] == [
        "SET user variable",
        "GET_LOCK()",
        "SET user variable",
        "GET_LOCK()",
        "temporary table",
    ]
    assert all(e["engine"] == "mysql" for e in events)
    assert stats()["pinning"] - before == 5
    assert VALUE not in caplog.text


def test_postgres_connections_log_sets_locks_and_psycopg_prepares(
    postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    enable_pinning_check()
    rds = RDSConnector(
        postgres.host,
        engine="postgresql",
        port=postgres.port,
        user=postgres.user,
        password=postgres.password,
        database=postgres.database,
        tls=False,
    )

    @managed_connection
    def handler(event: Any, context: Any) -> None:
        conn = rds.connect()
        conn.execute("SELECT set_config('app.user', %s, false)", (VALUE,))
        conn.execute("SELECT pg_advisory_xact_lock(1)")  # transaction-scoped: no pin
        for _ in range(6):  # psycopg's prepare_threshold=5: prepared on the server
            conn.execute("SELECT %s::int", (1,))
        with conn.cursor("held", withhold=True) as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        conn.commit()

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        handler({}, None)
    classes = [e["statement_class"] for e in _pinning_events(caplog)]
    assert classes == [
        "set_config()",
        "server-side prepared statement (psycopg prepare_threshold)",
        "cursor WITH HOLD",
    ]
    assert VALUE not in caplog.text


def test_rds_connector_keyword_watches_its_connections(
    postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    rds = RDSConnector(
        postgres.host,
        engine="postgresql",
        port=postgres.port,
        user=postgres.user,
        password=postgres.password,
        database=postgres.database,
        tls=False,
        pinning_check=True,
    )
    with caplog.at_level(logging.WARNING, logger="lambda_conn"), untracked():
        conn = rds.connect()  # outside any scope: watched because the connector says so
        conn.execute("LISTEN jobs")
        conn.close()
    assert [e["statement_class"] for e in _pinning_events(caplog)] == ["LISTEN"]


def test_soak_summary_counts_pinning(mariadb: Any, tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            f"""
            import pymysql
            from lambda_conn import managed_connection

            @managed_connection
            def handler(event, context):
                conn = pymysql.connect(host={mariadb.host!r}, port={mariadb.port},
                                       user={mariadb.user!r}, password={mariadb.password!r})
                with conn.cursor() as cur:
                    cur.execute("SET @tenant = 'x'")
                    cur.execute("SET SESSION wait_timeout = 30")
                return 1
            """
        )
    )
    from lambda_conn.local._report import format_table
    from lambda_conn.local._soak import soak

    report = soak(
        "app.handler",
        3,
        handler_dir=tmp_path,
        env={"LAMBDA_CONN_PINNING_CHECK": "1"},
        output=subprocess.DEVNULL,
    )
    assert report.summary.succeeded == 3
    assert report.summary.pinning == 6
    assert report.summary.pinning_classes == {
        "SET user variable": 3,
        "SET session variable (not tracked by the proxy)": 3,
    }
    table = format_table(report.summary)
    assert "RDS Proxy pinning (logged)" in table and "  SET user variable" in table
    quiet = soak("app.handler", 2, handler_dir=tmp_path, output=subprocess.DEVNULL)
    assert quiet.summary.pinning == 0


def test_a_bad_environment_value_fails_at_decoration(monkeypatch: pytest.MonkeyPatch) -> None:
    from lambda_conn._errors import ConfigurationError
    from lambda_conn._pinning import ENV, enable_from_environment

    monkeypatch.setenv(ENV, "sometimes")
    with pytest.raises(ConfigurationError) as info:
        enable_from_environment()
    assert info.value.setting == ENV
