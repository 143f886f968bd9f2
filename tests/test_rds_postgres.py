"""RDSConnector(engine="postgresql") against the private PostgreSQL: TLS verify-full with
certificates generated for the run, retries on 53300 / 57P03 / refused, none on 28P01,
3D000 or a certificate failure, the connect bounded as a whole, IAM, reuse, bad input.

Retries are forced for real: ``max_connections`` lowered until the server answers 53300,
a "smart" shutdown (new connections refused with 57P03 while a session remains) followed
by the server going away (refused) and starting again, all inside the injected sleep.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg2
import pytest

from lambda_conn import managed_connection
from lambda_conn._errors import ConfigurationError
from lambda_conn._rds.connector import ConnectError, RDSConnector, behind_proxy
from lambda_conn._rds.deadline import Timeouts
from lambda_conn._rds.iam import IAMTokenProvider
from lambda_conn._rds.postgres import sqlstate
from lambda_conn._rds.retry import Retry
from tests.servers.fds import open_fds
from tests.servers.postgres import PostgresServer
from tests.servers.silent import SilentTCPServer
from tests.servers.tls import generate_tls_files

DRIVERS = ["psycopg", "psycopg2"]
SECRET = "Pg-Distinctive-S3cret-9431"  # looked for in every log line, repr and error


class FakeContext:
    def __init__(self, remaining_ms: int = 5000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def no_sleep(seconds: float) -> None:
    raise AssertionError(f"a non-retryable error was retried (slept {seconds})")


def events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "lambda_conn"]


@pytest.fixture(scope="module")
def tls_pg() -> Iterator[PostgresServer]:
    server = PostgresServer(tls=True)
    server.query(f"CREATE ROLE app LOGIN PASSWORD '{SECRET}'")
    server.query(f"GRANT ALL ON DATABASE {server.database} TO app")
    yield server
    server.close()


def connector_for(server: PostgresServer, **overrides: Any) -> RDSConnector:
    options: dict[str, Any] = {
        "engine": "postgresql",
        "port": server.port,
        "user": "app",
        "password": SECRET,
        "database": server.database,
    }
    if server.tls is not None:
        options["ssl_ca"] = server.tls.ca
    else:
        options["tls"] = False
    options.update(overrides)
    return RDSConnector(server.host, **options)


def ssl_in_use(conn: Any) -> bool:
    cur = conn.cursor()
    cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    row = cur.fetchone()
    cur.close()
    return bool(row[0])


def fill(server: PostgresServer) -> list[Any]:
    """Open sessions until the server answers 53300; returns the ones it accepted."""
    held = []
    while True:
        try:
            held.append(server.connect())
        except psycopg.OperationalError as exc:
            assert sqlstate(exc) == "53300", exc
            return held
        assert len(held) < 20, "max_connections was not lowered"


# --------------------------------------------------------------------------- TLS


@pytest.mark.parametrize("driver", DRIVERS)
def test_verify_full_against_the_generated_ca(tls_pg: PostgresServer, driver: str) -> None:
    rds = connector_for(tls_pg, driver=driver, retry=Retry(sleep=no_sleep))
    assert rds.verify is True
    conn = rds.connect(FakeContext())
    try:
        assert ssl_in_use(conn)
        dsn = conn.info.dsn if driver == "psycopg" else conn.dsn
        assert "sslmode=verify-full" in dsn and f"sslrootcert={tls_pg.tls.ca}" in dsn  # type: ignore[union-attr]
    finally:
        conn.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_wrong_ca_is_refused_and_not_retried(
    tls_pg: PostgresServer, tmp_path: Path, driver: str
) -> None:
    before_ids = tls_pg.session_ids(user=None)
    other = generate_tls_files(tmp_path / "other")  # did not sign the server's certificate
    rds = connector_for(tls_pg, driver=driver, ssl_ca=other.ca, retry=Retry(sleep=no_sleep))
    with pytest.raises(Exception) as info:
        rds.connect(FakeContext())
    assert not isinstance(info.value, ConnectError)
    assert "certificate verify failed" in str(info.value)
    assert tls_pg.wait_new_sessions_gone(before_ids, user="app") == []


def test_unverified_tls_still_encrypts_and_tls_off_is_clear_text(tls_pg: PostgresServer) -> None:
    conn = connector_for(tls_pg, ssl_ca=None, verify=False).connect()
    try:
        assert ssl_in_use(conn)
    finally:
        conn.close()
    conn = connector_for(tls_pg, ssl_ca=None, tls=False).connect()
    try:
        assert not ssl_in_use(conn)
    finally:
        conn.close()


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("driver", DRIVERS)
def test_too_many_clients_is_retried_until_a_slot_frees(
    make_postgres: Callable[..., PostgresServer],
    caplog: pytest.LogCaptureFixture,
    driver: str,
) -> None:
    server = make_postgres(max_connections=4, superuser_reserved_connections=1)
    server.query(f"CREATE ROLE app LOGIN PASSWORD '{SECRET}'")
    held = fill(server)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            held.pop().close()  # a slot frees during the second backoff

    rds = connector_for(server, driver=driver, retry=Retry(attempts=5, sleep=sleep))
    with caplog.at_level(logging.INFO, logger="lambda_conn"):
        conn = rds.connect(FakeContext(10_000))
    try:
        assert conn.cursor() is not None
    finally:
        conn.close()
        for other in held:
            other.close()
    retries = [e for e in events(caplog) if e["event"] == "rds_connect_retry"]
    assert [e["code"] for e in retries] == ["53300", "53300"]
    assert all(0 <= s <= 0.1 for s in slept)  # full jitter under the first ceilings
    assert events(caplog)[-1]["event"] == "rds_connected_after_retries"


def test_starting_up_shutting_down_and_refused_are_retried(
    make_postgres: Callable[..., PostgresServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = make_postgres()
    server.query(f"CREATE ROLE app LOGIN PASSWORD '{SECRET}'")
    holder = server.connect()
    server.begin_smart_shutdown()  # new sessions: 57P03 while ``holder`` remains
    codes: list[str] = []

    def sleep(seconds: float) -> None:
        codes.append(events(caplog)[-1]["code"])
        if len(codes) == 1:
            holder.close()  # the server now exits: the next attempt is refused
            server.wait_stopped()
        elif len(codes) == 2:
            server.start()

    rds = connector_for(server, retry=Retry(attempts=4, sleep=sleep))
    with caplog.at_level(logging.INFO, logger="lambda_conn"):
        conn = rds.connect(FakeContext(30_000))
    conn.close()
    assert codes == ["57P03", "08006"]


@pytest.mark.parametrize("driver", DRIVERS)
def test_bad_password_and_unknown_database_fail_at_once(
    tls_pg: PostgresServer, driver: str
) -> None:
    before_ids = tls_pg.session_ids(user=None)
    for overrides, state in (
        ({"password": "not-" + SECRET}, "28P01"),
        ({"database": "nope"}, "3D000"),
    ):
        rds = connector_for(tls_pg, driver=driver, retry=Retry(sleep=no_sleep), **overrides)
        with pytest.raises(Exception) as info:
            rds.connect(FakeContext())
        assert not isinstance(info.value, ConnectError)
        assert sqlstate(info.value) == state
    assert tls_pg.wait_new_sessions_gone(before_ids, user="app") == []


def test_refused_gives_up_after_the_attempts_as_the_drivers_error(
    make_postgres: Callable[..., PostgresServer],
) -> None:
    server = make_postgres()
    server.stop()
    rds = connector_for(server, retry=Retry(attempts=3, sleep=lambda s: None))
    with pytest.raises(psycopg.OperationalError) as info:
        rds.connect(FakeContext())
    assert isinstance(info.value, ConnectError)
    assert info.value.code == "08006" and info.value.attempts == 3
    assert info.value.reason == "attempts"


# --------------------------------------------------------------------------- deadline


class TricklingRelay:
    """Forwards a real server's bytes to the client one at a time, ``gap`` apart: every
    single read is quick, only a bound on the connect as a whole ends it on time."""

    def __init__(self, target: tuple[str, int], gap: float) -> None:
        self.target, self.gap = target, gap
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, 0.0), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, self.gap), daemon=True
            ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, gap: float) -> None:
        try:
            while not self.closing.is_set():
                data = src.recv(65536)
                if not data:
                    break
                for i in range(len(data)) if gap else [None]:
                    if gap:
                        time.sleep(gap)
                        dst.sendall(data[i : i + 1])  # type: ignore[index, operator]
                    else:
                        dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.closing.set()
        self.listener.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_connect_timeout_bounds_tcp_tls_and_startup_as_a_whole(
    postgres: PostgresServer, driver: str
) -> None:
    relay = TricklingRelay((postgres.host, postgres.port), gap=0.02)
    try:
        rds = RDSConnector(
            "127.0.0.1",
            engine="postgresql",
            driver=driver,
            port=relay.port,
            user=postgres.user,
            password=postgres.password,
            tls=False,
            timeouts=Timeouts(connect=0.4),
            retry=Retry(attempts=1),
        )
        started = time.monotonic()
        with pytest.raises(ConnectError) as info:
            rds.connect()
        elapsed = time.monotonic() - started
    finally:
        relay.close()
    assert "did not finish within 400 ms" in str(info.value)
    assert elapsed < 1.5  # one 0.4 s attempt; each trickled byte came within 20 ms


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_silent_server_is_cut_by_the_deadline_and_leaks_nothing(
    silent_server: SilentTCPServer, driver: str
) -> None:
    rds = RDSConnector(
        "127.0.0.1",
        engine="postgresql",
        driver=driver,
        port=silent_server.port,
        user="app",
        password=SECRET,
        tls=False,
    )
    started = time.monotonic()
    with pytest.raises(ConnectError) as info:
        rds.connect(FakeContext(1500))  # 1.0 s after the 0.5 s margin
    elapsed = time.monotonic() - started
    assert info.value.reason == "deadline"
    assert elapsed < 1.5
    assert silent_server.wait_open(0) == 0  # every attempt's socket closed


def _libpq_nonblocking(conn: Any) -> int:
    import ctypes

    from psycopg2 import _psycopg

    isnonblocking = ctypes.CDLL(_psycopg.__file__).PQisnonblocking
    isnonblocking.argtypes = [ctypes.c_void_p]
    return int(isnonblocking(conn.pgconn_ptr))


def test_psycopg2_sub_second_connect_timeout_cuts_a_silent_server_as_a_whole(
    silent_server: SilentTCPServer,
) -> None:
    """libpq's own ``connect_timeout`` is whole seconds, at least 2: 300 ms is the
    connector's bound. This process has other threads (the silent server's), so the
    blocking connect runs in a helper thread and the caller stops waiting at 300 ms; libpq
    then ends each attempt given up on by its own ``connect_timeout`` (2 s)."""
    from psycopg2 import extensions

    from lambda_conn._rds import psycopg2_connect

    rds = RDSConnector(
        "127.0.0.1",
        engine="postgresql",
        driver="psycopg2",
        port=silent_server.port,
        user="app",
        password=SECRET,
        tls=False,
        timeouts=Timeouts(connect=0.3),
        retry=Retry(attempts=2, sleep=lambda s: None),
    )
    fds = open_fds()
    assert not psycopg2_connect._alone()
    with pytest.raises(ConnectError) as info:
        rds.connect()
    assert info.value.attempts == 2 and info.value.reason == "attempts"
    assert "did not finish within 300 ms" in str(info.value.last_error)
    assert isinstance(info.value, psycopg2.OperationalError)
    assert extensions.get_wait_callback() is None  # never set
    assert psycopg2_connect.settle(timeout=10)  # the helpers' libpq gave up by itself
    assert silent_server.wait_open(0) == 0  # each attempt's socket closed by libpq
    assert open_fds() == fds


ALONE = """
import json, os, sys, time
from psycopg2 import extensions
from lambda_conn._rds import psycopg2_connect
from lambda_conn._rds.connector import ConnectError, RDSConnector
from lambda_conn._rds.deadline import Timeouts
from lambda_conn._rds.retry import Retry

