"""Deliberate reuse across invocations: validated after a thaw, never swept, closed at exit."""

from __future__ import annotations

import time
from typing import Any

import pymysql
import pytest

import lambda_conn
from lambda_conn import ConfigurationError, ReusedConnection, managed_connection, reused_connection


def session_id(conn: Any) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


def test_reused_connection_is_not_swept_and_is_the_same_session(mariadb: Any) -> None:
    db = reused_connection(lambda: pymysql.connect(**mariadb.connect_kwargs()))

    @managed_connection
    def handler(event: object, context: object) -> int:
        return session_id(db())

    try:
        first = handler({}, None)
        assert handler({}, None) == first
        assert db.reconnects == 0
    finally:
        db.close()


def test_survives_a_server_side_kill_between_invocations(mariadb: Any) -> None:
    db = reused_connection(lambda: pymysql.connect(**mariadb.connect_kwargs()))

    @managed_connection
    def handler(event: object, context: object) -> int:
        return session_id(db())

    try:
        first = handler({}, None)
        mariadb.kill(first)  # e.g. a proxy or the server closed it while we were frozen
        time.sleep(0.1)
        second = handler({}, None)  # no error reaches the handler
        assert second != first
        assert db.reconnects == 1
        assert [s["id"] for s in mariadb.client_sessions()].count(second) == 1
    finally:
        db.close()


def test_survives_wait_timeout_expiry(make_mariadb: Any) -> None:
    server = make_mariadb(wait_timeout=1)
    db = reused_connection(lambda: pymysql.connect(**server.connect_kwargs()))

    @managed_connection
    def handler(event: object, context: object) -> int:
        return session_id(db())

    first = handler({}, None)
    time.sleep(2.5)  # the server closes the idle session
    assert server.wait_for_sessions(0) == 0
    second = handler({}, None)
    assert second != first
    db.close()


def test_validated_once_per_invocation(mariadb: Any) -> None:
    calls: list[int] = []

    def validate(conn: Any) -> bool:
        calls.append(1)
        return bool(conn.open)

    db = ReusedConnection(lambda: pymysql.connect(**mariadb.connect_kwargs()), validate=validate)

    @managed_connection
    def handler(event: object, context: object) -> None:
        for _ in range(5):
            db()

    try:
        handler({}, None)  # connects: nothing to validate
        handler({}, None)
        assert len(calls) == 1
    finally:
        db.close()


def test_max_age_replaces_an_old_connection(mariadb: Any) -> None:
    now = [1000.0]
    before = mariadb.session_ids()
    db = ReusedConnection(
        lambda: pymysql.connect(**mariadb.connect_kwargs()), max_age=60, clock=lambda: now[0]
    )

    @managed_connection
    def handler(event: object, context: object) -> int:
        return session_id(db())

    try:
        first = handler({}, None)
        now[0] += 30
        assert handler({}, None) == first
        now[0] += 31
        third = handler({}, None)
        assert third != first
        assert [s["id"] for s in mariadb.wait_new_sessions(before, 1)] == [third]  # old closed
    finally:
        db.close()


def test_close_reused_connections_closes_on_the_server(mariadb: Any) -> None:
    before = mariadb.session_ids()
    db = reused_connection(lambda: pymysql.connect(**mariadb.connect_kwargs()))
    db()
    assert len(mariadb.wait_new_sessions(before, 1)) == 1
    assert lambda_conn.close_reused_connections() >= 1
    assert mariadb.wait_new_sessions_gone(before) == []
    assert "not connected" in repr(db)


def test_decorator_form_and_repr_hide_credentials(mariadb: Any) -> None:
    kwargs = mariadb.connect_kwargs()

    @reused_connection(max_age=900)
    def database() -> Any:
        return pymysql.connect(**kwargs)

    try:
        database()
        text = repr(database)
        assert "database" in text and "connected" in text
        assert kwargs["password"] not in text
    finally:
        database.close()


@pytest.mark.parametrize(
    ("options", "setting"),
    [({"max_age": 0}, "max_age"), ({"max_age": "1h"}, "max_age"), ({"validate": 3}, "validate")],
)
def test_bad_options(options: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        ReusedConnection(lambda: None, **options)


def test_a_normal_interpreter_exit_closes_reused_connections_cleanly(mariadb: Any) -> None:
    import json
    import subprocess
    import sys

    # GIVEN a process that keeps a reused connection and then simply ends (no SIGTERM)
    code = (
        "import json, sys, pymysql\n"
        "from lambda_conn import managed_connection, reused_connection\n"
        "db = reused_connection(lambda: pymysql.connect(**json.loads(sys.argv[1])))\n"
        "@managed_connection\n"
        "def handler(event, context):\n"
        "    with db().cursor() as cur:\n"
        "        cur.execute('SELECT CONNECTION_ID()')\n"
        "        return cur.fetchone()[0]\n"
        "print(handler({}, None))\n"
    )
    aborted = mariadb.aborted_clients()
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(mariadb.connect_kwargs())],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    session = int(out.stdout)
    # THEN the server saw a COM_QUIT: the session is gone, and no client was aborted
    assert mariadb.wait_session_gone(session)
    assert mariadb.aborted_clients() == aborted
