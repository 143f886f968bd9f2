"""Every benchmark in one run: connect patterns, the decorator, the health check, import
time and soak throughput, as markdown tables (median, p99, ratio to the fastest), JSON
and an SVG plot.

    python3 benchmarks/run.py                      # a private TLS MariaDB (needs mariadbd)
    python3 benchmarks/run.py --dsn 'mysql://app@proxy.example:3306/app?verify=1' --iam
    python3 benchmarks/run.py --out benchmarks/RESULTS.md        # how RESULTS.md was made

The default target is the test suite's private MariaDB with TLS, its certificates
generated for the run. ``--dsn mysql://user[:password]@host:port/db`` points the same run
at any MySQL (query options: ``ssl_ca=PATH`` for a CA bundle, ``verify=1`` to verify with
the system trust store, ``region=`` for ``--iam``); the password may instead come from
``LAMBDA_CONN_BENCH_PASSWORD``. ``--iam`` logs in with an RDS IAM token (signed locally
from your AWS credentials) instead of a password: every case then uses it over TLS.

Nothing here is asserted: the numbers are one run's, on one machine. Read the ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from _common import each_call_us, p99, per_call_us, table
from bench_postgres import CLASSIFY_TITLE, PG_CONNECT_TITLE, PINNING_TITLE, RESUME_TITLE

HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- results


@dataclass
class Section:
    """One table: named rows of samples, in one unit."""

    title: str
    unit: str
    rows: list[tuple[str, list[float]]]
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        text = table(self.title, self.rows, self.unit)
        if self.notes:
            text += "\n" + "\n".join(self.notes) + "\n"
        return text

    def to_dict(self) -> dict[str, Any]:
        medians = [statistics.median(s) for _, s in self.rows]
        fastest = min(medians) or 1e-9
        return {
            "title": self.title,
            "unit": self.unit,
            "notes": self.notes,
            "rows": [
                {
                    "case": name,
                    "n": len(samples),
                    "median": median,
                    "p99": p99(samples),
                    "min": min(samples),
                    "max": max(samples),
                    "ratio_to_fastest": median / fastest,
                }
                for (name, samples), median in zip(self.rows, medians, strict=True)
            ],
        }


@dataclass
class Run:
    sections: list[Section] = field(default_factory=list)
    soak: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def add(self, section: Section) -> None:
        self.sections.append(section)
        print(section.markdown(), flush=True)

    def section(self, title: str) -> Section | None:
        return next((s for s in self.sections if s.title == title), None)


def median_of(run: Run, title: str, case: str) -> float | None:
    section = run.section(title)
    if section is None:
        return None
    for name, samples in section.rows:
        if name == case:
            return statistics.median(samples)
    return None


# --------------------------------------------------------------------------- target


@dataclass
class Target:
    """Where the connect cases go, and how they log in."""

    label: str
    host: str
    port: int
    user: str
    database: str | None
    password: str | None
    ca: str | None
    verify: bool
    iam: Any = None  # an IAMTokenProvider with --iam
    server: Any = None  # the private MariaDB, when it is the target

    def credential(self) -> str | None:
        if self.iam is not None:
            return str(self.iam.token(self.host, self.port, self.user))
        return self.password

    def base(self) -> dict[str, Any]:
        """PyMySQL's arguments without any TLS option."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.credential(),
            "database": self.database,
        }

    def pymysql_tls(self) -> dict[str, Any]:
        """PyMySQL's own TLS options for a required (and verified, if asked) TLS."""
        if self.verify:
            return {"ssl_ca": self.ca, "ssl_verify_cert": True, "ssl_verify_identity": True}
        return {"ssl": {"ca": self.ca} if self.ca else {"check_hostname": False}}

    def connector(self, **overrides: Any) -> Any:
        from lambda_conn._rds.connector import RDSConnector

        options: dict[str, Any] = {
            "port": self.port,
            "user": self.user,
            "database": self.database,
            "password": None if self.iam is not None else self.password,
            "iam": self.iam if self.iam is not None else False,
            "ssl_ca": self.ca,
            "verify": self.verify,
            **overrides,
        }
        return RDSConnector(self.host, **options)

    def sessions_closed(self) -> bool:
        return self.server is None or self.server.wait_for_sessions(0, timeout=10) == 0