def fds():
    return len(os.listdir("/proc/self/fd"))

rds = RDSConnector("127.0.0.1", engine="postgresql", driver="psycopg2", port=int(sys.argv[1]),
                   user="app", password="pw-alone-1", tls=False, timeouts=Timeouts(connect=0.3),
                   retry=Retry(attempts=2, sleep=lambda s: None))
before = fds()
alone = psycopg2_connect._alone()
try:
    rds.connect()
except ConnectError as exc:
    error = str(exc.last_error)
print(json.dumps({"alone": alone, "error": error, "fds_left": fds() - before,
                  "callback": extensions.get_wait_callback() is not None}))
"""


def test_psycopg2_alone_the_wait_callback_cuts_the_attempt_and_frees_it_at_once(
    silent_server: SilentTCPServer,
) -> None:
    """A process with no other thread (the usual handler): the connect runs under the
    connector's wait callback, and each attempt's socket is closed when it is cut off."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", ALONE, str(silent_server.port)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    result = json.loads(out.splitlines()[-1])
    assert result["alone"] is True
    assert "did not finish within 300 ms" in result["error"]
    assert result["fds_left"] == 0  # freed at once, not by libpq 2 s later
    assert result["callback"] is False
    assert silent_server.wait_open(0) == 0


def test_psycopg2_connects_leave_other_threads_psycopg2_calls_alone(
    postgres: PostgresServer,
) -> None:
    """Real threads: while three threads connect through the connector, two others run
    plain psycopg2 connects and queries. A wait callback set and taken away under them
    would fail their calls ("wait callback not available") and close their connections."""
    from psycopg2 import extensions

    rds = RDSConnector(
        postgres.host,
        engine="postgresql",
        driver="psycopg2",
        port=postgres.port,
        user=postgres.user,
        password=postgres.password,
        database=postgres.database,
        tls=False,
    )
    connectors_done = threading.Event()
    errors: list[str] = []
    plain_calls = [0, 0]
    made: list[Any] = []
    lock = threading.Lock()

    def plain(index: int) -> None:
        conn = psycopg2.connect(**postgres.connect_kwargs())
        try:
            while not connectors_done.is_set():
                try:
                    other = psycopg2.connect(**postgres.connect_kwargs())
                    other.close()
                    cur = conn.cursor()
                    cur.execute("SELECT 1")
                    assert cur.fetchone() == (1,)
                    cur.close()
                    plain_calls[index] += 1
                except Exception as exc:
                    errors.append(repr(exc))
                    if conn.closed:
                        conn = psycopg2.connect(**postgres.connect_kwargs())
        finally:
            conn.close()

    def connecting() -> None:
        for _ in range(40):
            conn = rds.connect(FakeContext(10000))
            with lock:
                made.append((_libpq_nonblocking(conn), conn.closed))
            conn.close()

    plains = [threading.Thread(target=plain, args=(i,)) for i in range(2)]
    connectors = [threading.Thread(target=connecting) for _ in range(3)]
    for thread in plains + connectors:
        thread.start()
    for thread in connectors:
        thread.join()
    connectors_done.set()
    for thread in plains:
        thread.join()
    assert errors == []
    assert all(plain_calls)
    assert made == [(0, 0)] * 120  # each handed over open and blocking
    assert extensions.get_wait_callback() is None


