"""Core costs: decorator overhead, import time, PyMySQL connect with and without TLS reuse.

Run: python benchmarks/bench_core.py   (starts a private TLS MariaDB; needs mariadbd)
Prints markdown tables of medians, p99 and ratios from one run.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import statistics
import subprocess
import sys
from typing import Any

from _common import each_call_us, per_call_us, table


def bench_overhead() -> str:
    from lambda_conn import managed_connection, register

    class Closeable:
        __slots__ = ("closed",)

        def __init__(self) -> None:
            self.closed = False

        def close(self) -> None:
            self.closed = True

    def bare(event: object, context: object) -> int:
        return 1

    def bare_three(event: object, context: object) -> int:
        for _ in range(3):
            Closeable().close()  # what a careful handler does by hand
        return 1

    def three(event: object, context: object) -> int:
        for _ in range(3):
            register(Closeable())
        return 1

    import requests  # a real client, tracked through its wrapt-patched constructor

    def sessions_by_hand(event: object, context: object) -> int:
        for _ in range(3):
            requests.Session().close()
        return 1

    def sessions_tracked(event: object, context: object) -> int:
        for _ in range(3):
            requests.Session()  # closed by the scope
        return 1

    decorated = managed_connection(bare)
    decorated_three = managed_connection(three)
    decorated_sessions = managed_connection(sessions_tracked)
    event: dict[str, int] = {}
    rows = [
        ("bare call", per_call_us(lambda: bare(event, None), number=20000, repeat=25)),
        (
            "@managed_connection, no connection",
            per_call_us(lambda: decorated(event, None), number=20000, repeat=25),
        ),
        (
            "bare, closes 3 objects by hand",
            per_call_us(lambda: bare_three(event, None), number=20000, repeat=25),
        ),
        (
            "@managed_connection, 3 tracked objects",
            per_call_us(lambda: decorated_three(event, None), number=20000, repeat=25),
        ),
        (
            "bare, 3 requests.Session closed by hand",
            per_call_us(lambda: sessions_by_hand(event, None), number=2000, repeat=25),
        ),
        (
            "@managed_connection, 3 requests.Session tracked and closed",
            per_call_us(lambda: decorated_sessions(event, None), number=2000, repeat=25),
        ),
    ]
    overhead = statistics.median(rows[1][1]) - statistics.median(rows[0][1])
    overhead3 = statistics.median(rows[3][1]) - statistics.median(rows[2][1])
    overhead_sessions = statistics.median(rows[5][1]) - statistics.median(rows[4][1])
    return (
        table("Per-invocation overhead of the decorator", rows)
        + f"\nOverhead over a bare call: {overhead:.2f} us with no connection "
        f"(target <= 5 us), {overhead3:.2f} us with three registered objects, "
        f"{overhead_sessions:.2f} us with three requests.Session tracked through wrapt.\n"
    )


def import_time_ms(module: str = "lambda_conn", runs: int = 7) -> list[float]:
    samples = []
    for _ in range(runs):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
        match = re.search(rf"\|\s+(\d+)\s+\|\s+{re.escape(module)}\s*$", err, re.M)
        assert match, err[-500:]
        samples.append(int(match.group(1)) / 1000)
    return samples


def bench_import() -> str:
    rows = [("import lambda_conn", import_time_ms("lambda_conn"))]
    rows.append(("import wrapt (loaded only with a tracked client)", import_time_ms("wrapt")))
    rows.append(("import pymysql (for scale)", import_time_ms("pymysql")))
    best = min(rows[0][1])
    return table("Import time (7 runs each)", rows, unit="ms") + (
        f"\n`import lambda_conn`: minimum of 7 runs {best:.1f} ms (target <= 25 ms).\n"
    )


def bench_connect(repeat: int) -> str:
    import pymysql

    from lambda_conn import connect_mysql
    from tests.servers.mariadb import MariaDBServer

    with MariaDBServer(tls=True) as server:
        assert server.tls is not None
        plain = server.connect_kwargs()
        base = {k: plain[k] for k in ("host", "port", "user", "password", "database")}

        def default_tls() -> None:  # PyMySQL 1.2 default: TLS preferred, new context each time
            pymysql.connect(**base).close()

        def verified_new_context() -> None:
            pymysql.connect(**base, ssl_ca=server.tls.ca, ssl_verify_cert=True).close()

        def shared_context() -> None:
            connect_mysql(**base).close()

        def shared_verified() -> None:
            connect_mysql(**base, ssl_ca=server.tls.ca, ssl_verify_cert=True).close()

        def no_tls() -> None:
            pymysql.connect(**base, ssl_disabled=True).close()

        for fn in (default_tls, shared_context, no_tls):
            fn()  # warm up: first connects pay one-time costs
        rows = [
            (
                "PyMySQL defaults (TLS preferred, new SSLContext per connect)",
                each_call_us(default_tls, repeat=repeat),
            ),
            (
                "PyMySQL, verified TLS, new SSLContext per connect",
                each_call_us(verified_new_context, repeat=repeat),
            ),
            (
                "connect_mysql(): shared SSLContext, TLS preferred",
                each_call_us(shared_context, repeat=repeat),
            ),
            (
                "connect_mysql(): shared SSLContext, verified TLS",
                each_call_us(shared_verified, repeat=repeat),
            ),
            ("PyMySQL, ssl_disabled=True", each_call_us(no_tls, repeat=repeat)),
        ]
    return table("PyMySQL connect + close on loopback (TLS-enabled private MariaDB)", rows)


def bench_reuse_end(repeat: int) -> str:
    """What the end-of-invocation transaction check costs a reused connection.

    Interleaved, one sample of each case per round, so drift hits all alike: the check as
    shipped, the same invocation with the check switched off, and an invocation that does
    leave a transaction open (the check then pays one ROLLBACK round trip).
    """
    import pymysql

    from lambda_conn import ReusedConnection, managed_connection
    from lambda_conn._transactions import transaction_state
    from tests.servers.mariadb import MariaDBServer

    class Unchecked(ReusedConnection[Any]):
        def _settle(self, conn: Any, when: str, handler_failed: bool) -> None:
            return None

    with MariaDBServer() as server:
        server.query("CREATE TABLE IF NOT EXISTS lc.bench_tx (id INT PRIMARY KEY) ENGINE=InnoDB")
        server.query("INSERT IGNORE INTO lc.bench_tx VALUES (1)")
        checked = ReusedConnection(lambda: pymysql.connect(**server.connect_kwargs()))
        unchecked = Unchecked(lambda: pymysql.connect(**server.connect_kwargs()))

        @managed_connection
        def idle(event: object, context: object) -> None:
            checked()  # handed out: checked at the end (autocommit off, nothing open)

        @managed_connection
        def idle_unchecked(event: object, context: object) -> None:
            unchecked()

        @managed_connection
        def left_open(event: object, context: object) -> None:
            with checked().cursor() as cursor:
                cursor.execute("UPDATE lc.bench_tx SET id = 1")  # opens a transaction

        cases = [
            ("reused, no transaction open, check on (as shipped)", idle, 2000),
            ("reused, no transaction open, check off", idle_unchecked, 2000),
            ("reused, transaction left open: UPDATE + rolled back", left_open, 100),
        ]
        logging.getLogger("lambda_conn").setLevel(logging.ERROR)  # one line per rollback
        samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _, fn, _ in cases:
            fn({}, None)  # connect outside the timing
        for round_ in range(repeat):
            shift = round_ % len(cases)  # rotate the order: no case always follows another
            for name, fn, number in cases[shift:] + cases[:shift]:
                call = functools.partial(fn, {}, None)
                samples[name] += per_call_us(call, number=number, repeat=1)
        conn = checked()
        check = per_call_us(lambda: transaction_state(conn), number=100000, repeat=25)
        checked.close()
        unchecked.close()
    rows = [(name, samples[name]) for name, _, _ in cases]
    on, off = (statistics.median(samples[name]) for name, _, _ in cases[:2])
    return (
        table("End-of-invocation transaction check on a reused PyMySQL connection", rows)
        + f"\nCheck on / check off: {on / off:.3f}x ({on - off:+.2f} us per invocation); "
        f"the check alone (`transaction_state`, an attribute read): "
        f"{statistics.median(check) * 1000:.0f} ns.\n"
    )


def _close_cases(http: Any, redis_server: Any, moto: Any) -> list[tuple[str, Any, Any, Any, bool]]:
    """(name, make, use, manual close, async) for each client the close benchmark times."""
    import aiohttp
    import boto3
    import httpx
    import redis
    import redis.asyncio
    import requests
    import urllib3

    async def aiohttp_get(session: Any) -> None:
        async with session.get(http.url) as response:
            await response.read()

    async def aclose_aiohttp(session: Any) -> None:
        await session.close()

    async def aping(client: Any) -> None:
        await client.ping()

    async def aclose_redis(client: Any) -> None:
        await client.aclose()

    return [
        ("requests.Session, no request", requests.Session, None, lambda s: s.close(), False),
        (
            "requests.Session, one GET",
            requests.Session,
            lambda s: s.get(http.url, timeout=5),
            lambda s: s.close(),
            False,
        ),
        (
            "httpx.Client, one GET",
            httpx.Client,
            lambda c: c.get(http.url),
            lambda c: c.close(),
            False,
        ),
        (
            "urllib3.PoolManager, one GET",
            urllib3.PoolManager,
            lambda m: m.request("GET", http.url),
            lambda m: m.clear(),
            False,
        ),
        (
            "aiohttp.ClientSession, one GET",
            aiohttp.ClientSession,
            aiohttp_get,
            aclose_aiohttp,
            True,
        ),
        (
            "redis.Redis, one PING",
            lambda: redis.Redis(port=redis_server.port),
            lambda c: c.ping(),
            lambda c: c.close(),
            False,
        ),
        (
            "redis.asyncio.Redis, one PING",
            lambda: redis.asyncio.Redis(port=redis_server.port),
            aping,
            aclose_redis,
            True,
        ),
        (
            "boto3 S3 client, one ListBuckets",
            lambda: boto3.client("s3", **moto.client_kwargs()),
            lambda c: c.list_buckets(),
            lambda c: c.close(),
            False,
        ),
    ]


class _ChildServer:
    """A test server in its own process: in ours, its threads would take the GIL from the
    very close being timed (a client close wakes the server thread that reads the EOF)."""

    _CODE = (
        "import sys\n"
        "sys.path.insert(0, {root!r})\n"
        "from tests.servers import CountingHTTPServer\n"
        "from tests.servers.moto import MotoServer\n"
        "server = {cls}()\n"
        "print(server.port, flush=True)\n"
        "sys.stdin.read()\n"
    )

    def __init__(self, cls: str) -> None:
        from _common import ROOT

        self.proc = subprocess.Popen(
            [sys.executable, "-c", self._CODE.format(root=str(ROOT), cls=cls)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.host = "127.0.0.1"
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://{self.host}:{self.port}"

    def client_kwargs(self) -> dict[str, str]:
        from tests.servers.moto import DUMMY_KEYS

        return {"endpoint_url": self.url, **DUMMY_KEYS}

    def __enter__(self) -> _ChildServer:
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def bench_close(rounds: int) -> str:
    """What each client's close costs at the end of an invocation: its own close() by hand
    against the scope closing it (tracked through its patched constructor, leak check
    included), interleaved round by round. Only the close is timed, not the build or use."""
    import asyncio
    import time

    from lambda_conn import _tracking
    from lambda_conn._scope import Scope, _current
    from tests.servers.redis import RedisServer

    _tracking.install()
    loop = asyncio.new_event_loop()
    with (
        _ChildServer("CountingHTTPServer") as http,
        RedisServer() as redis_server,
        _ChildServer("MotoServer") as moto,
    ):
        cases = _close_cases(http, redis_server, moto)
        samples: dict[str, list[float]] = {}

        def once(make: Any, use: Any, close: Any, is_async: bool, tracked: bool) -> float:
            async def run() -> float:
                scope = Scope() if tracked else None
                token = _current.set(scope) if scope is not None else None
                client = make()
                if use is not None:
                    result = use(client)
                    if is_async:
                        await result
                    # dropped: a kept requests Response holds its socket's file, and the
                    # Session's own close() would then leave the socket open (the scope
                    # closes it: timing that against a close() that does not is unfair)
                    del result
                if token is not None:
                    _current.reset(token)
                start = time.perf_counter_ns()
                if scope is not None:
                    await scope.aclose() if is_async else scope.close()
                elif is_async:
                    await close(client)
                else:
                    close(client)
                return (time.perf_counter_ns() - start) / 1000

            return loop.run_until_complete(run())

        for _name, make, use, close, is_async in cases:  # warm up: first calls load things
            once(make, use, close, is_async, False)
            once(make, use, close, is_async, True)
        for round_ in range(rounds):
            shift = round_ % len(cases)
            for name, make, use, close, is_async in cases[shift:] + cases[:shift]:
                for tracked in (round_ % 2 == 0, round_ % 2 == 1):  # alternate which first
                    key = f"{name}: {'scope close' if tracked else 'close() by hand'}"
                    samples.setdefault(key, []).append(once(make, use, close, is_async, tracked))
    loop.close()
    rows = sorted(samples.items(), key=lambda item: item[0])
    lines = [table("Closing one client at the end of an invocation (us)", rows), ""]
    lines += [
        "| client | by hand (us) | scope (us) | scope / by hand |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, *_ in cases:
        hand = statistics.median(samples[f"{name}: close() by hand"])
        scope = statistics.median(samples[f"{name}: scope close"])
        lines.append(f"| {name} | {hand:.1f} | {scope:.1f} | {scope / hand:.2f}x |")
    return "\n".join(lines) + "\n"


def bench_release(repeat: int) -> str:
    """What ``release_above`` costs a reused connection per invocation, on and off.

    Interleaved, one sample of each case per round: the default (off), the same
    invocation with the end-of-invocation hook as it was before ``release_above`` existed
    (off must cost what that did), on as recommended (``sample_every=5``: one sample per
    5 s, so almost every invocation only reads the clock), and on with a sample at every
    invocation (what one sample costs: two round trips on MySQL).
    """
    import pymysql

    from lambda_conn import ReusedConnection, managed_connection
    from tests.servers.mariadb import MariaDBServer

    class Before(ReusedConnection[Any]):
        """The end of an invocation as before release_above: settle, nothing more."""

        def _end_invocation(self, root: Any, handler_failed: bool) -> None:
            with self._lock:
                if self._extras:
                    for key in [key for key in self._extras if key[0] == root.serial]:
                        del self._extras[key]
                if self._checked_in is not root:
                    return
                self._checked_in = _UNSET
                self._owner = None
                conn = self._conn
                if conn is not None:
                    self._settle(conn, "end_of_invocation", handler_failed)

    import psycopg

    from lambda_conn import stats
    from lambda_conn._reuse import _UNSET
    from tests.servers.postgres import PostgresServer

    with MariaDBServer() as server, PostgresServer() as pg:

        def connect() -> Any:
            return pymysql.connect(**server.connect_kwargs())

        def connect_pg() -> Any:
            return psycopg.connect(**pg.connect_kwargs())  # autocommit off: + ROLLBACK

        dbs = {
            "reused, release_above off (as shipped)": ReusedConnection(connect),
            "reused, end of invocation as before release_above": Before(connect),
            "reused, release_above=0.8, sample_every=5 (recommended)": ReusedConnection(
                connect, release_above=0.8, sample_every=5.0
            ),
            "reused, release_above=0.8, a sample every invocation": ReusedConnection(
                connect, release_above=0.8, sample_every=1e-9
            ),
            "psycopg reused, release_above off": ReusedConnection(connect_pg),
            "psycopg reused, release_above=0.8, a sample every invocation": ReusedConnection(
                connect_pg, release_above=0.8, sample_every=1e-9
            ),
        }

        def handler_for(db: Any) -> Any:
            @managed_connection
            def handler(event: object, context: object) -> None:
                db()

            return handler

        cases = [
            (name, handler_for(db), 100 if "every invocation" in name else 2000)
            for name, db in dbs.items()
        ]
        samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        for _, fn, _ in cases:
            fn({}, None)  # connect outside the timing
        released = stats()["released"]
        for round_ in range(repeat):
            shift = round_ % len(cases)
            for name, fn, number in cases[shift:] + cases[:shift]:
                samples[name] += per_call_us(
                    functools.partial(fn, {}, None), number=number, repeat=1
                )
        released = stats()["released"] - released
        for db in dbs.values():
            db.close()
    rows = [(name, samples[name]) for name, _, _ in cases]
    off, before, on, every, pg_off, pg_every = (
        statistics.median(samples[name]) for name, _, _ in cases
    )
    return (
        table("release_above on a reused PyMySQL / psycopg connection (per invocation)", rows)
        + f"\nPyMySQL on MariaDB: off / before release_above: {off / before:.3f}x "
        f"({off - before:+.2f} us); on, sample_every=5 / off: {on / off:.3f}x "
        f"({on - off:+.2f} us); one sample (every invocation / off): {every / off:.3f}x "
        f"({every - off:+.1f} us). psycopg on PostgreSQL, one sample and its ROLLBACK: "
        f"{pg_every / pg_off:.3f}x ({pg_every - pg_off:+.1f} us). "
        f"Releases during the run: {released} (the servers are nearly empty).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=60, help="connects per case")
    parser.add_argument("--skip-db", action="store_true", help="no database cases")
    parser.add_argument("--close-rounds", type=int, default=200, help="rounds of close cases")
    parser.add_argument("--only-close", action="store_true", help="only the close benchmark")
    parser.add_argument("--only-release", action="store_true", help="only release_above")
    args = parser.parse_args()
    import platform

    cores = __import__("os").cpu_count()
    print(f"Python {platform.python_version()} on {platform.machine()}, {cores} cores\n")
    if args.only_release:
        print(bench_release(args.repeat))
        return
    print(bench_close(args.close_rounds))
    if args.only_close:
        return
    print(bench_overhead())
    print(bench_import())
    if not args.skip_db:
        print(bench_connect(args.repeat))
        print(bench_reuse_end(args.repeat))
        print(bench_release(args.repeat))


if __name__ == "__main__":
    main()
