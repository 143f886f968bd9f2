"""Pinning you can see: statements classified by RDS Proxy's documented pinning rules on
tracked and reused connections (real MariaDB and PostgreSQL), logged once per connection
and class, never with values; counted by ``lambda-conn soak``; nothing wrapped when off."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
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
import psycopg2, psycopg2.extras, aiomysql, asyncpg
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
            (aiomysql.connection.Connection, "query"),
            (asyncpg.connection.Connection, "_get_statement"),
            (asyncpg.connection.Connection, "execute"),
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
    assert [json.loads(line) for line in out] == [[False] * 11, [True] * 11]


# --------------------------------------------------------------------------- every client

#: A statement that pins on each server, carrying a value that must never be logged.
PINNING_STATEMENTS = {
    "mariadb": ("mysql", f"SET @tenant = '{VALUE}'", "SET user variable"),
    "postgres": ("postgresql", f"SELECT set_config('app.user', '{VALUE}', false)", "set_config()"),
}
DECLARED = {i.name for i in integrations() if i.statements is not None}


def test_the_database_clients_declare_how_their_statements_are_observed() -> None:
    assert {client.name for client in DB_CLIENTS} == DECLARED


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


def _own_cursor_class() -> type:
    import psycopg2.extensions

    class AppCursor(psycopg2.extensions.cursor):  # an application's own, C execute inherited
        pass

    return AppCursor


def _psycopg2_ways(postgres: Any) -> dict[str, Callable[[], tuple[Any, Any]]]:
    """Each way a psycopg2 cursor's class is chosen: (connection, cursor)."""
    import psycopg2
    import psycopg2.extras

    def connect(**kwargs: Any) -> Any:
        return psycopg2.connect(**postgres.connect_kwargs(), **kwargs)

    def given_to_connect() -> tuple[Any, Any]:
        conn = connect(cursor_factory=psycopg2.extras.RealDictCursor)
        return conn, conn.cursor()

    def extras_given_to_cursor() -> tuple[Any, Any]:
        conn = connect()
        return conn, conn.cursor(cursor_factory=psycopg2.extras.DictCursor)

    def own_given_to_cursor() -> tuple[Any, Any]:
        conn = connect()
        return conn, conn.cursor(cursor_factory=_own_cursor_class())

    def own_given_positionally() -> tuple[Any, Any]:
        conn = connect()
        return conn, conn.cursor(None, _own_cursor_class())

    def set_on_the_connection() -> tuple[Any, Any]:
        conn = connect()
        conn.cursor_factory = _own_cursor_class()
        return conn, conn.cursor()

    def connection_factory() -> tuple[Any, Any]:
        conn = connect(connection_factory=psycopg2.extras.DictConnection)
        return conn, conn.cursor()  # DictConnection's own default: DictCursor

    def plain() -> tuple[Any, Any]:
        conn = connect()
        return conn, conn.cursor()

    return {
        "cursor_factory given to connect()": given_to_connect,
        "extras' DictCursor given to cursor()": extras_given_to_cursor,
        "own class given to cursor()": own_given_to_cursor,
        "own class given to cursor() positionally": own_given_positionally,
        "own class set as connection.cursor_factory": set_on_the_connection,
        "connection_factory=DictConnection": connection_factory,
        "plain": plain,
    }


PSYCOPG2_WAYS = [
    "cursor_factory given to connect()",
    "extras' DictCursor given to cursor()",
    "own class given to cursor()",
    "own class given to cursor() positionally",
    "own class set as connection.cursor_factory",
    "connection_factory=DictConnection",
    "plain",
]


@pytest.mark.parametrize("way", PSYCOPG2_WAYS)
def test_psycopg2_cursors_are_checked_however_their_class_is_chosen(
    postgres: Any, caplog: pytest.LogCaptureFixture, way: str
) -> None:
    import psycopg2.extensions

    enable_pinning_check()
    make = _psycopg2_ways(postgres)[way]
    kinds: list[type] = []

    @managed_connection
    def handler(event: Any, context: Any) -> Any:
        conn, cur = make()
        with cur:
            cur.executemany("SET search_path = %s", [(VALUE,)])
            cur.execute("SELECT pg_advisory_lock(%s) AS locked", (7731,))
            row = cur.fetchone()
            cur.execute("SELECT pg_advisory_unlock(%s)", (7731,))
        kinds.extend(type(x) for x in (conn, cur))
        return row

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        row = handler({}, None)
    classes = [e["statement_class"] for e in _pinning_events(caplog)]
    assert classes == ["SET session parameter", "session advisory lock"]
    named = "DictConnection" if way == "connection_factory=DictConnection" else "connection"
    assert {e["connection"] for e in _pinning_events(caplog)} == {f"psycopg2.{named}"}
    assert VALUE not in caplog.text
    conn_class, cursor_class = kinds
    assert isinstance(row, (tuple, list, dict))
    if way == "cursor_factory given to connect()":
        assert row == {"locked": ""}  # still a RealDictCursor
    elif way in ("extras' DictCursor given to cursor()", "connection_factory=DictConnection"):
        assert row["locked"] == ""  # still a DictCursor
    elif way.startswith("own class"):
        assert cursor_class.__mro__[1].__name__ == "AppCursor"
    else:
        assert row == ("",)
    assert issubclass(cursor_class, psycopg2.extensions.cursor)
    assert issubclass(conn_class, psycopg2.extensions.connection)


def test_psycopg2_held_cursors_and_composed_statements_are_checked(
    postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import psycopg2
    from psycopg2 import sql

    enable_pinning_check()

    @managed_connection
    def handler(event: Any, context: Any) -> None:
        conn = psycopg2.connect(**postgres.connect_kwargs())
        with conn.cursor("held", withhold=True) as cur:  # a named cursor WITH HOLD
            cur.execute(sql.SQL("SELECT {}").format(sql.Literal(VALUE)))
            cur.fetchall()
        with conn.cursor() as cur:
            cur.execute(sql.SQL("LISTEN {}").format(sql.Identifier("jobs")))
        conn.commit()

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        handler({}, None)
    classes = [e["statement_class"] for e in _pinning_events(caplog)]
    assert classes == ["cursor WITH HOLD", "LISTEN"]
    assert VALUE not in caplog.text


def test_asyncpg_simple_and_extended_protocol_statements_are_checked(
    postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    import asyncpg

    enable_pinning_check()

    @managed_connection
    async def handler(event: Any, context: Any) -> None:
        conn = await asyncpg.connect(
            host=postgres.host,
            port=postgres.port,
            user=postgres.user,
            password=postgres.password,
            database=postgres.database,
            ssl=False,
        )
        await conn.execute("LISTEN jobs")  # no arguments: the simple protocol
        await conn.execute("SELECT set_config('app.user', $1, false)", VALUE)  # extended
        statement = await conn.prepare("SELECT pg_advisory_lock($1)")
        await statement.fetchval(7731)
        await conn.executemany("SELECT pg_advisory_unlock($1)", [(7731,)])
        async with conn.transaction():
            async for _ in conn.cursor("SELECT 1"):  # a portal, not WITH HOLD: no pin
                pass

    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        asyncio.run(handler({}, None))
    classes = [e["statement_class"] for e in _pinning_events(caplog)]
    assert classes == ["LISTEN", "set_config()", "session advisory lock"]
    assert {e["connection"] for e in _pinning_events(caplog)} == {"asyncpg.Connection"}
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