def test_psycopg2_concurrent_connects_keep_the_applications_wait_callback(
    tls_pg: PostgresServer,
) -> None:
    """With an application callback (psycogreen's), threads connecting at once each put
    back the application's, never another connect's."""
    from psycopg2 import extensions, extras

    rds = connector_for(tls_pg, driver="psycopg2")
    failures: list[str] = []

    def connecting() -> None:
        for _ in range(10):
            try:
                conn = rds.connect(FakeContext(10000))
                cur = conn.cursor()
                cur.execute("SELECT 1")
                assert cur.fetchone() == (1,)
                conn.close()
            except Exception as exc:
                failures.append(repr(exc))

    extensions.set_wait_callback(extras.wait_select)
    try:
        threads = [threading.Thread(target=connecting) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert extensions.get_wait_callback() is extras.wait_select
    finally:
        extensions.set_wait_callback(None)
    assert failures == []


def test_psycopg2_connection_is_handed_over_blocking_with_no_wait_callback_left(
    tls_pg: PostgresServer,
) -> None:
    from psycopg2 import extensions

    rds = connector_for(tls_pg, driver="psycopg2", retry=Retry(sleep=no_sleep))
    conn = rds.connect(FakeContext(5000))
    try:
        assert extensions.get_wait_callback() is None
        assert _libpq_nonblocking(conn) == 0  # as psycopg2.connect() leaves it
        assert ssl_in_use(conn)
        cur = conn.cursor()
        cur.execute("CREATE TEMP TABLE copied (n int)")
        rows = "".join(f"{n}\n" for n in range(20000))
        cur.copy_expert("COPY copied FROM STDIN", io.StringIO(rows))
        cur.execute("SELECT count(*) FROM copied")
        assert cur.fetchone() == (20000,)
    finally:
        conn.close()


def test_psycopg2_connect_keeps_an_applications_wait_callback(tls_pg: PostgresServer) -> None:
    from psycopg2 import extensions, extras

    extensions.set_wait_callback(extras.wait_select)  # what psycogreen installs
    try:
        conn = connector_for(tls_pg, driver="psycopg2").connect(FakeContext(5000))
        try:
            assert extensions.get_wait_callback() is extras.wait_select
            assert _libpq_nonblocking(conn) == 1  # green: left as psycopg2 makes it
            cur = conn.cursor()
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
        finally:
            conn.close()
    finally:
        extensions.set_wait_callback(None)


# --------------------------------------------------------------------------- IAM


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> IAMTokenProvider:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "dummy-secret-access-key")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    now = time.time()
    return IAMTokenProvider("us-east-1", clock=lambda: now)