def parse_dsn(dsn: str, iam: bool) -> Target:
    parts = urlsplit(dsn)
    if parts.scheme not in ("mysql", "mysql+pymysql") or not parts.hostname:
        raise SystemExit(f"--dsn: expected mysql://user@host:port/db, got {mask_dsn(dsn)!r}")
    if not parts.username:
        raise SystemExit("--dsn: a user is required (mysql://USER@host/db)")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"ssl_ca", "verify", "region"}
    if unknown:
        raise SystemExit(f"--dsn: unknown options {sorted(unknown)}: ssl_ca, verify, region")
    password = unquote(parts.password) if parts.password else None
    password = password or os.environ.get("LAMBDA_CONN_BENCH_PASSWORD") or None
    ca = query.get("ssl_ca")
    verify = query.get("verify", "1" if ca else "0").lower() in ("1", "true", "yes", "on")
    provider = None
    if iam:
        if password is not None:
            raise SystemExit("--iam: the token is the password; drop it from the DSN")
        from lambda_conn._rds.iam import IAMTokenProvider

        provider = IAMTokenProvider(query.get("region"))
    return Target(
        label=f"{parts.hostname}:{parts.port or 3306} (--dsn)",
        host=parts.hostname,
        port=parts.port or 3306,
        user=unquote(parts.username),
        database=parts.path.lstrip("/") or None,
        password=password,
        ca=ca,
        verify=verify,
        iam=provider,
    )


def mask_dsn(text: str) -> str:
    """The DSN's password, if any, as ***: the command line goes into RESULTS.md."""
    parts = urlsplit(text)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return text


@contextmanager
def private_mariadb() -> Iterator[Target]:
    from tests.servers.mariadb import MariaDBServer

    with MariaDBServer(tls=True, max_connections=500) as server:
        assert server.tls is not None
        version = server.query("SELECT VERSION()")[0][0]
        yield Target(
            label=f"private MariaDB {version} on loopback, TLS (certificates generated)",
            host=server.host,
            port=server.port,
            user=server.user,
            database=server.database,
            password=server.password,
            ca=server.tls.ca,
            verify=True,
            server=server,
        )


# --------------------------------------------------------------------------- benchmarks


class FakeContext:
    """The part of a Lambda context the connector reads."""

    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


CONNECT_TITLE = "Per invocation: connect + SELECT 1 + close"
RDS_RESUMED = "@managed_connection + RDSConnector.connect(context) (TLS session resumed)"
RDS_FULL = "@managed_connection + RDSConnector.connect(context), resume_tls=False"
RDS_PLAIN = "@managed_connection + RDSConnector.connect(context), no TLS (reference)"


def select_one(conn: Any) -> None:
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchall()


