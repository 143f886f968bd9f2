"""RDSConnector against the private MariaDB: TLS verification, retries, deadlines, reuse.

Retries are forced for real (``max_connections`` lowered until the server answers 1040,
the server stopped), with the sleep injected so the test decides when a slot frees up.
The deadline tests use a server that accepts and never greets; they bound the elapsed
time loosely ("well under Lambda's timeout"), never to a tight figure.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from lambda_conn import managed_connection
from lambda_conn._rds.connector import ConnectError, RDSConnector
from lambda_conn._rds.deadline import Timeouts
from lambda_conn._rds.retry import Retry
from tests.servers import MariaDBNotInstalled, MariaDBServer, SilentTCPServer
from tests.servers.mariadb import generate_tls_files
from tests.servers.silent import StallingRelay


class FakeContext:
    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def tls_mariadb() -> Iterator[MariaDBServer]:
    """A private MariaDB with TLS, its certificates generated for this run."""
    try:
        server = MariaDBServer(tls=True)
    except MariaDBNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.close()


def connector_for(server: MariaDBServer, **overrides: Any) -> RDSConnector:
    options: dict[str, Any] = {
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "database": server.database,
    }
    if server.tls is not None:
        options["ssl_ca"] = server.tls.ca
    else:
        options["tls"] = False
    options.update(overrides)
    return RDSConnector(server.host, **options)


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"a non-retryable error was retried (slept {seconds})")


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]


def fill(server: MariaDBServer) -> list[pymysql.connections.Connection]:
    """Open connections until the server answers 1040; returns the ones it accepted."""
    held = []
    while True:
        try:
            held.append(server.connect())
        except pymysql.err.OperationalError as exc:
            assert exc.args[0] == 1040, exc
            return held
        assert len(held) < 50, "max_connections was not lowered"


def close_all(conns: list[pymysql.connections.Connection]) -> None:
    for conn in conns:
        if conn.open:
            conn.close()


# --------------------------------------------------------------------------- TLS


def test_verified_tls_with_the_generated_ca(tls_mariadb: MariaDBServer) -> None:
    rds = connector_for(tls_mariadb, retry=Retry(sleep=no_sleep))
    assert rds.verify is True  # on by default when a CA is given
    conn = rds.connect(FakeContext(5000))
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            version = cur.fetchone()[1]
            cur.execute("SELECT CURRENT_USER()")
            user = cur.fetchone()[0]
    finally:
        conn.close()
    assert version.startswith("TLSv1.")
    assert user == f"{tls_mariadb.user}@127.0.0.1"


def test_a_wrong_ca_is_refused_and_not_retried(tls_mariadb: MariaDBServer, tmp_path: Path) -> None:
    # GIVEN a CA that did not sign the server's certificate
    before_ids = tls_mariadb.session_ids(user=None)
    other = generate_tls_files(tmp_path / "other")
    rds = connector_for(tls_mariadb, ssl_ca=other.ca, retry=Retry(sleep=no_sleep))
    # WHEN connecting THEN the certificate is refused at once (no retry can fix it)
    with pytest.raises(pymysql.err.OperationalError) as info:
        rds.connect(FakeContext(5000))
    assert not isinstance(info.value, ConnectError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert tls_mariadb.wait_new_sessions_gone(before_ids) == []


def test_tls_sessions_are_resumed_per_endpoint_and_dropped_on_failure(
    tls_mariadb: MariaDBServer,
) -> None:
    before_ids = tls_mariadb.session_ids(user=None)
    from lambda_conn._rds.resume import forget_all

    forget_all()

    def resumed(rds: RDSConnector) -> bool:
        conn = rds.connect()
        try:
            return bool(conn._sock.session_reused)
        finally:
            conn.close()

    rds = connector_for(tls_mariadb)
    # GIVEN a first connect (a full handshake), THEN the next ones resume its session
    assert [resumed(rds) for _ in range(3)] == [False, True, True]
    # and another connector to the same endpoint shares it
    assert resumed(connector_for(tls_mariadb))
    # WHEN a connect that offered the session fails, THEN the session is dropped
    with pytest.raises(pymysql.err.OperationalError):
        connector_for(tls_mariadb, password="wrong", retry=Retry(sleep=no_sleep)).connect()
    assert resumed(rds) is False
    # resume_tls=False: a full handshake every time
    assert not resumed(connector_for(tls_mariadb, resume_tls=False))
    assert tls_mariadb.wait_new_sessions_gone(before_ids) == []


def test_an_accepted_session_is_kept_not_read_back_until_the_server_refuses_it_twice() -> None:
    """Reading ``SSLSocket.session`` re-parses the server's certificate (CPython copies the
    session through DER): a session the server accepted is offered again as it is."""
    from lambda_conn._rds.resume import resuming

    with MariaDBServer(tls=True) as server:
        rds = connector_for(server)
        assert rds.ssl_context is not None
        state = resuming(rds.ssl_context, rds.host, rds.port)
        state.forget()

        def connect() -> tuple[bool, Any]:
            conn = rds.connect()
            try:
                return bool(conn._sock.session_reused), state.session
            finally:
                conn.close()

        # GIVEN a full handshake, THEN the next connects resume the very session it left
        reused, first = connect()
        assert not reused and first is not None
        assert [connect() for _ in range(3)] == [(True, first)] * 3
        # WHEN the server restarts (new ticket keys) THEN the refused session is replaced
        server.restart()
        reused, second = connect()
        assert not reused and second is not first
        assert [connect() for _ in range(2)] == [(True, second)] * 2
        # WHEN it refuses an accepted session a second time, THEN it is taken to issue
        # single-use tickets: each connect keeps the newest session from then on
        server.restart()
        assert not connect()[0]
        assert state.single_use
        sessions = [connect() for _ in range(3)]
        assert all(reused for reused, _ in sessions)
        assert len({id(session) for _, session in sessions}) == 3
        assert server.wait_for_sessions(0) == 0


def test_the_shared_ssl_context_is_used(tls_mariadb: MariaDBServer) -> None:
    from lambda_conn._tls import tls_context

    assert tls_mariadb.tls is not None
    rds = connector_for(tls_mariadb)
    conn = rds.connect()
    try:
        assert conn.ctx.context is tls_context(ca=tls_mariadb.tls.ca, verify=True)
    finally:
        conn.close()


# --------------------------------------------------------------------------- retries


def test_too_many_connections_is_retried_until_a_slot_frees(
    make_mariadb: Callable[..., MariaDBServer], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a server at max_connections: every new connect gets 1040
    server = make_mariadb(max_connections=10)
    held = fill(server)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the burst ends while we back off
        slept.append(seconds)
        freed = held.pop()
        session = freed.thread_id()
        freed.close()
        # the server frees the slot just after QUIT: the retry must not race it
        assert server.wait_session_gone(session)

    rds = connector_for(server, retry=Retry(base_delay=0.2, sleep=sleep, random=lambda: 0.5))
    try:
        # WHEN connecting
        with caplog.at_level(logging.INFO, logger="lambda_conn"):
            conn = rds.connect(FakeContext(10_000))
        # THEN the second attempt gets the freed slot, after one jittered backoff
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        conn.close()
    finally:
        close_all(held)
    assert slept == [pytest.approx(0.1)]
    retry, connected = events(caplog)
    assert retry["event"] == "rds_connect_retry" and retry["code"] == 1040
    assert retry["attempt"] == 1 and retry["delay_ms"] == 100.0
    assert connected == {**connected, "event": "rds_connected_after_retries", "attempts": 2}


def test_gives_up_after_the_configured_attempts(
    make_mariadb: Callable[..., MariaDBServer],
) -> None:
    server = make_mariadb(max_connections=10)
    held = fill(server)
    slept: list[float] = []
    rds = connector_for(server, retry=Retry(attempts=3, sleep=slept.append))
    try:
        with pytest.raises(ConnectError) as info:
            rds.connect(FakeContext(10_000))
    finally:
        close_all(held)
    error = info.value
    assert (error.reason, error.attempts, len(slept)) == ("attempts", 3, 2)
    # still a PyMySQL error with PyMySQL's shape: (code, message)
    assert isinstance(error, pymysql.err.OperationalError)
    assert error.args[0] == 1040
    assert isinstance(error.__cause__, pymysql.err.OperationalError)
    assert error.__cause__.args[0] == 1040
    assert ": 3 attempts (retry.attempts=3)" in str(error)


def test_the_deadline_cuts_the_backoff_short(
    make_mariadb: Callable[..., MariaDBServer],
) -> None:
    # GIVEN a full server, 10 s of budget and backoff delays of 3 s, 6 s, then 8 s (capped)
    server = make_mariadb(max_connections=10)
    held = fill(server)
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    retry = Retry(attempts=10, base_delay=3, max_delay=8, sleep=sleep, random=lambda: 1.0)
    rds = connector_for(server, retry=retry, clock=clock)
    try:
        # WHEN connecting with an explicit deadline
        with pytest.raises(ConnectError) as info:
            rds.connect(deadline=10.0)
    finally:
        close_all(held)
    # THEN after 3 + 6 s slept, 1 s is left: no room for an 8 s backoff, so it stops there
    assert (info.value.reason, info.value.attempts) == ("deadline", 3)
    assert clock.now == 9.0
    assert info.value.args[0] == 1040


def test_a_server_that_is_down_is_retried_then_reported(
    make_mariadb: Callable[..., MariaDBServer],
) -> None:
    server = make_mariadb()
    rds = connector_for(server, retry=Retry(attempts=2, sleep=lambda s: None))
    server.stop()
    with pytest.raises(ConnectError) as info:
        rds.connect(FakeContext(5000))
    assert info.value.args[0] == 2003
    assert info.value.attempts == 2


# --------------------------------------------------------------------------- deadlines


def test_a_server_that_never_greets_cannot_hold_the_invocation(
    silent_server: SilentTCPServer,
) -> None:
    # GIVEN a server that accepts and never greets, and 1.5 s left in the invocation
    rds = RDSConnector(
        silent_server.host, port=silent_server.port, user="app", password="pw", tls=False
    )
    started = time.monotonic()
    # WHEN connecting
    with pytest.raises(ConnectError) as info:
        rds.connect(FakeContext(1500))
    elapsed = time.monotonic() - started
    # THEN the connect ends at the deadline (1.5 s - 0.5 s margin), not at Lambda's timeout
    assert info.value.reason == "deadline"
    assert info.value.args[0] == 2013  # lost (timed out) during the handshake
    assert elapsed < 1.5  # within the invocation's remaining time
    assert silent_server.accepted >= 1
    assert silent_server.wait_open(0) == 0  # every attempt's socket was closed


@pytest.mark.parametrize("tls", [False, True], ids=["login", "tls-handshake"])
def test_a_server_that_greets_late_and_stalls_cannot_hold_the_invocation(
    mariadb: MariaDBServer, tls_mariadb: MariaDBServer, tls: bool
) -> None:
    # GIVEN a peer that greets just before the deadline, then never answers the login or
    # the TLS handshake (each socket operation alone stays inside its timeout), 1.5 s left
    server = tls_mariadb if tls else mariadb
    with StallingRelay((server.host, server.port), greet_after=0.8) as relay:
        tls_options: dict[str, Any] = (
            {"ssl_ca": server.tls.ca, "verify": True} if server.tls else {"tls": False}
        )
        rds = RDSConnector(
            relay.host, port=relay.port, user=server.user, password="pw", **tls_options
        )
        started = time.monotonic()
        # WHEN connecting
        with pytest.raises(ConnectError) as info:
            rds.connect(FakeContext(1500))
        elapsed = time.monotonic() - started
        # THEN the login as a whole ends at the deadline (1.0 s), not one timeout later
        assert info.value.reason == "deadline"
        assert info.value.args[0] == 2013
        assert "did not finish within" in str(info.value)
        assert elapsed < 1.4
        assert relay.wait_open(0) == 0  # the cut-off socket was closed


def test_the_handshake_is_bounded_without_a_deadline(silent_server: SilentTCPServer) -> None:
    # PyMySQL's connect_timeout covers the TCP connect only: alone, this would block forever.
    rds = RDSConnector(
        silent_server.host,
        port=silent_server.port,
        user="app",
        tls=False,
        timeouts=Timeouts(connect=0.3),
        retry=Retry(attempts=2, sleep=lambda s: None),
    )
    with pytest.raises(ConnectError) as info:
        rds.connect()
    assert (info.value.reason, info.value.attempts) == ("attempts", 2)
    assert silent_server.wait_open(0) == 0


def test_query_timeouts_follow_the_invocation(tls_mariadb: MariaDBServer) -> None:
    rds = connector_for(tls_mariadb)
    # GIVEN a connection opened with 1.5 s left in the invocation
    conn = rds.connect(FakeContext(1500))
    try:
        assert 0 < conn._read_timeout <= 1.0 and 0 < conn._write_timeout <= 1.0
        started = time.monotonic()
        # WHEN a query hangs THEN it fails at the deadline instead of at Lambda's timeout
        with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
            cur.execute("SELECT SLEEP(30)")
        assert info.value.args[0] == 2013
        assert time.monotonic() - started < 10
    finally:
        if conn.open:
            conn.close()
        tls_mariadb.kill_all()


def test_explicit_timeouts_still_end_at_the_deadline(tls_mariadb: MariaDBServer) -> None:
    rds = connector_for(tls_mariadb, timeouts=Timeouts(connect=5, read=60, write=None))
    conn = rds.connect(FakeContext(3000))
    try:
        assert conn._read_timeout <= 2.5 and conn._write_timeout <= 2.5
    finally:
        conn.close()
    unbounded = rds.connect()  # no context, no deadline: the explicit values
    try:
        assert unbounded._read_timeout == 60 and unbounded._write_timeout is None
    finally:
        unbounded.close()


# --------------------------------------------------------------------------- scopes and reuse


def test_a_per_invocation_connection_is_closed_by_managed_connection(
    tls_mariadb: MariaDBServer,
) -> None:
    before_ids = tls_mariadb.session_ids(user=None)
    rds = connector_for(tls_mariadb)
    kept: list[Any] = []  # a kept reference: only the scope's close can end the session

    @managed_connection
    def handler(event: dict[str, Any], context: Any) -> int:
        conn = rds.connect(context)  # not closed here: the scope closes it
        kept.append(conn)
        with conn.cursor() as cur:
            cur.execute("SELECT 41 + 1")
            return int(cur.fetchone()[0])

    assert handler({}, FakeContext(5000)) == 42
    assert tls_mariadb.wait_new_sessions_gone(before_ids) == []
    assert not kept[0].open


def test_reused_connection_reconnects_within_each_invocation(
    tls_mariadb: MariaDBServer,
) -> None:
    before_ids = tls_mariadb.session_ids(user=None)
    rds = connector_for(tls_mariadb)
    db = rds.reused(max_age=900)

    @managed_connection
    def handler(event: dict[str, Any], context: Any) -> tuple[int, float]:
        conn = db(context)
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            return int(cur.fetchone()[0]), conn._read_timeout

    try:
        first, read_timeout = handler({}, FakeContext(3000))
        assert read_timeout <= 2.5
        # The same connection next invocation, with that invocation's timeouts
        again, read_timeout = handler({}, FakeContext(20_000))
        assert again == first and 2.5 < read_timeout <= 19.5
        assert (
            len(tls_mariadb.wait_new_sessions(before_ids, 1)) == 1
        )  # kept open between invocations
        # The server drops it while the environment is frozen: the next one reconnects
        tls_mariadb.kill(first)
        assert tls_mariadb.wait_new_sessions_gone(before_ids) == []
        replaced, _ = handler({}, FakeContext(3000))
        assert replaced != first and db.reconnects == 1
    finally:
        db.close()
    assert tls_mariadb.wait_new_sessions_gone(before_ids) == []
    assert repr(db).startswith("<ReusedConnection 'rds:127.0.0.1:")
