"""A reused connection never carries a transaction from one invocation into the next.

Each case runs two invocations on one kept connection: the first inserts and raises, the
second inserts and commits. Only the second row may exist, read from a separate session.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pymysql
import pytest

import lambda_conn
from lambda_conn import RDSConnector, managed_connection, reused_connection

_tables = itertools.count(1)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]
    return [r for r in records if r["event"] == name]


def mysql_table(mariadb: Any) -> str:
    table = f"lc.reuse_tx_{next(_tables)}"
    mariadb.query(f"DROP TABLE IF EXISTS {table}")
    mariadb.query(f"CREATE TABLE {table} (id INT PRIMARY KEY) ENGINE=InnoDB")
    return table


def plain_mysql(mariadb: Any) -> Any:
    return reused_connection(lambda: pymysql.connect(**mariadb.connect_kwargs()))


def rds_mysql(mariadb: Any) -> Any:
    kwargs = mariadb.connect_kwargs()
    rds = RDSConnector(
        kwargs["host"],
        port=kwargs["port"],
        user=kwargs["user"],
        password=kwargs["password"],
        database=kwargs["database"],
        tls=False,
    )
    return rds.reused()


REUSED = {"reused_connection": plain_mysql, "RDSConnector.reused": rds_mysql}


def insert_handler(db: Any, table: str, placeholder: str = "%s") -> Callable[..., Any]:
    @managed_connection
    def handler(event: dict[str, Any], context: object) -> None:
        conn = db()
        cursor = conn.cursor()
        try:
            cursor.execute(f"INSERT INTO {table} VALUES ({placeholder})", (event["id"],))
        finally:
            cursor.close()
        if event.get("fail"):
            raise RuntimeError("failed half-way, after its write")
        if event.get("commit", True):
            conn.commit()

    return handler


@pytest.mark.parametrize("make", REUSED.values(), ids=REUSED.keys())
def test_a_failed_invocations_write_is_never_committed_by_the_next(
    mariadb: Any, make: Callable[[Any], Any], caplog: pytest.LogCaptureFixture
) -> None:
    table = mysql_table(mariadb)
    db = make(mariadb)
    handler = insert_handler(db, table)
    before = lambda_conn.stats()["rollbacks"]
    try:
        with caplog.at_level("INFO", logger="lambda_conn"), pytest.raises(RuntimeError):
            handler({"id": 1, "fail": True}, None)
        handler({"id": 2}, None)
        assert mariadb.query(f"SELECT id FROM {table} ORDER BY id") == [(2,)]
        assert db.reconnects == 0  # rolled back on the same session, not reconnected
        assert lambda_conn.stats()["rollbacks"] == before + 1
        [rolled_back] = events(caplog, "reused_connection_rolled_back")
        assert rolled_back["when"] == "end_of_invocation" and rolled_back["handler_failed"]
    finally:
        db.close()


def postgres_reused(postgres: Any, driver: str) -> Any:
    kwargs = postgres.connect_kwargs()
    if driver == "RDSConnector.reused":
        return RDSConnector(
            kwargs["host"],
            engine="postgresql",
            port=kwargs["port"],
            user=kwargs["user"],
            password=kwargs["password"],
            database=kwargs["dbname"],
            tls=False,
        ).reused()
    import importlib

    client = importlib.import_module(driver)
    return reused_connection(lambda: client.connect(**kwargs))


@pytest.mark.parametrize("driver", ["psycopg", "psycopg2", "RDSConnector.reused"])
def test_postgres_reused_connection_rolls_back_a_failed_invocation(
    postgres: Any, driver: str
) -> None:
    table = f"reuse_tx_{next(_tables)}"
    postgres.query(f"DROP TABLE IF EXISTS {table}")
    postgres.query(f"CREATE TABLE {table} (id INT PRIMARY KEY)")
    postgres.query(f"GRANT ALL ON {table} TO PUBLIC")
    db = postgres_reused(postgres, driver)
    handler = insert_handler(db, table)
    try:
        with pytest.raises(RuntimeError):
            handler({"id": 1, "fail": True}, None)
        handler({"id": 2}, None)
        assert postgres.query(f"SELECT id FROM {table} ORDER BY id") == [(2,)]
        assert db.reconnects == 0
    finally:
        db.close()


def test_a_successful_handler_that_forgot_to_commit_is_rolled_back_loudly(
    mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    table = mysql_table(mariadb)
    db = plain_mysql(mariadb)
    handler = insert_handler(db, table)
    try:
        with caplog.at_level("INFO", logger="lambda_conn"):
            handler({"id": 1, "commit": False}, None)
            handler({"id": 2}, None)
        assert mariadb.query(f"SELECT id FROM {table} ORDER BY id") == [(2,)]
        [warning] = [r for r in caplog.records if "reused_connection_rolled_back" in r.getMessage()]
        assert warning.levelname == "WARNING"
        assert json.loads(warning.getMessage())["handler_failed"] is False
    finally:
        db.close()


def test_a_transaction_left_open_outside_any_invocation_is_not_committed_by_one(
    mariadb: Any,
) -> None:
    table = mysql_table(mariadb)
    db = plain_mysql(mariadb)
    try:
        with db().cursor() as cursor:  # at Init, say: no scope, nothing ends it
            cursor.execute(f"INSERT INTO {table} VALUES (1)")
        insert_handler(db, table)({"id": 2}, None)
        assert mariadb.query(f"SELECT id FROM {table} ORDER BY id") == [(2,)]
    finally:
        db.close()


def test_nested_scopes_do_not_end_the_invocations_transaction(mariadb: Any) -> None:
    table = mysql_table(mariadb)
    db = plain_mysql(mariadb)

    @managed_connection
    def handler(event: object, context: object) -> None:
        with managed_connection(), db().cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} VALUES (1)")
        db().commit()  # the inner block's end is not the invocation's

    try:
        handler({}, None)
        assert mariadb.query(f"SELECT id FROM {table}") == [(1,)]
    finally:
        db.close()


def test_a_rollback_that_fails_discards_the_connection(
    mariadb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    table = mysql_table(mariadb)
    db = plain_mysql(mariadb)

    @managed_connection
    def handler(event: dict[str, Any], context: object) -> int:
        conn = db()
        with conn.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} VALUES (%s)", (event["id"],))
            cursor.execute("SELECT CONNECTION_ID()")
            session = int(cursor.fetchone()[0])
        if event.get("kill"):
            mariadb.kill(session)  # the server goes away mid-transaction
            assert mariadb.wait_session_gone(session)
            raise RuntimeError("lost the database")
        conn.commit()
        return session

    try:
        with caplog.at_level("INFO", logger="lambda_conn"), pytest.raises(RuntimeError):
            handler({"id": 1, "kill": True}, None)
        assert not db.connected  # discarded at the end of the invocation
        assert events(caplog, "reused_connection_rollback_failed")
        handler({"id": 2}, None)  # reopened on next use
        assert db.reconnects == 1
        assert mariadb.query(f"SELECT id FROM {table}") == [(2,)]
    finally:
        db.close()


def test_session_state_other_than_the_transaction_survives_as_documented(mariadb: Any) -> None:
    """docs/reuse-vs-close.md: the transaction ends; variables and temporary tables stay."""
    db = plain_mysql(mariadb)

    @managed_connection
    def first(event: object, context: object) -> None:
        with db().cursor() as cursor:
            cursor.execute("SET @lc_var = 5, SESSION sql_mode = 'ANSI_QUOTES'")
            cursor.execute("CREATE TEMPORARY TABLE lc_tmp (id INT) ENGINE=InnoDB")
            cursor.execute("INSERT INTO lc_tmp VALUES (1)")
        raise RuntimeError("failed after setting session state")

    @managed_connection
    def second(event: object, context: object) -> tuple[Any, ...]:
        with db().cursor() as cursor:
            cursor.execute("SELECT @lc_var, @@SESSION.sql_mode, (SELECT COUNT(*) FROM lc_tmp)")
            return tuple(cursor.fetchone())

    try:
        with pytest.raises(RuntimeError):
            first({}, None)
        # The variables and the temporary table survive; the row inserted in the
        # rolled-back transaction does not.
        assert second({}, None) == (5, "ANSI_QUOTES", 0)
    finally:
        db.close()


def test_psycopg_temporary_table_created_in_the_rolled_back_transaction_is_gone(
    postgres: Any,
) -> None:
    import psycopg

    db = reused_connection(lambda: psycopg.connect(**postgres.connect_kwargs()))

    @managed_connection
    def first(event: object, context: object) -> None:
        conn = db()
        conn.execute("CREATE TEMPORARY TABLE lc_tmp (id INT)")
        conn.commit()
        conn.execute("SELECT set_config('application_name', 'lc-kept', false)")
        conn.execute("CREATE TEMPORARY TABLE lc_tmp_rolled_back (id INT)")
        raise RuntimeError("failed half-way")

    @managed_connection
    def second(event: object, context: object) -> tuple[Any, ...]:
        row = (
            db()
            .execute(
                "SELECT current_setting('application_name'), "
                "to_regclass('pg_temp.lc_tmp') IS NOT NULL, "
                "to_regclass('pg_temp.lc_tmp_rolled_back') IS NOT NULL"
            )
            .fetchone()
        )
        assert row is not None
        return tuple(row)

    try:
        with pytest.raises(RuntimeError):
            first({}, None)
        # On PostgreSQL settings and DDL are transactional: what the failed transaction
        # set or created is undone; what was committed before survives.
        assert second({}, None) == ("", True, False)
    finally:
        db.close()


def test_an_async_handlers_failed_write_is_rolled_back_too(mariadb: Any) -> None:
    import asyncio

    table = mysql_table(mariadb)
    db = plain_mysql(mariadb)

    @managed_connection
    async def handler(event: dict[str, Any]) -> None:
        conn = db()
        with conn.cursor() as cursor:
            cursor.execute(f"INSERT INTO {table} VALUES (%s)", (event["id"],))
        await asyncio.sleep(0)
        if event.get("fail"):
            raise RuntimeError("failed half-way")
        conn.commit()

    try:
        with pytest.raises(RuntimeError):
            asyncio.run(handler({"id": 1, "fail": True}))
        asyncio.run(handler({"id": 2}))
        assert mariadb.query(f"SELECT id FROM {table} ORDER BY id") == [(2,)]
    finally:
        db.close()
