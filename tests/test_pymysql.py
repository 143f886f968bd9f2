"""PyMySQL under @managed_connection, proved on the server side of a private MariaDB."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pymysql
import pytest

from lambda_conn import managed_connection, register
from tests.servers.fds import open_fds


def aborted_clients(server: Any) -> int:
    return int(server.query("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")[0][1])


def test_connection_closed_with_quit_when_handler_returns(mariadb: Any) -> None:
    kept: list[Any] = []
    before_sessions = mariadb.session_ids()
    before_aborted = aborted_clients(mariadb)

    @managed_connection
    def handler(event: object, context: object) -> int:
        conn = pymysql.connect(**mariadb.connect_kwargs())
        kept.append(conn)  # a reference that would keep it open forever
        with conn.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            return int(cursor.fetchone()[0])

    fds = open_fds()
    session_id = handler({}, None)
    assert open_fds() == fds
    assert not kept[0].open
    assert mariadb.wait_new_sessions_gone(before_sessions) == []
    assert session_id not in {s["id"] for s in mariadb.client_sessions()}
    # COM_QUIT was sent: the server did not log an aborted connection
    assert aborted_clients(mariadb) == before_aborted


def test_connection_closed_when_handler_raises(mariadb: Any) -> None:
    before = mariadb.session_ids()
    error = LookupError("handler failed")

    @managed_connection
    def handler(event: object, context: object) -> None:
        conn = pymysql.connect(**mariadb.connect_kwargs())
        conn.query("SELECT 1")
        raise error

    fds = open_fds()
    with pytest.raises(LookupError) as info:
        handler({}, None)
    assert info.value is error
    assert open_fds() == fds
    assert mariadb.wait_new_sessions_gone(before) == []


def test_close_that_raises_still_closes_and_keeps_the_result(
    mariadb: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    before = mariadb.session_ids()

    def broken_close(self: Any) -> None:
        raise pymysql.err.InterfaceError(0, "close exploded")

    @managed_connection
    def handler(event: object, context: object) -> str:
        conn = pymysql.connect(**mariadb.connect_kwargs())
        conn.query("SELECT 1")
        monkeypatch.setattr(pymysql.connections.Connection, "close", broken_close)
        return "result"

    fds = open_fds()
    with caplog.at_level(logging.WARNING, logger="lambda_conn"):
        assert handler({}, None) == "result"
    assert open_fds() == fds
    assert mariadb.wait_new_sessions_gone(before) == []
    events = [json.loads(r.getMessage())["event"] for r in caplog.records]
    assert "close_failed" in events
    assert "connections_leaked" not in events  # the fallback force-close worked


def test_session_killed_mid_invocation(mariadb: Any) -> None:
    before = mariadb.session_ids()

    @managed_connection
    def handler(event: object, context: object) -> None:
        # An idle second connection killed too: PyMySQL notices nothing, and its socket
        # (in CLOSE_WAIT) stays open until someone closes it; the traceback keeps it alive.
        idle = pymysql.connect(**mariadb.connect_kwargs())
        mariadb.kill(idle.thread_id())
        conn = pymysql.connect(**mariadb.connect_kwargs())
        with conn.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            mariadb.kill(cursor.fetchone()[0])
            time.sleep(0.05)
            cursor.execute("SELECT 1")  # the server has gone away under us

    fds = open_fds()
    with pytest.raises(pymysql.err.OperationalError) as info:
        handler({}, None)
    assert info.value.args[0] in (2006, 2013, 4031, 1927)
    assert open_fds() == fds  # the killed idle connection's socket was closed too
    assert mariadb.wait_new_sessions_gone(before) == []


def test_server_down_connection_refused_leaks_nothing(make_mariadb: Any) -> None:
    server = make_mariadb()
    kwargs = server.connect_kwargs(connect_timeout=2)
    server.stop()

    @managed_connection
    def handler(event: object, context: object) -> None:
        pymysql.connect(**kwargs)

    fds = open_fds()
    with pytest.raises(pymysql.err.OperationalError) as info:
        handler({}, None)
    assert info.value.args[0] == 2003
    assert open_fds() == fds


def test_server_that_never_greets_is_bounded_by_timeouts(silent_server: Any) -> None:
    @managed_connection
    def handler(event: object, context: object) -> None:
        pymysql.connect(
            host="127.0.0.1",
            port=silent_server.port,
            user="x",
            password="y",
            connect_timeout=1,
            read_timeout=1,
            ssl_disabled=True,
        )

    fds = open_fds()
    started = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError):
        handler({}, None)
    assert time.monotonic() - started < 10
    assert silent_server.wait_open(0) == 0  # first: its accepted socket is ours too
    assert open_fds() == fds


def test_too_many_connections_closes_the_ones_that_did_open(make_mariadb: Any) -> None:
    server = make_mariadb(max_connections=3)
    before = server.session_ids()

    @managed_connection
    def handler(event: object, context: object) -> None:
        conns = []
        for _ in range(10):
            conns.append(pymysql.connect(**server.connect_kwargs()))

    fds = open_fds()
    with pytest.raises(pymysql.err.OperationalError) as info:
        handler({}, None)
    assert info.value.args[0] == 1040
    assert open_fds() == fds
    assert server.wait_new_sessions_gone(before) == []


def test_connection_opened_at_import_time_is_never_touched(mariadb: Any) -> None:
    outside = pymysql.connect(**mariadb.connect_kwargs())  # like a module-level connection

    @managed_connection
    def handler(event: object, context: object) -> int:
        with outside.cursor() as cursor:
            cursor.execute("SELECT 1")
            return int(cursor.fetchone()[0])

    try:
        assert handler({}, None) == 1
        assert handler({}, None) == 1
        assert outside.open
    finally:
        outside.close()


def test_clients_option_limits_tracking(mariadb: Any) -> None:
    kept: list[Any] = []

    @managed_connection(clients=["requests"])
    def handler(event: object, context: object) -> None:
        kept.append(pymysql.connect(**mariadb.connect_kwargs()))

    handler({}, None)
    try:
        assert kept[0].open  # not tracked: the user said so
    finally:
        kept[0].close()


def test_explicit_register_of_a_connection(mariadb: Any) -> None:
    with managed_connection() as scope:
        conn = register(pymysql.connect(**mariadb.connect_kwargs()))
        assert conn in scope
    assert not conn.open
