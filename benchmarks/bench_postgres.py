"""PostgreSQL connect cases, TLS session resumption as the servers do it, and the pinning
check's cost per statement. Called by benchmarks/run.py (one interleaved run).

Why these: a per-invocation psycopg connect with TLS pays a full handshake every time,
because PostgreSQL turns session tickets and its session cache off and libpq offers no
way to offer a session; the only levers are skipping TLS (never with IAM) or reusing the
connection. The resumption probe measures that instead of assuming it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

from _common import each_call_us, per_call_us

PG_CONNECT_TITLE = "PostgreSQL per invocation: connect + SELECT 1 + close"
RESUME_TITLE = "TLS session resumption, as the private servers run (Python ssl, session=)"
PINNING_TITLE = "Pinning check: cost per statement (SELECT 1 round trip on loopback)"
CLASSIFY_TITLE = "Pinning check: one statement without the round trip"


class _Context:
    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _select_one(conn: Any) -> None:
    cur = conn.cursor()
    cur.execute("SELECT 1")
    cur.fetchall()
    cur.close()


def _interleaved(
    cases: list[tuple[str, Callable[[], None]]], repeat: int, skipped: list[str]
) -> list[tuple[str, list[float]]]:
    working = []
    for name, case in cases:
        try:
            for _ in range(3):
                case()  # warm up
        except Exception as exc:
            skipped.append(f"{name}: failed ({type(exc).__name__}: {exc})"[:200])
            continue
        working.append((name, case))
    samples: dict[str, list[float]] = {name: [] for name, _ in working}
    for _ in range(repeat):
        for name, case in working:
            samples[name] += [us / 1000 for us in each_call_us(case, repeat=1)]
    return [(name, samples[name]) for name, _ in working]


def bench_pg_connect(server: Any, repeat: int, skipped: list[str]) -> tuple[list[Any], list[str]]:
    """Rows (name, samples in ms) and notes for the PostgreSQL connect table."""
    import psycopg

    from lambda_conn import RDSConnector, managed_connection

    base = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "dbname": server.database,
    }
    ca = server.tls.ca
    context = _Context()

    def connector(**kw: Any) -> Any:
        return RDSConnector(
            server.host,
            engine="postgresql",
            port=server.port,
            user=server.user,
            password=server.password,
            database=server.database,
            **kw,
        )

    verified = connector(ssl_ca=ca, autocommit=True)
    plain = connector(tls=False, autocommit=True)
    kept = verified.reused(max_age=3600)

    def psycopg_defaults() -> None:
        with psycopg.connect(**base) as conn:  # sslmode=prefer: TLS, nothing verified
            _select_one(conn)

    def psycopg_verify_full() -> None:
        with psycopg.connect(**base, sslmode="verify-full", sslrootcert=ca) as conn:
            _select_one(conn)

    def psycopg_no_tls() -> None:
        with psycopg.connect(**base, sslmode="disable") as conn:
            _select_one(conn)

    @managed_connection
    def managed(event: Any, ctx: Any) -> None:
        _select_one(verified.connect(ctx))

    @managed_connection
    def managed_plain(event: Any, ctx: Any) -> None:
        _select_one(plain.connect(ctx))

    @managed_connection
    def reused(event: Any, ctx: Any) -> None:
        _select_one(kept(ctx))

    cases: list[tuple[str, Callable[[], None]]] = [
        ("psycopg defaults (sslmode=prefer: TLS, unverified)", psycopg_defaults),
        ("psycopg, verify-full, sslrootcert=CA file", psycopg_verify_full),
        (
            "@managed_connection + RDSConnector(engine='postgresql'), verify-full",
            lambda: managed({}, context),
        ),
        (
            "@managed_connection + RDSConnector(engine='postgresql'), no TLS",
            lambda: managed_plain({}, context),
        ),
        ("psycopg, no TLS (reference)", psycopg_no_tls),
        (
            "reused connection (RDSConnector.reused), validated once per invocation",
            lambda: reused({}, context),
        ),
    ]
    try:
        import psycopg2  # type: ignore[import-untyped, unused-ignore]

        dsn = " ".join(f"{k}={v}" for k, v in base.items())

        def psycopg2_verify_full() -> None:
            conn = psycopg2.connect(f"{dsn} sslmode=verify-full sslrootcert={ca}")
            _select_one(conn)
            conn.close()

        cases.insert(2, ("psycopg2, verify-full, sslrootcert=CA file", psycopg2_verify_full))
    except ImportError:
        skipped.append("psycopg2: not installed")
    rows = _interleaved(cases, repeat, skipped)
    kept.close()
    notes = [
        f"Target: private PostgreSQL on loopback with TLS (certificates generated); {repeat} "
        "calls per case in interleaved rounds after 3 warm-up calls; password auth "
        "(scram-sha-256).",
        "No 'resumed session' row: PostgreSQL issues no session tickets and keeps no session "
        "cache (measured below), and libpq builds its TLS state per connection with no way "
        "to offer a session. A per-invocation TLS connect pays the full handshake; reuse "
        "(behind RDS Proxy, what AWS recommends) is what removes it.",
    ]
    return rows, notes


Handshake = tuple[Any, bool]  # (the session to offer next, whether this one was resumed)


def _mysql_handshake(
    server: Any, ctx: ssl.SSLContext, session: Any, wait: bool = False
) -> Handshake:
    import pymysql

    conn = pymysql.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        ssl=ctx,
        defer_connect=True,
    )

    class Offer:
        def __init__(self) -> None:
            self.sock: ssl.SSLSocket | None = None

        def wrap_socket(self, sock: Any, server_hostname: str | None = None) -> Any:
            self.sock = ctx.wrap_socket(sock, server_hostname=server_hostname, session=session)
            return self.sock

    offer = Offer()
    conn.ctx = offer
    conn.connect()
    assert offer.sock is not None
    result = (offer.sock.session, offer.sock.session_reused)  # before close: then it is gone
    conn.close()
    return result


def _pg_handshake(server: Any, ctx: ssl.SSLContext, session: Any, wait: bool = False) -> Handshake:
    host = server.host
    raw = socket.create_connection((host, server.port), timeout=5)
    raw.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
    if raw.recv(1) != b"S":
        raw.close()
        raise RuntimeError("the server refused TLS")
    sock = ctx.wrap_socket(raw, server_hostname=host, session=session)
    if wait:  # a TLS 1.3 server sends its tickets after the handshake: give it 0.2 s once
        sock.settimeout(0.2)
        with contextlib.suppress(TimeoutError, ssl.SSLError, OSError):
            sock.recv(1)
    result = (sock.session, sock.session_reused)
    sock.close()
    return result


def bench_resumption(mariadb: Any, postgres: Any, repeat: int) -> tuple[list[Any], list[str]]:
    """Handshake times, full and offered the previous session, per server and TLS version."""
    rows: list[tuple[str, list[float]]] = []
    notes = []
    for label, server, shake in (
        ("MariaDB", mariadb, _mysql_handshake),
        ("PostgreSQL", postgres, _pg_handshake),
    ):
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = ssl.create_default_context(cafile=server.tls.ca)
            ctx.minimum_version = ctx.maximum_version = version
            session, _ = shake(server, ctx, None, True)
            ticket = bool(session is not None and session.has_ticket)
            full: list[float] = []
            offered: list[float] = []
            resumed = 0
            for _ in range(repeat):
                start = time.perf_counter()
                shake(server, ctx, None)
                full.append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                next_session, reused = shake(server, ctx, session)
                offered.append((time.perf_counter() - start) * 1000)
                resumed += bool(reused)
                session = next_session or session
            name = f"{label} {version.name.replace('v', ' ').replace('_', '.')}"
            what = "connect + login + close" if label == "MariaDB" else "TCP + SSLRequest + TLS"
            rows.append((f"{name}: full handshake ({what})", full))
            rows.append((f"{name}: previous session offered", offered))
            notes.append(
                f"{name}: {resumed} of {repeat} offered sessions resumed; session ticket "
                f"issued: {'yes' if ticket else 'no'}."
            )
    return rows, notes


@contextlib.contextmanager
def _unwrapped(cls: type, name: str) -> Any:
    """``cls.name`` as it was before the pinning check wrapped it (the 'off' state)."""
    wrapper = vars(cls)[name]
    setattr(cls, name, wrapper.__wrapped__)
    try:
        yield
    finally:
        setattr(cls, name, wrapper)


def bench_pinning(
    mariadb: Any, postgres: Any, repeat: int
) -> tuple[list[Any], list[Any], list[str]]:
    """Each driver's statement entry point, checked against the original, interleaved."""
    import mysql.connector
    import MySQLdb
    import psycopg
    import psycopg2
    import psycopg2.extensions

    from lambda_conn import enable_pinning_check, managed_connection
    from lambda_conn._pinning import classify_mysql, classify_postgres

    enable_pinning_check()
    results: dict[str, list[float]] = {}
    my_kwargs = {
        "host": mariadb.host,
        "port": mariadb.port,
        "user": mariadb.user,
        "password": mariadb.password,
    }

    @managed_connection
    def measure(event: Any, ctx: Any) -> None:
        my = mariadb.connect()
        mc = MySQLdb.connect(**my_kwargs)
        cx = mysql.connector.connect(**my_kwargs, ssl_disabled=True)
        pg = postgres.connect(sslmode="disable", autocommit=True)
        pg2 = psycopg2.connect(**postgres.connect_kwargs(sslmode="disable"))
        pg2.autocommit = True
        pg_cur, cx_cur = pg.cursor(), cx.cursor()
        pg2_on = pg2.cursor()  # the checking subclass the connection now makes
        pg2_off = pg2.cursor(cursor_factory=psycopg2.extensions.cursor)  # the C cursor

        def pymysql_select() -> None:
            my.query("SELECT 1")
            my._result = None

        def mysqlclient_select() -> None:
            mc.query(b"SELECT 1")
            mc.store_result()

        def connector_select() -> None:
            cx_cur.execute("SELECT 1")
            cx_cur.fetchall()

        def psycopg_select() -> None:
            pg_cur.execute("SELECT 1")

        def psycopg2_select(cur: Any) -> Any:
            return lambda: cur.execute("SELECT 1")

        drivers: list[tuple[str, Any, Any, tuple[type, str] | None]] = [
            ("PyMySQL Connection.query", pymysql_select, None, (type(my), "query")),
            ("mysqlclient Connection.query", mysqlclient_select, None, (type(mc), "query")),
            ("mysql-connector cursor.execute", connector_select, None, (type(cx), "cmd_query")),
            ("psycopg Cursor.execute", psycopg_select, None, (psycopg.Cursor, "execute")),
            ("psycopg2 cursor.execute", psycopg2_select(pg2_on), psycopg2_select(pg2_off), None),
        ]
        cases = []
        for label, on, off, unwrap in drivers:

            def off_case(on: Any = on, off: Any = off, unwrap: Any = unwrap) -> list[float]:
                if off is not None:
                    return per_call_us(off, number=20, repeat=1)
                with _unwrapped(*unwrap):
                    return per_call_us(on, number=20, repeat=1)

            cases.append((f"{label}, check off (original)", off_case))
            cases.append(
                (
                    f"{label}, check on (tracked connection)",
                    lambda on=on: per_call_us(on, number=20, repeat=1),
                )
            )
        for name, _ in cases:
            results[name] = []
        for _ in range(repeat):
            for name, case in cases:
                results[name] += case()
        for cur in (pg_cur, cx_cur, pg2_on, pg2_off):
            cur.close()

    measure({}, None)
    rows = list(results.items())
    statement = (
        "SELECT id, name, email FROM users WHERE tenant_id = %s AND active ORDER BY id LIMIT 50"
    )
    from lambda_conn._pinning import Check

    class Entry:  # a driver's statement entry point with the round trip taken out
        def query(self, sql: str) -> None:
            pass

    class Checked(Entry):
        pass

    Check("mysql").method(Checked, "query", sql=(0, "sql"))  # what a driver's hook does
    bare, checked = Entry(), Checked()
    classify_rows = [
        (
            "a statement entry point, check off (nothing wrapped)",
            per_call_us(lambda: bare.query(statement), number=2000, repeat=15),
        ),
        (
            "the same entry point, check on (wrapper + classify_mysql)",
            per_call_us(lambda: checked.query(statement), number=2000, repeat=15),
        ),
        (
            "classify_mysql, a 90-character SELECT",
            per_call_us(lambda: classify_mysql(statement), number=2000, repeat=15),
        ),
        (
            "classify_postgres, a 90-character SELECT",
            per_call_us(lambda: classify_postgres(statement), number=2000, repeat=15),
        ),
    ]
    notes = [
        f"{repeat} rounds of 20 `SELECT 1` per case, interleaved, on one tracked connection "
        "per driver (MariaDB and PostgreSQL on loopback, no TLS). 'Off' is what runs when "
        "the check was never enabled: the drivers' own functions (psycopg2: its C cursor), "
        "since off nothing is wrapped."
    ]
    return rows, classify_rows, notes


def medians_ratio(rows: list[Any], a: str, b: str) -> float | None:
    import statistics

    found = {name: statistics.median(s) for name, s in rows}
    if a in found and b in found and found[b]:
        return found[a] / found[b]
    return None
