"""The test servers are real: what clients do is visible on the server side."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pymysql
import pytest
import requests

from tests.servers import (
    CountingHTTPServer,
    MariaDBServer,
    SilentTCPServer,
    open_fds,
    socket_fds,
    tcp_peers,
)

# ----------------------------------------------------------------------------- MariaDB


def test_client_connection_is_seen_and_its_close_too(
    make_mariadb: Callable[..., MariaDBServer],
) -> None:
    # A server of its own: Threads_connected counts every connection, so on the shared one
    # an earlier test's session ending meanwhile would throw the counts off.
    mariadb = make_mariadb()
    assert mariadb.threads_connected() == 0
    before = mariadb.session_ids()

    conn = pymysql.connect(**mariadb.connect_kwargs())
    try:
        assert mariadb.wait_threads_connected(1) == 1
        (session,) = mariadb.wait_new_sessions(before, 1)
        assert session["id"] == conn.thread_id()
        local_port = conn._sock.getsockname()[1]
        assert session["host"] == f"127.0.0.1:{local_port}"
        assert session["db"] == "lc"
        assert session["command"] == "Sleep"
    finally:
        conn.close()

    assert mariadb.wait_new_sessions_gone(before) == []
    assert mariadb.wait_threads_connected(0) == 0


def test_kill_is_seen_by_server_and_client(mariadb: MariaDBServer) -> None:
    conn = pymysql.connect(**mariadb.connect_kwargs())
    session_id = conn.thread_id()
    mariadb.kill(session_id)
    assert mariadb.wait_session_gone(session_id)
    with (
        pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)),
        conn.cursor() as cur,
    ):
        cur.execute("SELECT 1")
    assert not conn.open


def test_kill_all_and_sqlalchemy_url(mariadb: MariaDBServer) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    before = mariadb.session_ids()
    engine = sqlalchemy.create_engine(mariadb.url(), poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as c:
        assert c.execute(sqlalchemy.text("SELECT CURRENT_USER()")).scalar() == "lc@127.0.0.1"
        assert len(mariadb.wait_new_sessions(before, 1)) == 1
    assert mariadb.wait_new_sessions_gone(before) == []
    engine.dispose()

    conns = [pymysql.connect(**mariadb.connect_kwargs()) for _ in range(3)]
    assert mariadb.kill_all() >= 3
    assert mariadb.wait_for_sessions(0) == 0
    for conn in conns:
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
            conn.ping(reconnect=False)


@pytest.mark.parametrize("flavour", ["mariadb", "postgres"])
def test_new_sessions_by_id_whatever_older_ones_do(
    flavour: str, request: pytest.FixtureRequest
) -> None:
    """The snapshot helpers see only sessions opened after the snapshot: an older one
    ending meanwhile (which throws a count off for good) or staying changes nothing."""
    server = request.getfixturevalue(flavour)
    older = [server.connect(), server.connect()]  # what an earlier test may leave behind
    try:
        before = server.session_ids()
        assert len(before) >= 2
        conn = server.connect()
        try:
            own = conn.thread_id() if flavour == "mariadb" else conn.info.backend_pid
            older.pop().close()  # an older session ends during "this test"
            new = server.wait_new_sessions(before, 1)
            assert [s[server.session_key] for s in new] == [own]
            assert own not in before and own in server.session_ids()
            # still open: returned as left over (the failure message names it)
            left = server.wait_new_sessions_gone(before, timeout=0.2)
            assert [s[server.session_key] for s in left] == [own]
        finally:
            conn.close()
        assert server.wait_session_gone(own)
        assert server.wait_new_sessions_gone(before) == []
        assert server.wait_new_sessions(before, 0) == []
        with pytest.raises(TypeError, match="session_ids"):
            server.wait_new_sessions_gone(len(before))  # a count is not a snapshot
    finally:
        for c in older:
            c.close()


def _drop(conn: Any) -> None:
    """Vanish from under a psycopg connection: the socket shut, no Terminate sent."""
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def test_postgres_unclean_ends_are_counted_by_session(postgres: Any) -> None:
    """An older session dropped during "this test" moves the server-wide count but not
    the count since the test's mark; the test's own dropped session is counted, by pid."""
    older = postgres.connect()  # what an earlier test may leave behind, in a transaction
    older.execute("SELECT 1")
    try:
        mark = postgres.unclean_mark()
        everyone = postgres.unclean_disconnects()
        own = postgres.connect()
        try:
            own.execute("SELECT 1")
            pid = own.info.backend_pid
            _drop(older)
            assert postgres.wait_session_gone(older.info.backend_pid)
            assert postgres.unclean_disconnects() == everyone + 1
            assert postgres.unclean_closes_since(mark) == 0
            _drop(own)
            assert postgres.wait_session_gone(pid)
            assert postgres.unclean_disconnects() == everyone + 2
            assert postgres.unclean_closes_since(mark) == 1
            assert postgres.unclean_disconnects({pid}) == 1
            assert postgres.unclean_disconnects({pid}, since=postgres.unclean_mark()) == 0
        finally:
            own.close()
    finally:
        older.close()


def test_stop_start_restart_same_port(make_mariadb: Callable[..., MariaDBServer]) -> None:
    server = make_mariadb()
    assert server.start_seconds is not None and server.start_seconds < 10
    port = server.port
    conn = pymysql.connect(**server.connect_kwargs())

    server.stop()
    assert not server.running
    t0 = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError) as refused:
        pymysql.connect(**server.connect_kwargs(connect_timeout=2))
    assert refused.value.args[0] == 2003
    assert time.monotonic() - t0 < 2
    with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError)):
        conn.ping(reconnect=False)  # the old session died with the server

    server.start()
    assert server.running and server.port == port
    fresh = pymysql.connect(**server.connect_kwargs())
    assert server.wait_for_sessions(1) == 1
    fresh.close()
    assert server.wait_for_sessions(0) == 0

    server.restart(wait_timeout=7)
    assert server.port == port
    assert server.get_global("wait_timeout") == "7"
    server.set_global("wait_timeout", 9)
    assert server.query("SELECT @@global.wait_timeout") == [(9,)]


def test_crash_stop_then_start(make_mariadb: Callable[..., MariaDBServer]) -> None:
    server = make_mariadb()
    server.query("CREATE TABLE lc.t (id INT PRIMARY KEY) ENGINE=InnoDB")
    server.query("INSERT INTO lc.t VALUES (1)")
    server.stop(kill=True)  # SIGKILL: InnoDB recovers on the next start
    server.start()
    assert server.query("SELECT id FROM lc.t") == [(1,)]


def test_max_connections_limits_the_test_user(make_mariadb: Callable[..., MariaDBServer]) -> None:
    # 10 is mariadbd's minimum. The admin root session holds one slot; 'lc' has no
    # CONNECTION ADMIN, so it gets no extra slot beyond max_connections.
    server = make_mariadb(max_connections=10)
    conns = [pymysql.connect(**server.connect_kwargs()) for _ in range(9)]
    try:
        with pytest.raises(pymysql.err.OperationalError) as too_many:
            pymysql.connect(**server.connect_kwargs())
        assert too_many.value.args[0] == 1040
    finally:
        for conn in conns:
            conn.close()
    assert server.wait_for_sessions(0) == 0


@pytest.mark.parametrize("key", ["rsa2048", "p256"])
def test_tls_instance(make_mariadb: Callable[..., MariaDBServer], key: str) -> None:
    """The server certificate verifies against the generated CA (hostname included),
    with the RSA key RDS serves or the ECDSA one benchmarks/tls_cost.py compares."""
    import ssl

    server = make_mariadb(tls=True, tls_key=key)
    assert server.tls is not None
    context = ssl.create_default_context(cafile=server.tls.ca)
    conn = pymysql.connect(**server.connect_kwargs(), ssl=context)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
            cipher = cur.fetchone()[1]
        assert cipher
        sock = conn._sock
        assert isinstance(sock, ssl.SSLSocket)
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        public = x509.load_der_x509_certificate(der).public_key()
        expected = rsa.RSAPublicKey if key == "rsa2048" else ec.EllipticCurvePublicKey
        assert isinstance(public, expected)
    finally:
        conn.close()


def test_tls_files_refuse_an_unknown_key_type(tmp_path: Path) -> None:
    from tests.servers.tls import generate_tls_files

    with pytest.raises(ValueError, match="key_type"):
        generate_tls_files(tmp_path, key_type="dsa")


# ----------------------------------------------------------------------------- HTTP


def test_http_keep_alive_counted_on_server(http_server: CountingHTTPServer) -> None:
    session = requests.Session()
    replies = [session.get(f"{http_server.url}/x", timeout=5).json() for _ in range(3)]
    assert [r["request_on_connection"] for r in replies] == [1, 2, 3]
    assert http_server.wait_open(1) == 1
    assert http_server.accepted == 1
    assert http_server.requests == 3
    assert ("127.0.0.1", http_server.port) in tcp_peers(http_server.port)

    # No Response kept alive: with urllib3 2.x, PoolManager.clear() only drops its pools
    # (they close on garbage collection), and a live Response references its pool, so
    # Session.close() would leave that socket open.
    assert session.post(f"{http_server.url}/p", json={"a": 1}, timeout=5).json() == {
        "ok": True,
        "method": "POST",
        "path": "/p",
        "connection": 1,
        "request_on_connection": 4,
        "body_bytes": 8,
    }

    session.close()
    assert http_server.wait_open(0) == 0
    assert tcp_peers(http_server.port) == []


def test_http_slow_and_server_close(http_server: CountingHTTPServer) -> None:
    with requests.Session() as session:
        t0 = time.monotonic()
        assert session.get(f"{http_server.url}/slow?ms=200", timeout=5).status_code == 200
        assert time.monotonic() - t0 >= 0.2
        reply = session.get(f"{http_server.url}/close", timeout=5)
        assert reply.headers["Connection"] == "close"
        assert http_server.wait_open(0) == 0


def test_http_close_drops_connections_and_joins_threads() -> None:
    server = CountingHTTPServer()
    client = socket.create_connection((server.host, server.port), timeout=5)
    try:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while not reply.endswith(b"}"):  # headers and body may arrive separately
            chunk = client.recv(4096)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200")
        assert json.loads(reply.split(b"\r\n\r\n", 1)[1])["connection"] == 1
        assert server.wait_open(1) == 1
        server.close()
        assert client.recv(1) == b""  # server shut the keep-alive connection down
    finally:
        client.close()
    name = f"CountingHTTPServer:{server.port}"
    assert not [t for t in threading.enumerate() if t.name.startswith(name)]


# ----------------------------------------------------------------------------- silent


def test_silent_server_makes_pymysql_time_out(
    silent_server: SilentTCPServer, mariadb: MariaDBServer
) -> None:
    kwargs = mariadb.connect_kwargs(port=silent_server.port, connect_timeout=1, read_timeout=1)
    t0 = time.monotonic()
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(**kwargs)
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 3, elapsed
    assert silent_server.accepted == 1
    assert silent_server.wait_open(0) == 0  # the client closed its socket after the error


def test_silent_server_close_joins_thread() -> None:
    server = SilentTCPServer()
    client = socket.create_connection(server.address, timeout=5)
    try:
        assert server.wait_open(1) == 1
        server.close()
        assert client.recv(1) == b""
    finally:
        client.close()
    assert not [t for t in threading.enumerate() if t.name == f"SilentTCPServer:{server.port}"]


# ----------------------------------------------------------------------------- fds


def test_fd_helpers_see_a_socket() -> None:
    before_fds, before_socks = open_fds(), socket_fds()
    with SilentTCPServer() as server:
        server_fds = open_fds()
        client = socket.create_connection(server.address, timeout=5)
        try:
            assert server.wait_open(1) == 1
            assert open_fds() == server_fds + 2  # our client + the server's accepted socket
            assert client.fileno() in socket_fds() - before_socks
            assert tcp_peers(server.port) == [("127.0.0.1", server.port)]
        finally:
            client.close()
        assert tcp_peers(server.port) == []
        assert server.wait_open(0) == 0
        assert open_fds() == server_fds
    assert open_fds() == before_fds