def test_iam_token_is_the_password_over_verified_tls(
    tls_pg: PostgresServer, provider: IAMTokenProvider
) -> None:
    token = provider.token(tls_pg.host, tls_pg.port, "iam_user")
    literal = tls_pg.query("SELECT quote_literal(%s)", (token,))[0][0]
    tls_pg.query(f"CREATE ROLE iam_user LOGIN PASSWORD {literal}")
    try:
        rds = connector_for(tls_pg, user="iam_user", password=None, iam=provider)
        conn = rds.connect(FakeContext())
        try:
            cur = conn.execute("SELECT current_user")
            assert cur.fetchone() == ("iam_user",)
            assert ssl_in_use(conn)
        finally:
            conn.close()
    finally:
        tls_pg.query("DROP ROLE iam_user")


def test_a_refused_cached_iam_token_is_replaced_once(
    tls_pg: PostgresServer, provider: IAMTokenProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider.token(tls_pg.host, tls_pg.port, "iam_user2")  # cached, never accepted
    tls_pg.query("CREATE ROLE iam_user2 LOGIN PASSWORD 'the-next-token'")
    try:
        monkeypatch.setattr(IAMTokenProvider, "_sign", lambda self, h, p, u: "the-next-token")
        rds = connector_for(
            tls_pg, user="iam_user2", password=None, iam=provider, retry=Retry(sleep=no_sleep)
        )
        rds.connect(FakeContext()).close()
    finally:
        tls_pg.query("DROP ROLE iam_user2")


@pytest.mark.parametrize("sslmode", ["disable", "require", "prefer", "allow"])
def test_iam_refuses_an_sslmode_without_verification(
    provider: IAMTokenProvider, sslmode: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        RDSConnector("db.example", engine="postgresql", user="u", iam=provider, sslmode=sslmode)
    assert info.value.setting == "sslmode"


def test_iam_without_tls_is_refused(provider: IAMTokenProvider) -> None:
    with pytest.raises(ConfigurationError) as info:
        RDSConnector("db.example", engine="postgresql", user="u", iam=provider, tls=False)
    assert info.value.setting == "tls"


# --------------------------------------------------------------------------- reuse, proxy


def test_reused_is_validated_after_a_thaw_and_by_max_age(tls_pg: PostgresServer) -> None:
    before_ids = tls_pg.session_ids(user=None)
    db = connector_for(tls_pg).reused(max_age=3600)

    @managed_connection
    def handler(event: Any, context: Any) -> int:
        return int(db(context).execute("SELECT pg_backend_pid()").fetchone()[0])

    first = handler({}, FakeContext())
    assert handler({}, FakeContext()) == first  # kept across invocations
    tls_pg.terminate(first)  # the proxy's idle timeout while the environment was frozen
    assert tls_pg.wait_session_gone(first)
    second = handler({}, FakeContext())
    assert second != first
    db.max_age = 0.001
    time.sleep(0.01)
    third = handler({}, FakeContext())
    assert third != second
    new = tls_pg.wait_new_sessions(before_ids, 1, user="app")
    assert [s["pid"] for s in new] == [third]  # the old one was closed
    db.close()
    assert tls_pg.wait_new_sessions_gone(before_ids, user="app") == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_per_invocation_connections_are_closed_on_the_server(
    tls_pg: PostgresServer, driver: str
) -> None:
    """Kept by the handler (a leak), closed by the invocation's scope. psycopg2 takes the
    helper-thread connect here (another thread is alive): tracked all the same."""
    before_ids = tls_pg.session_ids(user=None)
    unclean = tls_pg.unclean_mark()
    from lambda_conn._rds import psycopg2_connect

    rds = connector_for(tls_pg, driver=driver)
    kept: list[Any] = []
    other = threading.Event()
    bystander = threading.Thread(target=other.wait)
    bystander.start()

    @managed_connection
    def handler(event: Any, context: Any) -> None:
        assert not psycopg2_connect._alone()
        conn = rds.connect(context)
        conn.cursor().execute("SELECT 1")
        kept.append(conn)  # never closed by the handler

    try:
        handler({}, FakeContext())
    finally:
        other.set()
        bystander.join()
    assert tls_pg.wait_new_sessions_gone(before_ids, user="app") == []
    assert tls_pg.unclean_closes_since(unclean) == 0
    assert all(conn.closed for conn in kept)


def prepared_after_six_runs(conn: Any) -> int:
    for _ in range(6):
        conn.execute("SELECT %s::int + 1", (1,))
    return int(conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0])


def test_through_a_proxy_psycopg_never_server_prepares(tls_pg: PostgresServer) -> None:
    assert behind_proxy("app.proxy-abc123xyz.us-east-1.rds.amazonaws.com")
    assert not behind_proxy("app.cluster-abc123xyz.us-east-1.rds.amazonaws.com")
    direct = connector_for(tls_pg).connect()
    proxied = connector_for(tls_pg, proxy=True).connect()
    explicit = connector_for(tls_pg, proxy=True, prepare_threshold=2).connect()
    try:
        assert prepared_after_six_runs(direct) > 0  # psycopg's default: prepare after 5
        assert proxied.prepare_threshold is None
        assert prepared_after_six_runs(proxied) == 0
        assert explicit.prepare_threshold == 2
    finally:
        for conn in (direct, proxied, explicit):
            conn.close()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "host",
    [
        f"postgresql://app:{SECRET}@db.example:5432/app",
        f"postgres://app:{SECRET}@db.example/app?sslmode=require",
        f"host=db.example user=app password={SECRET} dbname=app",
        f"db.example password={SECRET}",
    ],
)
def test_a_dsn_passed_as_host_is_refused_with_its_password_redacted(host: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RDSConnector(host, engine="postgresql", user="app", password=SECRET)
    assert info.value.setting == "host"
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.value)


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"engine": "oracle"}, "engine"),
        ({"engine": "postgresql", "driver": "pg8000"}, "driver"),
        ({"engine": "postgresql", "sslmode": "verify-everything"}, "sslmode"),
        ({"engine": "postgresql", "sslmode": "prefer"}, "sslmode"),
        ({"engine": "postgresql", "timeouts": Timeouts(read=5)}, "timeouts"),
        ({"engine": "postgresql", "dbname": "app"}, "dbname"),
        ({"engine": "postgresql", "connect_timeout": 3}, "connect_timeout"),
        ({"engine": "postgresql", "conninfo": f"password={SECRET}"}, "conninfo"),
        ({"engine": "postgresql", "tls": False, "sslmode": "verify-full"}, "tls"),
    ],
)
def test_misconfigurations_fail_at_init_naming_the_setting(
    kwargs: dict[str, Any], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        RDSConnector("db.example", user="app", password=SECRET, **kwargs)
    assert info.value.setting == setting
    assert SECRET not in str(info.value)


def test_no_password_in_any_log_repr_or_error(
    make_postgres: Callable[..., PostgresServer],
    silent_server: SilentTCPServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    server = make_postgres(tls=True, max_connections=4, superuser_reserved_connections=1)
    server.query(f"CREATE ROLE app LOGIN PASSWORD '{SECRET}'")
    texts: list[str] = []

    def keep(*objects: Any) -> None:
        texts.extend(repr(obj) + str(obj) for obj in objects)

    def expect_error(call: Callable[[], Any]) -> None:
        with pytest.raises(Exception) as info:
            call()
        exc: BaseException | None = info.value
        texts.append("".join(traceback.format_exception(info.value)))
        while exc is not None:
            keep(exc, exc.args, getattr(exc, "last_error", None))
            exc = exc.__cause__ or exc.__context__

    quick = Retry(attempts=3, sleep=lambda s: None)
    with caplog.at_level(logging.DEBUG):
        rds = connector_for(server, retry=quick)
        keep(rds, rds.reused())
        conn = rds.connect(FakeContext())
        keep(conn, conn.info.dsn, conn.info.get_parameters())
        conn.close()
        expect_error(lambda: connector_for(server, password="x" + SECRET).connect())  # 28P01
        expect_error(lambda: connector_for(server, database="nope").connect())  # 3D000
        other = generate_tls_files(tmp_path / "other")
        expect_error(lambda: connector_for(server, ssl_ca=other.ca).connect())  # certificate
        held = fill(server)
        expect_error(lambda: rds.connect(FakeContext()))  # 53300, retried, given up
        for c in held:
            c.close()
        hung = connector_for(server, port=silent_server.port, tls=False, ssl_ca=None)
        expect_error(lambda: hung.connect(deadline=0.5))  # deadline
        server.stop()
        expect_error(lambda: rds.connect(FakeContext()))  # refused
        expect_error(
            lambda: RDSConnector(f"postgresql://a:{SECRET}@h/d", engine="postgresql", user="a")
        )
        expect_error(lambda: connector_for(server, sslpassword=SECRET))
    captured = capfd.readouterr()
    texts += [r.getMessage() for r in caplog.records] + [captured.out, captured.err]
    assert len(texts) > 20
    assert not [t for t in texts if SECRET in t]
