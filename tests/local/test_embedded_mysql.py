"""The embedded demo server's connection limit, as a real PyMySQL client meets it."""

from __future__ import annotations

import contextlib
from typing import Any

import pymysql
import pytest

from lambda_conn.local._demo_handlers import connect_dsn
from lambda_conn.local._embedded_mysql import EmbeddedMySQL
from lambda_conn.local._server_sampler import ServerSampler
from tests.servers._private import wait_for_count


def _close(conn: Any) -> None:
    if conn.open:  # closing twice raises in PyMySQL
        conn.close()


def _select_one(conn: Any) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])


def test_a_session_beyond_max_connections_gets_1040_as_from_mysql() -> None:
    with EmbeddedMySQL(max_connections=3) as server, contextlib.ExitStack() as stack:
        # GIVEN three sessions open: the limit
        conns = [connect_dsn(server.dsn) for _ in range(3)]
        for conn in conns:
            stack.callback(_close, conn)
        assert [_select_one(conn) for conn in conns] == [1, 1, 1]
        # WHEN a fourth client connects, THEN PyMySQL raises what MySQL's refusal raises
        with pytest.raises(pymysql.err.OperationalError) as info:
            connect_dsn(server.dsn)
        assert info.value.args == (1040, "Too many connections")
        assert (server.refused, server.open_sessions, server.peak_sessions) == (1, 3, 3)
        # AND once one closes, a new session is let in again
        conns.pop().close()
        assert wait_for_count(lambda: server.open_sessions, 2, timeout=10) == 2
        again = connect_dsn(server.dsn)
        stack.callback(_close, again)
        assert _select_one(again) == 1
        assert server.refused == 1


def test_without_a_limit_every_session_is_let_in() -> None:
    with EmbeddedMySQL() as server, contextlib.ExitStack() as stack:
        for _ in range(20):
            stack.callback(connect_dsn(server.dsn).close)
        assert (server.open_sessions, server.refused) == (20, 0)


def test_the_sampler_reads_it_as_it_reads_a_mysql_server() -> None:
    with EmbeddedMySQL(max_connections=4) as server:
        sampler = ServerSampler(server.dsn, interval_s=0.02).start()
        try:
            assert sampler.max_connections == 4
            conns = [connect_dsn(server.dsn) for _ in range(2)]
            assert wait_for_count(lambda: sampler.series.counts[-1], 2, timeout=10) == 2
            for conn in conns:
                conn.close()
            assert wait_for_count(lambda: sampler.series.counts[-1], 0, timeout=10) == 0
        finally:
            series = sampler.stop()
        assert series.peak == 2 and series.failed_samples == 0


@pytest.mark.parametrize("value", [0, -1, True, "5", 2.5])
def test_a_bad_limit_is_refused(value: Any) -> None:
    with pytest.raises(ValueError, match=r"max_connections=.* is not accepted: expected an"):
        EmbeddedMySQL(max_connections=value)