def bench_connect(target: Target, repeat: int, run: Run) -> None:
    import pymysql
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from lambda_conn import connect_mysql, managed_connection, tls_context

    context = FakeContext()
    shared = tls_context(ca=target.ca, verify=target.verify)
    rds = target.connector()
    kept = rds.reused(max_age=3600)

    def pymysql_defaults() -> None:
        conn = pymysql.connect(**target.base())
        select_one(conn)
        conn.close()

    def pymysql_new_context() -> None:
        conn = pymysql.connect(**target.base(), **target.pymysql_tls())
        select_one(conn)
        conn.close()

    def pymysql_shared_context() -> None:
        conn = pymysql.connect(**target.base(), ssl=shared)
        select_one(conn)
        conn.close()

    def pymysql_no_tls() -> None:
        conn = pymysql.connect(**target.base(), ssl_disabled=True)
        select_one(conn)
        conn.close()

    @managed_connection
    def managed_connect_mysql(event: Any, ctx: Any) -> None:
        tls = {"ssl_ca": target.ca, "ssl_verify_cert": target.verify} if target.ca else {}
        select_one(connect_mysql(**target.base(), **tls))  # closed by the decorator

    @managed_connection
    def managed_rds(event: Any, ctx: Any) -> None:
        select_one(rds.connect(ctx))  # deadline from the context; closed by the decorator

    @managed_connection
    def reused(event: Any, ctx: Any) -> None:
        select_one(kept(ctx))  # validated once per invocation, kept open

    full_handshake = target.connector(resume_tls=False)

    @managed_connection
    def managed_rds_full(event: Any, ctx: Any) -> None:
        select_one(full_handshake.connect(ctx))

    plain_rds: list[Any] = []  # built only for the private server (never with IAM)

    @managed_connection
    def managed_rds_plain(event: Any, ctx: Any) -> None:
        if not plain_rds:
            plain_rds.append(target.connector(tls=False, ssl_ca=None, verify=None))
        select_one(plain_rds[0].connect(ctx))

    def engine(**connect_args: Any) -> Any:
        query: dict[str, str] = {}
        if not connect_args and target.ca:
            query = {"ssl_ca": target.ca, "ssl_check_hostname": str(target.verify).lower()}
        url = sqlalchemy.engine.URL.create(
            "mysql+pymysql",
            username=target.user,
            password=None if target.iam else target.password,
            host=target.host,
            port=target.port,
            database=target.database,
            query=query,
        )
        made = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        if target.iam is not None:

            @sqlalchemy.event.listens_for(made, "do_connect")
            def token(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
                cparams["password"] = target.credential()

        return made

    url_engine = engine()
    shared_engine = engine(ssl=shared)

    def sqlalchemy_case(made: Any) -> Callable[[], None]:
        def case() -> None:
            with made.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1")).fetchall()

        return case

    cases: list[tuple[str, Callable[[], None]]] = []
    if target.iam is None:
        cases.append(
            ("PyMySQL defaults (TLS preferred, new SSLContext per connect)", pymysql_defaults)
        )
    else:
        run.skipped.append(
            "PyMySQL defaults: with --iam it would send the token where TLS is only preferred"
        )
    verified = "verified " if target.verify else ""
    cases += [
        (f"PyMySQL, {verified}TLS, new SSLContext per connect", pymysql_new_context),
        (f"PyMySQL, {verified}TLS, one shared SSLContext", pymysql_shared_context),
        (
            "@managed_connection + connect_mysql() (shared SSLContext)",
            lambda: managed_connect_mysql({}, context),
        ),
        (RDS_RESUMED, lambda: managed_rds({}, context)),
        (RDS_FULL, lambda: managed_rds_full({}, context)),
        ("SQLAlchemy NullPool, TLS options in the URL", sqlalchemy_case(url_engine)),
        ("SQLAlchemy NullPool, shared SSLContext in connect_args", sqlalchemy_case(shared_engine)),
        ("reused connection, validated once per invocation", lambda: reused({}, context)),
    ]
    if target.server is not None and target.iam is None:
        cases.append(("PyMySQL, no TLS (reference)", pymysql_no_tls))
        cases.append((RDS_PLAIN, lambda: managed_rds_plain({}, context)))
    working = []
    for name, case in cases:
        try:
            for _ in range(3):
                case()  # warm up: first connects pay one-time costs
        except Exception as exc:  # a target may refuse a case (no TLS on a RequireTLS proxy)
            run.skipped.append(f"{name}: failed on this target ({type(exc).__name__})")
            continue
        working.append((name, case))
    if not working:
        raise SystemExit(f"no connect case worked on {target.label}: " + "; ".join(run.skipped))
    # Interleaved rounds, one call of each case per round: a machine that slows down or
    # speeds up during the run (other work, frequency scaling) shifts every case alike.
    samples: dict[str, list[float]] = {name: [] for name, _ in working}
    for _ in range(repeat):
        for name, case in working:
            samples[name] += [us / 1000 for us in each_call_us(case, repeat=1)]
    rows = [(name, samples[name]) for name, _ in working]
    kept.close()
    url_engine.dispose()
    shared_engine.dispose()
    notes = [
        f"Target: {target.label}; {repeat} calls per case, in interleaved rounds, after "
        "3 warm-up calls; "
        f"{'IAM token' if target.iam else 'password'} auth."
    ]
    if not target.sessions_closed():
        notes.append("WARNING: sessions were left open on the server after the cases.")
    run.add(Section(CONNECT_TITLE, "ms", rows, notes))


def bench_postgres_all(mariadb: Any, repeat: int, run: Run) -> None:
    """PostgreSQL connects, which servers resume TLS, and the pinning check's cost."""
    import bench_postgres as bp

    from tests.servers.postgres import PostgresServer

    with PostgresServer(tls=True, max_connections=200) as server:
        version = server.query("SHOW server_version")[0][0]
        rows, notes = bp.bench_pg_connect(server, repeat, run.skipped)
        notes[0] = notes[0].replace("private PostgreSQL", f"private PostgreSQL {version}")
        run.add(Section(PG_CONNECT_TITLE, "ms", rows, notes))
        rows, notes = bp.bench_resumption(mariadb, server, max(20, repeat // 3))
        run.add(Section(RESUME_TITLE, "ms", rows, notes))
        rows, classify_rows, notes = bp.bench_pinning(mariadb, server, repeat)
        run.add(Section(PINNING_TITLE, "us", rows, notes))
        run.add(Section(CLASSIFY_TITLE, "us", classify_rows))


def bench_decorator(run: Run) -> None:
    import bench_core

    recorded: list[Section] = []

    def recording_table(title: str, rows: list[tuple[str, list[float]]], unit: str = "us") -> str:
        recorded.append(Section(title, unit, rows))
        return table(title, rows, unit)

    bench_core.table = recording_table  # type: ignore[attr-defined]
    text = bench_core.bench_overhead()
    section = recorded[-1]
    section.notes = [line for line in text.splitlines() if line.startswith("Overhead")]
    run.add(section)


HEALTH_TITLE = "Health check after each invocation, by open descriptors"


def bench_health(run: Run, counts: tuple[int, ...]) -> None:
    import bench_health as bh

    from lambda_conn._guard.config import Platform, load_config
    from lambda_conn._guard.guard import HealthGuard
    from lambda_conn._guard.probes import FdCounter
    from tests.servers import raise_fd_limit

    raise_fd_limit(max(counts) * 2 + 64)

    where = Platform(fd_rlimit=4096, runtime_api="127.0.0.1:9001", memory_mb=4096)
    args = ({"path": "/"}, None)

    def guard(counter: FdCounter, fd_limit: str) -> HealthGuard:
        config = load_config({}, {"fd_limit": fd_limit, "memory_limit": "90%"}, where)
        made = HealthGuard(
            config,
            where,
            recycler=bh.NeverRecycler(),
            count_fds=counter,
            fd_upper_bound=counter.upper_bound,
        )
        made.check(args)  # the first invocation takes the baseline
        return made

    rows: list[tuple[str, list[float]]] = []
    kernel = FdCounter()
    kernel()
    mode = "stat st_size" if kernel._use_stat else "listing"
    for count in counts:
        held = bh.hold_descriptors(count)
        try:
            this_kernel = FdCounter()
            old = FdCounter()
            old._use_stat = False  # what a kernel before 6.2 (st_size 0) leaves us
            far = guard(old, "90%")  # FDSize proves the count far under: no listing
            near_counter = FdCounter()
            near_counter._use_stat = False
            near = guard(near_counter, str(count + 16))  # FDSize above the limit: listing
            now = guard(this_kernel, "90%")
            rows += [
                (
                    f"{count} fds: check, this kernel ({mode})",
                    per_call_us(partial(now.check, args), number=2000, repeat=15),
                ),
                (
                    f"{count} fds: check, kernel < 6.2, far under the limit",
                    per_call_us(partial(far.check, args), number=2000, repeat=15),
                ),
                (
                    f"{count} fds: check, kernel < 6.2, near the limit (lists /proc/self/fd)",
                    per_call_us(
                        partial(near.check, args), number=max(20, 20000 // count), repeat=15
                    ),
                ),
            ]
        finally:
            for fd in held:
                os.close(fd)
    run.add(
        Section(
            HEALTH_TITLE,
            "us",
            rows,
            [
                "What every guarded invocation pays before its response is posted: count "
                "descriptors, read RSS, compare with the limits (FD_HEALTH_LIMIT, "
                "MEMORY_HEALTH_LIMIT)."
            ],
        )
    )


IMPORT_TITLE = "Import time (cold start), 7 runs each"


def bench_import(run: Run) -> None:
    from bench_core import import_time_ms

    rows = [
        ("import lambda_conn", import_time_ms("lambda_conn")),
        (
            "import lambda_conn._rds.connector (RDSConnector, pymysql)",
            import_time_ms("lambda_conn._rds.connector"),
        ),
        ("import pymysql", import_time_ms("pymysql")),
        ("import botocore.auth (first IAM token only)", import_time_ms("botocore.auth")),
    ]
    run.add(
        Section(
            IMPORT_TITLE,
            "ms",
            rows,
            ["`python -X importtime -c 'import X'`, cumulative time of X in a fresh interpreter."],
        )
    )


IAM_TITLE = "IAM auth token in a warm process (dummy credentials, signed locally)"
IAM_COLD_TITLE = "IAM auth: the first token in a fresh process (cold start)"

_FIRST_TOKEN = """
import os, sys, time
os.environ.update(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="dummy",
                  AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent")
start = time.perf_counter()
if sys.argv[1] == "ours":
    from lambda_conn._rds.iam import IAMTokenProvider
    IAMTokenProvider("us-east-1").token("proxy.example", 3306, "app")
else:
    try:
        import boto3
        client = boto3.client("rds", region_name="us-east-1")
    except ImportError:  # botocore alone: the same RDS client, without boto3's import
        import botocore.session
        client = botocore.session.get_session().create_client("rds", region_name="us-east-1")
    client.generate_db_auth_token(
        DBHostname="proxy.example", Port=3306, DBUsername="app", Region="us-east-1")
print((time.perf_counter() - start) * 1000)
"""


def client_kind() -> str:
    from importlib.util import find_spec

    return "boto3.client" if find_spec("boto3") else "botocore session.create_client"


def bench_iam(run: Run) -> None:
    import botocore.credentials  # type: ignore[import-untyped, unused-ignore]

    from lambda_conn._rds.iam import IAMTokenProvider

    credentials = botocore.credentials.Credentials("AKIDEXAMPLE", "dummy")
    cached = IAMTokenProvider("us-east-1", credentials=credentials)
    cached.token("proxy.example", 3306, "app")
    now = [0.0]
    signing = IAMTokenProvider("us-east-1", credentials=credentials, clock=lambda: now[0])

    def sign() -> None:  # the clock moves a token lifetime per call: always a cache miss
        now[0] += 900.0
        signing.token("proxy.example", 3306, "app")

    def first_token_ms(kind: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", _FIRST_TOKEN, kind], capture_output=True, text=True, check=True
        ).stdout
        return float(out.strip())

    warm = [
        (
            "token from the cache",
            per_call_us(
                lambda: cached.token("proxy.example", 3306, "app"), number=20000, repeat=15
            ),
        ),
        ("token signed (cache miss: SigV4 presign)", per_call_us(sign, number=200, repeat=15)),
    ]
    run.add(Section(IAM_TITLE, "us", warm))
    cold = [
        (
            "lambda_conn: import botocore, resolve credentials, sign",
            [first_token_ms("ours") for _ in range(5)],
        ),
        (
            f"{client_kind()}('rds').generate_db_auth_token",
            [first_token_ms("client") for _ in range(5)],
        ),
    ]
    run.add(
        Section(
            IAM_COLD_TITLE,
            "ms",
            cold,
            ["5 fresh interpreters each; the RDS client loads the RDS service model, we do not."],
        )
    )


SOAK_TITLE = "Soak under the local runtime (awslambdaric, frozen between invocations)"


def bench_soak(target: Target, n: int, run: Run) -> None:
    from lambda_conn.local import soak

    env = {
        "DB_HOST": target.host,
        "DB_PORT": str(target.port),
        "DB_USER": target.user,
        "DB_NAME": target.database or "",
        "DB_SSL_CA": target.ca or "",
        "DB_VERIFY": "1" if target.verify else "0",
    }
    if target.iam is not None:
        env.update(DB_IAM="1", DB_REGION=target.iam.region)
        frozen = target.iam._resolve_credentials().get_frozen_credentials()
        env.update(AWS_ACCESS_KEY_ID=frozen.access_key, AWS_SECRET_ACCESS_KEY=frozen.secret_key)
        if frozen.token:
            env["AWS_SESSION_TOKEN"] = frozen.token
    else:
        env["DB_PASSWORD"] = target.password or ""
    rows: list[tuple[str, list[float]]] = []
    for handler, label in (
        ("bare", "no database (runtime loop and freeze only)"),
        ("per_invocation", "@managed_connection + RDSConnector.connect, closed per invocation"),
        ("reused", "reused connection, validated once per invocation"),
    ):
        report = soak(
            f"_soak_handlers.{handler}",
            n,
            handler_dir=HERE,
            env=env,
            memory_mb=512,
            timeout_s=10,
            output=subprocess.DEVNULL,
        )
        summary = report.summary
        durations = [r.duration_ms for r in report.records if not r.cold_start]
        rows.append((label, durations))
        run.soak.append(
            {
                "handler": label,
                "invocations": summary.invocations,
                "failed": summary.failed,
                "invocations_per_s": report.rate,
                "p50_ms": summary.p50_ms,
                "p99_ms": summary.p99_ms,
                "peak_fds": summary.peak_fds,
            }
        )
        if summary.failed:
            print(
                f"WARNING: soak {handler}: {summary.failed} of {summary.invocations} "
                f"invocations failed ({summary.failures_by_type}); its throughput counts them",
                file=sys.stderr,
                flush=True,
            )
    notes = [
        "Median and p99 are invocation durations as the local runtime measures them "
        "(warm invocations); throughput counts every invocation, cold start included:",
        "",
        "| handler | invocations/s | failed | peak fds |",
        "| --- | ---: | ---: | ---: |",
    ]
    notes += [
        f"| {s['handler']} | {s['invocations_per_s']:.0f} | {s['failed']} | {s['peak_fds']} |"
        for s in run.soak
    ]
    failed = [s for s in run.soak if s["failed"]]
    if failed:
        notes.append(
            "\nWARNING: invocations failed in "
            + ", ".join(f"{s['handler']} ({s['failed']})" for s in failed)
            + ": those rows do not measure a working handler."
        )
    if not target.sessions_closed():
        notes.append("\nWARNING: sessions were left open on the server after the soak.")
    run.add(Section(f"{SOAK_TITLE}, {n} invocations each", "ms", rows, notes))


def bench_runtime_loop(run: Run, n: int, rounds: int) -> None:
    """The supervisor's cost: soak against the raw awslambdaric loop (bench_soak.py)."""
    import bench_soak

    cases = {"raw loop": lambda: bench_soak.raw_loop(n), "soak": lambda: bench_soak.soak_loop(n)}
    samples = bench_soak.interleaved(cases, rounds)
    rows = [(name, [1e6 / s.rate for s in got]) for name, got in samples.items()]
    notes = bench_soak.report(samples, n, rounds).split("\n\n", 1)[1].strip().splitlines()
    run.add(Section(f"{bench_soak.TITLE}, us per warm invocation", "us", rows, notes))


# --------------------------------------------------------------------------- outputs


def summary(run: Run) -> list[str]:
    """The sentences RESULTS.md opens with, computed from this run."""
    lines = []
    c = CONNECT_TITLE
    defaults = median_of(run, c, "PyMySQL defaults (TLS preferred, new SSLContext per connect)")
    shared = median_of(run, c, "PyMySQL, verified TLS, one shared SSLContext") or median_of(
        run, c, "PyMySQL, TLS, one shared SSLContext"
    )
    managed = median_of(run, c, RDS_RESUMED)
    full = median_of(run, c, RDS_FULL)
    managed_plain = median_of(run, c, RDS_PLAIN)
    reused = median_of(run, c, "reused connection, validated once per invocation")
    plain = median_of(run, c, "PyMySQL, no TLS (reference)")
    if defaults and shared:
        lines.append(
            f"- TLS: PyMySQL's defaults build an SSLContext per connect: {defaults:.1f} ms per "
            f"connect + query + close, against {shared:.1f} ms with one shared context "
            f"({defaults / shared:.1f}x)" + (f"; without TLS {plain:.2f} ms." if plain else ".")
        )
    if managed and managed_plain and defaults:
        lines.append(
            f"- TLS session resumption (MySQL): a per-invocation `RDSConnector` connect with "
            f"verified TLS costs {managed:.2f} ms resumed ({full:.2f} ms with "
            f"`resume_tls=False`) against {managed_plain:.2f} ms without TLS: "
            f"{managed / managed_plain:.2f}x plaintext (goal: within 1.5x), and "
            f"{defaults / managed:.1f}x faster than PyMySQL's defaults (goal: at least 10x)."
        )
    resume = run.section(RESUME_TITLE)
    if resume and resume.notes:
        lines.append("- Which servers resume TLS: " + " ".join(resume.notes))
    pg = run.section(PG_CONNECT_TITLE)
    if pg:
        pgm = {n: statistics.median(s) for n, s in pg.rows}
        pg_rds = pgm.get("@managed_connection + RDSConnector(engine='postgresql'), verify-full")
        pg_plain = pgm.get("@managed_connection + RDSConnector(engine='postgresql'), no TLS")
        pg_default = pgm.get("psycopg defaults (sslmode=prefer: TLS, unverified)")
        pg_reused = pgm.get(
            "reused connection (RDSConnector.reused), validated once per invocation"
        )
        if pg_rds and pg_plain and pg_default and pg_reused:
            lines.append(
                f"- PostgreSQL: a per-invocation `RDSConnector(engine='postgresql')` connect "
                f"with verify-full TLS costs {pg_rds:.2f} ms against {pg_plain:.2f} ms "
                f"without TLS ({pg_rds / pg_plain:.1f}x: the full handshake, no resumption "
                f"possible) and {pg_default:.2f} ms for psycopg's defaults (TLS, "
                f"unverified); reused: {pg_reused:.3f} ms."
            )
    pin = run.section(PINNING_TITLE)
    if pin:
        pm = {n: statistics.median(s) for n, s in pin.rows}
        parts = []
        for off in pm:
            if not off.endswith(", check off (original)"):
                continue
            entry = off.removesuffix(", check off (original)")
            on = f"{entry}, check on (tracked connection)"
            driver = entry.split()[0]
            if off in pm and on in pm:
                parts.append(f"{driver} {pm[on] - pm[off]:+.1f} us ({pm[off]:.0f} us off)")
        alone = run.section(CLASSIFY_TITLE)
        am = {n: statistics.median(s) for n, s in alone.rows} if alone else {}
        off_alone = am.get("a statement entry point, check off (nothing wrapped)")
        on_alone = am.get("the same entry point, check on (wrapper + classify_mysql)")
        if off_alone is not None and on_alone is not None:
            lines.append(
                f"- Pinning check on: +{on_alone - off_alone:.1f} us per statement without the "
                f"round trip (wrapper and classification of a 90-character SELECT); off, "
                "nothing is wrapped (+0). With a loopback round trip, per driver (within its "
                "noise): " + "; ".join(parts) + "."
            )
        elif parts:
            lines.append(
                "- Pinning check on, per statement: " + "; ".join(parts) + "; off, nothing "
                "is wrapped."
            )
    if managed and reused:
        lines.append(
            f"- Closing per invocation vs reusing: {managed:.2f} ms through "
            f"`@managed_connection` + `RDSConnector.connect` against {reused:.3f} ms for a "
            f"reused connection validated once per invocation ({managed / reused:.0f}x)."
        )
    if managed and shared:
        lines.append(
            f"- What the library adds to a per-invocation connect (deadline, retry wrapper, "
            f"scope and close): {managed - shared:+.2f} ms against bare PyMySQL with the "
            f"same shared context."
        )
    overhead = run.section("Per-invocation overhead of the decorator")
    if overhead and overhead.notes:
        lines.append(f"- Decorator: {overhead.notes[0]}")
    health = run.section(HEALTH_TITLE)
    if health:
        first_rows = {n: statistics.median(s) for n, s in health.rows if "this kernel" in n}
        lines.append(
            "- Health check on this kernel: "
            + ", ".join(f"{n.split(':')[0]} {v:.1f} us" for n, v in first_rows.items())
            + "."
        )
    imports = run.section(IMPORT_TITLE)
    own = dict(imports.rows).get("import lambda_conn") if imports else None
    if own:
        lines.append(
            f"- `import lambda_conn`: {min(own):.1f} ms (minimum of {len(own)}; median "
            f"{statistics.median(own):.1f} ms; target 25 ms): it imports nothing of the "
            "RDS layer, PyMySQL or botocore."
        )
    if run.soak:
        lines.append(
            "- Soak throughput: "
            + "; ".join(
                f"{s['handler']}: {s['invocations_per_s']:.0f}/s"
                + (f" ({s['failed']} FAILED)" if s["failed"] else "")
                for s in run.soak
            )
            + "."
        )
    return lines


def _tag(name: str, text: str | None = None, **attrs: object) -> str:
    from xml.sax.saxutils import escape, quoteattr

    rendered = " ".join(f"{k.replace('_', '-')}={quoteattr(str(v))}" for k, v in attrs.items())
    if text is None:
        return f"<{name} {rendered}/>"
    return f"<{name} {rendered}>{escape(text)}</{name}>"


def write_svg(run: Run, path: Path) -> None:
    """One horizontal bar chart per table: median bars, p99 whiskers, each table to scale."""
    width, label_w, bar_w, row_h = 1100, 560, 400, 22
    parts: list[str] = []
    y = 10.0
    for section in run.sections:
        medians = [statistics.median(s) for _, s in section.rows]
        tops = [p99(s) for _, s in section.rows]
        scale = bar_w / (max(tops) or 1.0)
        title = f"{section.title} ({section.unit})"
        parts.append(_tag("text", title, x=10, y=y + 16, font_size=14, font_weight="bold"))
        y += 30
        for (name, _), median, high in zip(section.rows, medians, tops, strict=True):
            end, whisker, middle = label_w + median * scale, label_w + high * scale, y + row_h / 2
            parts += [
                _tag("text", name[:90], x=label_w - 6, y=y + 14, font_size=11, text_anchor="end"),
                _tag(
                    "rect",
                    x=label_w,
                    y=y + 3,
                    width=f"{max(1.0, end - label_w):.1f}",
                    height=row_h - 8,
                    fill="#4477aa",
                ),
                _tag(
                    "line",
                    x1=f"{end:.1f}",
                    x2=f"{whisker:.1f}",
                    y1=middle,
                    y2=middle,
                    stroke="#222",
                ),
                _tag(
                    "text",
                    f"{median:.3g} (p99 {high:.3g})",
                    x=f"{whisker + 4:.1f}",
                    y=y + 14,
                    font_size=10,
                ),
            ]
            y += row_h
        y += 16
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y:.0f}" '
        'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>'
        + "".join(parts)
        + "</svg>\n"
    )
    path.write_text(svg)


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "pymysql": version("PyMySQL"),
        "sqlalchemy": version("SQLAlchemy"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _loads(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def describe(info: dict[str, Any]) -> str:
    return (
        f"Python {info['python']} on {info['machine']}, {info['cpus']} cores, "
        f"Linux {info['kernel']}; PyMySQL {info['pymysql']}, SQLAlchemy {info['sqlalchemy']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run every lambda_conn benchmark.",
        epilog="Without --dsn: a private TLS MariaDB (needs mariadbd).",
    )
    parser.add_argument(
        "--dsn", help="mysql://user[:password]@host:port/db[?ssl_ca=..&verify=1&region=..]"
    )
    parser.add_argument("--iam", action="store_true", help="log in with an RDS IAM token")
    parser.add_argument(
        "--no-postgres",
        action="store_true",
        help="skip the PostgreSQL, TLS resumption and pinning cases (private servers only)",
    )
    parser.add_argument("--repeat", type=int, default=100, help="calls per connect case")
    parser.add_argument(
        "--soak", type=int, default=300, help="invocations per soak handler (0: skip)"
    )
    parser.add_argument(
        "--loop",
        type=int,
        default=2000,
        help="invocations per run of the soak against the raw runtime loop (0: skip)",
    )
    parser.add_argument(
        "--fds", default="10,100,1000", help="descriptor counts for the health check"
    )
    parser.add_argument(
        "--out",
        default="bench-results/bench.md",
        help="the markdown file; the JSON and the SVG plot go next to it (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    if args.iam and not args.dsn:
        parser.error("--iam needs --dsn (the private MariaDB has no IAM)")
    command = "python3 benchmarks/run.py " + " ".join(mask_dsn(a) for a in sys.argv[1:])
    counts = tuple(int(n) for n in args.fds.split(","))
    started = time.monotonic()
    load_at_start = os.getloadavg()
    info = machine()
    print(f"# lambda_conn benchmarks\n\n`{command.strip()}`\n")
    print(describe(info) + "\n", flush=True)
    run = Run()
    chosen = nullcontext(parse_dsn(args.dsn, args.iam)) if args.dsn else private_mariadb()
    with chosen as target:
        info["target"] = target.label
        bench_connect(target, args.repeat, run)
        if target.server is not None and not args.no_postgres:
            bench_postgres_all(target.server, args.repeat, run)
        if args.soak:
            bench_soak(target, args.soak, run)
    if args.loop:
        bench_runtime_loop(run, args.loop, 5)
    bench_decorator(run)
    bench_health(run, counts)
    bench_import(run)
    bench_iam(run)
    elapsed = time.monotonic() - started
    load = (load_at_start, os.getloadavg())
    info["load_average"] = {"start": list(load[0]), "end": list(load[1])}
    lines = summary(run)
    header = [
        "# lambda_conn benchmark results",
        "",
        f"Produced by `{command.strip()}` in {elapsed:.0f} s, {info['date']}.",
        "",
        f"{describe(info)}. Target: {info['target']}. One run: medians, p99 and each "
        "median's ratio to the fastest in its table; absolute times are this machine's, "
        "the ratios travel.",
        "",
        f"Load average (1, 5, 15 min) at the start {_loads(load[0])}, at the end "
        f"{_loads(load[1])}, on {info['cpus']} cores: above the core count, the other "
        "processes' share of the machine inflates every absolute time.",
        "",
        "## Summary",
        "",
        *lines,
        "",
    ]
    if run.skipped:
        header += ["Skipped: " + "; ".join(run.skipped), ""]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path, svg_path = out.with_suffix(".json"), out.with_suffix(".svg")
    header += [
        f"Plot: [{svg_path.name}]({svg_path.name}); data: [{json_path.name}]({json_path.name}).",
        "",
    ]
    markdown = "\n".join(header) + "\n" + "\n".join(s.markdown() for s in run.sections)
    out.write_text(markdown)
    data = {
        "command": command.strip(),
        "machine": info,
        "elapsed_s": elapsed,
        "summary": lines,
        "sections": [s.to_dict() for s in run.sections],
        "soak": run.soak,
        "skipped": run.skipped,
    }
    json_path.write_text(json.dumps(data, indent=2) + "\n")
    write_svg(run, svg_path)
    print("## Summary\n\n" + "\n".join(lines))
    print(f"\nWrote {out}, {json_path} and {svg_path} ({elapsed:.0f} s).")


if __name__ == "__main__":
    main()
