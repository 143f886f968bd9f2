"""ServerSampler against the private MariaDB and PostgreSQL: the server's own count of
client connections, the sampler's own connection excluded."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from lambda_conn.local._dsn import DSNError, parse_dsn
from lambda_conn.local._server_sampler import SamplerError, ServerSampler
from tests.servers._private import free_port, wait_for_count


def _mysql_dsn(server: Any) -> str:
    return f"mysql://{server.user}:{server.password}@127.0.0.1:{server.port}/{server.database}"


def _pg_dsn(server: Any) -> str:
    from tests.servers.postgres import DATABASE, PASSWORD, USER

    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{server.port}/{DATABASE}?sslmode=disable"


@pytest.fixture(params=["mariadb", "postgres"])
def flavour(
    request: pytest.FixtureRequest,
    make_mariadb: Callable[..., Any],
    make_postgres: Callable[..., Any],
) -> Iterator[tuple[str, Any, Callable[[], Any], str, str]]:
    """(name, server, open an autocommit connection, DSN, the server's own count SQL) on a
    fresh server with max_connections=20 whose admin connection is closed: the sampler and
    the test's connections are then its only clients. Autocommit, because PostgreSQL's
    pg_stat_activity is a snapshot per transaction."""
    if request.param == "mariadb":
        server = make_mariadb(max_connections=20)
        dsn = _mysql_dsn(server)
        count_sql = "SHOW GLOBAL STATUS LIKE 'Threads_connected'"
    else:
        server = make_postgres(max_connections=20)
        dsn = _pg_dsn(server)
        count_sql = (
            "SELECT 'n', count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
        )
    server._close_admin()  # no fixture query runs while the sampler counts
    yield request.param, server, lambda: server.connect(autocommit=True), dsn, count_sql


def _latest(sampler: ServerSampler) -> int:
    counts = sampler.series.counts
    return counts[-1] if counts else -1


def _server_count(conn: Any, sql: str) -> int:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return int(cursor.fetchone()[1])


def test_counts_follow_real_connections_and_exclude_the_sampler(
    flavour: tuple[str, Any, Callable[[], Any], str, str],
) -> None:
    name, server, open_connection, dsn, count_sql = flavour
    # GIVEN a sampler on a server with no other client
    sampler = ServerSampler(dsn, interval_s=0.02).start()
    try:
        assert sampler.max_connections == 20
        assert wait_for_count(lambda: _latest(sampler), 0, timeout=10) == 0
        # WHEN the test opens 5 connections
        conns = [open_connection() for _ in range(5)]
        # THEN the sampler sees 5, while the server itself counts 6 (the sampler too)
        assert wait_for_count(lambda: _latest(sampler), 5, timeout=10) == 5
        assert _server_count(conns[0], count_sql) == 6
        # AND closing 3 of them brings the count down to 2, then 0
        for conn in conns[:3]:
            conn.close()
        assert wait_for_count(lambda: _latest(sampler), 2, timeout=10) == 2
        for conn in conns[3:]:
            conn.close()
        assert wait_for_count(lambda: _latest(sampler), 0, timeout=10) == 0
    finally:
        series = sampler.stop()
    assert series.peak == 5
    assert series.max_connections == 20
    assert series.failed_samples == 0
    assert series.flavour == ("mysql" if name == "mariadb" else "postgresql")
    assert list(series.times) == sorted(series.times) and series.times[0] >= 0
    assert series.samples[0] == (series.times[0], series.counts[0])
    assert len(series.samples) >= 4
    as_dict = series.to_dict()
    assert as_dict["peak"] == 5 and len(as_dict["t"]) == len(as_dict["connections"])
    assert server.password not in str(as_dict) + repr(series)


def test_the_sampler_closes_its_connection_on_stop(
    flavour: tuple[str, Any, Callable[[], Any], str, str],
) -> None:
    _, _, open_connection, dsn, count_sql = flavour
    with contextlib.closing(open_connection()) as conn:
        before = _server_count(conn, count_sql)
        with ServerSampler(dsn) as sampler:
            assert _server_count(conn, count_sql) == before + 1
        assert wait_for_count(lambda: _server_count(conn, count_sql), before, timeout=10) == before
        assert sampler.series.peak == 1  # the test's own connection


def test_a_killed_sampler_session_is_counted_and_reconnected(make_mariadb: Any) -> None:
    # GIVEN a sampler whose session the server kills (a failover, a wait_timeout)
    server = make_mariadb()
    sampler = ServerSampler(_mysql_dsn(server), interval_s=0.02).start()
    try:
        assert wait_for_count(lambda: len(sampler.series.counts), 3, timeout=10) >= 3
        assert server.kill_all() == 1  # the sampler is the only 'lc' session
        # THEN it keeps sampling on a new connection and counts the lost sample
        assert wait_for_count(lambda: sampler.series.failed_samples, 1, timeout=10) == 1
        taken = len(sampler.series.counts)
        assert wait_for_count(lambda: len(sampler.series.counts), taken + 3, timeout=10) >= taken
    finally:
        series = sampler.stop()
    assert series.failed_samples == 1
    # the new connection closed by stop() too (the server ends a session just after QUIT)
    assert server.wait_for_sessions(0) == 0


@pytest.mark.parametrize("scheme", ["mysql", "postgresql"])
def test_an_unreachable_server_fails_start_without_the_password(scheme: str) -> None:
    dsn = f"{scheme}://app:s3cret-pw@127.0.0.1:{free_port()}/app"  # nothing listens there
    sampler = ServerSampler(dsn)
    with pytest.raises(SamplerError) as info:
        sampler.start()
    message = str(info.value)
    assert f"cannot connect to {scheme}://***@127.0.0.1:" in message
    assert "s3cret-pw" not in message + repr(info.value) + repr(info.value.__cause__)
    with pytest.raises(SamplerError, match="never started"):
        sampler.stop()


def test_wrong_credentials_are_reported_redacted(make_mariadb: Any) -> None:
    server = make_mariadb()
    dsn = f"mysql://lc:wrong-pw-123@127.0.0.1:{server.port}/lc"
    with pytest.raises(SamplerError) as info:
        ServerSampler(dsn).start()
    assert "Access denied" in str(info.value)
    assert "wrong-pw-123" not in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("redis://:pw-9@127.0.0.1:6379/0", "expected mysql://user:password@host:port/db"),
        ("mysql://u:pw-9@127.0.0.1:99999/db", "the port is not a number"),
    ],
)
def test_a_dsn_it_cannot_use_is_refused_at_once(dsn: str, expected: str) -> None:
    with pytest.raises(DSNError, match=expected) as info:
        ServerSampler(dsn)
    assert "pw-9" not in str(info.value)
    assert "***@127.0.0.1" in str(info.value)


@pytest.mark.parametrize("interval", [0, -1, 61, True, "0.1"])
def test_a_bad_interval_is_refused(interval: Any) -> None:
    with pytest.raises(ValueError, match=r"interval_s=.* is not accepted: expected seconds"):
        ServerSampler("mysql://u@127.0.0.1/db", interval_s=interval)


def test_the_parser_unquotes_credentials_and_keeps_them_out_of_its_repr() -> None:
    parsed = parse_dsn("postgres://a%40b:p%2Fw@db.example:6543/app?sslmode=require")
    assert (parsed.flavour, parsed.user, parsed.password, parsed.host, parsed.port) == (
        "postgresql",
        "a@b",
        "p/w",
        "db.example",
        6543,
    )
    assert parsed.query == {"sslmode": "require"} and parsed.database == "app"
    assert "p/w" not in repr(parsed)
    assert parse_dsn("mysql://u@h/d").port == 3306


def test_sample_now_counts_between_ticks(
    flavour: tuple[str, Any, Callable[[], Any], str, str],
) -> None:
    _, _, open_connection, dsn, _ = flavour
    # GIVEN a sampler whose thread will not tick during the test
    sampler = ServerSampler(dsn, interval_s=60).start()
    try:
        conns = [open_connection() for _ in range(3)]
        # WHEN a sample is asked for while 3 connections are open, then they close
        sampler.sample_now()
        for conn in conns:
            conn.close()
    finally:
        series = sampler.stop()
    # THEN that sample holds the 3 that neither the first nor the last sample saw
    assert list(series.counts)[:2] == [0, 3]
    assert series.peak == 3
    sampler.sample_now()  # after stop(): nothing happens, nothing raises
    assert sampler.series.counts == series.counts
